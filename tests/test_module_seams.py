"""The packages' modules meet on public names only, and stay readable (issue #22)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The project's packages: none of their modules uses a private name (``_x``) of another
#: module of these packages, in any form.
PACKAGES = ("epic_protocol", "rulstm", "feature_extraction", "rulstm_apps", "synthetic_kitchen")
MAX_LINES = 600
#: Modules allowed past MAX_LINES: the one-file model (nanoGPT style, its repeated loops
#: being one helper each).
LONG_MODULES = {"rulstm/models/rulstm.py"}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of a module file, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The module an ``ImportFrom`` reads, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    name, is_package = _module_name(path)
    base = name.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def private_uses(path: Path, source: str | None = None) -> list[str]:
    """The private names of the project's other modules that ``path`` uses: ``from a.b import
    _x``, ``from . import _x``, ``import a._b``, ``from a._b import x`` and ``m._x`` where ``m``
    (or ``m.sub``) was bound by an import of a project module."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    found: list[str] = []
    bound: dict[str, str] = {}  # local name -> what it was imported as (dotted)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _ours(alias.name):
                    continue
                if any(_private(part) for part in alias.name.split(".")):
                    found.append(f"{where}:{node.lineno} import {alias.name}")
                local = alias.asname or alias.name.split(".")[0]
                bound[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            if not _ours(module):
                continue
            if any(_private(part) for part in module.split(".")):
                found.append(f"{where}:{node.lineno} from {module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{where}:{node.lineno} from {module} import {alias.name}")
                bound[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                dotted = ".".join([bound[value.id], *reversed(chain)])
                found.append(f"{where}:{node.lineno} {dotted}.{node.attr}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_name_is_used_from_another_module(package):
    found = [use for path in _modules(package) for use in private_uses(path)]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "from rulstm_apps.demo_inputs import _boxes",
        "from . import _boxes",
        "from .demo_inputs import _boxes",
        "import rulstm_apps._internal",
        "from rulstm_apps._internal import boxes",
        "import rulstm_apps.demo_inputs as inputs\ninputs._boxes(1)",
        "import rulstm_apps.demo_inputs\nrulstm_apps.demo_inputs._boxes(1)",
        "from rulstm_apps import demo_inputs\ndemo_inputs._boxes(1)",
        "from rulstm_apps.demo_inputs import Source\nSource._open(1)",
    ],
)
def test_every_import_form_of_a_private_name_is_found(source):
    assert private_uses(ROOT / "rulstm_apps" / "example.py", source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos._exit(0)",  # not a project module
        "from rulstm_apps.demo_inputs import boxes\nself._cache = boxes",
        "from rulstm_apps import __version__",
    ],
)
def test_public_names_and_other_libraries_pass(source):
    assert private_uses(ROOT / "rulstm_apps" / "example.py", source) == []


def test_no_module_is_over_600_lines():
    long = {
        where: lines
        for package in PACKAGES
        for path in _modules(package)
        if (where := str(path.relative_to(ROOT))) not in LONG_MODULES
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
