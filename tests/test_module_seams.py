"""The packages' modules meet on public names only, and stay readable (issue #22)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Packages whose modules import no private name (``_x``) from another module.
PUBLIC_SEAMS = ("rulstm_apps", "feature_extraction", "rulstm")
#: Modules split so that each stays under MAX_LINES (issue #22.5); globs under the root.
SHORT_MODULES = (
    "rulstm_apps/demo*.py",
    "rulstm_apps/overlay.py",
    "feature_extraction/video*.py",
    "feature_extraction/resizing.py",
    "feature_extraction/flow.py",
    "feature_extraction/models.py",
    "rulstm/*cli.py",
    "rulstm/run_folder.py",
    "rulstm/selection.py",
    "rulstm/stage_checks.py",
    "rulstm/trainer_precision.py",
    "rulstm/evaluation/*.py",
)
MAX_LINES = 600


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PUBLIC_SEAMS)
def test_no_private_name_is_imported_from_another_module(package):
    found = []
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert found == []


@pytest.mark.parametrize("pattern", SHORT_MODULES)
def test_no_module_is_over_600_lines(pattern):
    paths = sorted(ROOT.glob(pattern))
    assert paths, f"no module matches {pattern}"
    long = {
        str(path.relative_to(ROOT)): lines
        for path in paths
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
