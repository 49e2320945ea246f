"""One rule for every console script's errors (docs/architecture.md, "Errors and exit
codes"): usage errors exit 2, data errors and environment errors exit 1 with one line, and every exception class of
the project is one of these kinds."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

from epic_protocol.errors import (
    ERROR_KINDS,
    DataError,
    Interrupted,
    SetupError,
    UsageError,
    UserError,
    cli_main,
)

PACKAGES = ("epic_protocol", "feature_extraction", "rulstm", "synthetic_kitchen", "rulstm_apps")


def _project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if info.name.endswith("__main__"):  # runs its command when imported
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and not issubclass(value, Warning)
                    and value.__module__ == module.__name__
                    and not name.startswith("_")
                ):
                    found[f"{value.__module__}.{name}"] = value
    return [found[name] for name in sorted(found)]


def test_every_project_exception_is_one_kind_of_error() -> None:
    exceptions = _project_exceptions()
    assert len(exceptions) >= 20  # the walk found the packages' modules
    kindless = [
        e.__qualname__
        for e in exceptions
        # KeyboardInterrupt's subclasses (SIGTERM raised as Ctrl-C) are the interrupted kind.
        if not issubclass(e, (*ERROR_KINDS, Interrupted, KeyboardInterrupt))
        and e not in (UserError, *ERROR_KINDS)
    ]
    assert kindless == []
    # Exactly one kind: usage (exit 2), data and environment (exit 1) never mix, so that code
    # catching one kind (say, skipping a bad video on a DataError) never catches another.
    mixed = {
        e.__qualname__: [
            kind.__name__ for kind in (*ERROR_KINDS, Interrupted) if issubclass(e, kind)
        ]
        for e in exceptions
    }
    assert {name: kinds for name, kinds in mixed.items() if len(kinds) > 1} == {}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UsageError("--only-needed needs --annotations"), 2),
        (DataError("a.csv:3: column 'verb' must be an integer"), 1),
        (SetupError("cannot write to the output folder out: Permission denied"), 1),
        (Interrupted("interrupted"), 130),
    ],
)
def test_each_kind_has_its_exit_status_and_one_line(error, status, capsys) -> None:
    def fails(argv):
        raise error

    assert cli_main("prog")(fails)([]) == status
    assert capsys.readouterr().err == f"prog: error: {error}\n"


def test_feature_file_errors_are_data_or_environment_errors() -> None:
    from epic_protocol.annotations import AnnotationError
    from epic_protocol.features import (
        FEATURE_FILE_ERRORS,
        FeatureFileAccessError,
        FeatureFileError,
        FeatureWriteError,
        MissingFeaturesError,
    )
    from feature_extraction.output import OutputError, UnwritableOutputError

    for data in (FeatureFileError, MissingFeaturesError, AnnotationError, OutputError):
        assert issubclass(data, DataError) and not issubclass(data, SetupError)
    for environment in (FeatureWriteError, FeatureFileAccessError, UnwritableOutputError):
        assert issubclass(environment, SetupError) and not issubclass(environment, DataError)
    # Callers that handle any feature-file error catch the environment's with this tuple.
    assert all(issubclass(e, FEATURE_FILE_ERRORS) for e in (FeatureFileError, FeatureWriteError))


def test_a_locked_or_unopenable_feature_file_is_an_environment_error(tmp_path: Path) -> None:
    from epic_protocol.features import FeatureFileWriter

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SetupError, match="cannot open .* for writing"):
        FeatureFileWriter(blocker / "rgb.h5", modality="rgb", dim=4, fps=30.0)


SCRIPTS = {
    "rulstm": "rulstm.cli",
    "rulstm-import": "rulstm.compat.cli",
    "rulstm-score": "rulstm.evaluation.score_cli",
    "rulstm-extract": "feature_extraction.cli",
    "rulstm-demo": "rulstm_apps.demo",
    "rulstm-web": "rulstm_apps.web",
    "rulstm-quickstart": "rulstm_apps.quickstart",
    "python -m synthetic_kitchen": "synthetic_kitchen.generate",
}
USAGE = {
    "rulstm": ["fit", "--nosuch", "1"],
    "rulstm-import": ["features", "--nosuch"],
    "rulstm-score": ["nosuch-benchmark"],
    "rulstm-extract": ["--nosuch", "1"],
    "rulstm-demo": ["--nosuch"],
    "rulstm-web": ["--max-seconds", "soon"],
    "rulstm-quickstart": ["--preset", "nosuch"],
    "python -m synthetic_kitchen": ["--out", "unused", "--preset", "nosuch"],
}


def _console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: script name -> module (before ``:main``)."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    entries = {}
    for line in section.splitlines():
        name, sep, target = line.partition("=")
        if sep:
            module, _, function = target.strip().strip('"').partition(":")
            assert function == "main", line
            entries[name.strip()] = module
    return entries


def test_every_command_line_goes_through_cli_main() -> None:
    """Every console script, and every package's ``python -m`` entry, is a ``main`` wrapped
    by :func:`epic_protocol.errors.cli_main` (one line per error, the status of its kind)."""
    scripts = _console_scripts()
    assert len(scripts) >= 7 and scripts.items() <= SCRIPTS.items()
    packages_run_as_main = {
        path.parent.name
        for package in PACKAGES
        for path in (Path(__file__).resolve().parents[1] / package).rglob("__main__.py")
    }
    assert packages_run_as_main <= {"synthetic_kitchen"}
    for script, module in SCRIPTS.items():
        main = importlib.import_module(module).main
        assert hasattr(main, "__wrapped_main__"), f"{script}: {module}.main is not cli_main's"


ROOT = Path(__file__).resolve().parents[1]


def _documented_scripts() -> list[str]:
    """The ``scripts/*.py`` the README and docs/*.md name (what users are told to run)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    names = {
        name
        for page in pages
        for name in re.findall(r"scripts/(\w+)\.py", page.read_text(encoding="utf-8"))
    }
    return sorted(name for name in names if (ROOT / "scripts" / f"{name}.py").is_file())


def _wrapped_by_cli_main(path: Path) -> bool:
    """Whether the module's ``main`` is decorated with ``cli_main(...)`` (read, not run: a
    script's imports may need its optional extras)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return any(
                isinstance(d, ast.Call) and getattr(d.func, "id", None) == "cli_main"
                for d in node.decorator_list
            )
    return False


def test_every_documented_developer_script_goes_through_cli_main() -> None:
    """``python scripts/X.py`` for every script the docs name: one line per error, the
    status of its kind, as the console scripts."""
    scripts = _documented_scripts()
    assert len(scripts) >= 10 and "train_egtea" in scripts  # the docs were read
    unwrapped = [s for s in scripts if not _wrapped_by_cli_main(ROOT / "scripts" / f"{s}.py")]
    assert unwrapped == []


def test_a_developer_script_reports_bad_input_in_one_line(load_script, tmp_path, capsys) -> None:
    script = load_script("check_reference_data")
    assert script.main(["--shared", str(tmp_path / "absent")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("check_reference_data.py: error: ")
    assert str(tmp_path / "absent") in lines[0]
    assert script.main(["--nosuch"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("check_reference_data.py: error: unrecognized arguments: --nosuch")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_exits_2_on_a_usage_error(script: str, capsys) -> None:
    main = importlib.import_module(SCRIPTS[script]).main
    assert main(USAGE[script]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"{script}: error: ") and "Traceback" not in "".join(lines)


@pytest.mark.parametrize("script", ["rulstm-demo", "rulstm-web"])
def test_an_option_neither_the_apps_nor_an_extraction_option_exits_2(script: str, capsys) -> None:
    """The demo and the web app pass unknown options on to the extraction: one that is no
    extraction option either is a usage error, found before any file is read (rulstm-web
    without a checkpoint would otherwise say the quickstart's is missing, status 1)."""
    main = importlib.import_module(SCRIPTS[script]).main
    needed = (
        ["--checkpoint", "absent.ckpt", "--video", "absent.mp4"] if script == "rulstm-demo" else []
    )
    assert main([*needed, "--nosuch", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: unrecognized arguments")
    assert f"neither a {script} option nor an extraction option" in lines[0]


def _data_error_args(script: str, tmp_path: Path) -> list[str]:
    absent = tmp_path / "absent"
    return {
        "rulstm-import": [
            "features", "--lmdb", str(absent), "--out", str(tmp_path / "o.h5"), "--modality", "rgb"
        ],
        "rulstm-demo": ["--checkpoint", str(absent.with_suffix(".ckpt")), "--video", str(absent / "v.mp4")],
        "rulstm-web": ["--checkpoint", str(absent.with_suffix(".ckpt"))],
    }[script]  # fmt: skip


@pytest.mark.parametrize("script", ["rulstm-import", "rulstm-demo", "rulstm-web"])
def test_scripts_exit_1_with_one_line_on_a_missing_file(script: str, tmp_path, capsys) -> None:
    main = importlib.import_module(SCRIPTS[script]).main
    assert main(_data_error_args(script, tmp_path)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: ")
    assert str(tmp_path / "absent") in lines[0]
