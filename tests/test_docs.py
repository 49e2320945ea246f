"""The docs (README.md, docs/*.md, feature_extraction/README.md) point at what exists: every
relative link and image names a file of the repository and every ``#anchor`` a heading of that
file (GitHub's slugs); every command of a ``bash`` block that runs a project program (the
console scripts of pyproject.toml, ``python scripts/X.py``) gives only options that program
accepts, and every ``rulstm`` command parses as printed (with its ``-c`` configs)."""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "feature_extraction" / "README.md",
]

#: Programs that pass the options they do not know on to the extraction config (as
#: ``rulstm-extract`` reads them).
PASS_ON_TO_EXTRACTION = {"rulstm-demo", "rulstm-web", "scripts/bench_extract.py"}

#: Config folders the docs tell the reader to create as a copy of a shipped one.
COPIED_CONFIGS = {"configs/mydata/": "configs/egtea/"}


# --------------------------------------------------------------------------- markdown
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def split_fences(text: str) -> tuple[str, list[tuple[str, str, int]]]:
    """``(prose, blocks)``: the text outside fenced code blocks (fenced lines blanked, so line
    numbers stay) and each block as ``(language, body, line of its first body line)``."""
    prose: list[str] = []
    blocks: list[tuple[str, str, int]] = []
    fence: tuple[str, str, int, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = (match.group(1), match.group(2).lower(), number + 1, [])
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0]):
            blocks.append((fence[1], "\n".join(fence[3]), fence[2]))
            fence = None
            prose.append("")
        elif fence is not None:
            fence[3].append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, lower case, punctuation other than
    ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    result: set[str] = set()
    for line in prose.splitlines():
        if match := _HEADING.match(line):
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, target)`` of every markdown link and image outside code."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    # Inline code spans (which may wrap lines) are not links; keep the newlines for numbering.
    prose = re.sub(r"`[^`]*`", lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)
    for match in _LINK.finditer(prose):
        yield prose.count("\n", 0, match.start()) + 1, match.group(1)


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for line, target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        where = f"{path.relative_to(root)}:{line}: {target}"
        name, _, anchor = target.partition("#")
        file = (path.parent / name).resolve() if name else path
        if not file.exists() or not file.is_relative_to(root.resolve()):
            problems.append(f"{where}: no file {name}")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            problems.append(f"{where}: no heading #{anchor} in {file.relative_to(root)}")
    return problems


# --------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Command:
    where: str  # file:line
    argv: tuple[str, ...]
    inline: bool = False  # from a code span of the prose (often elided: "rulstm fit ...")


def shell_lines(block: str) -> Iterator[tuple[int, str]]:
    """``(offset, line)``: the block's lines with ``\\`` continuations joined."""
    pending: list[str] = []
    start = 0
    for offset, line in enumerate(block.splitlines()):
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        yield start, " ".join([*pending, line])
        pending = []
    if pending:
        yield start, " ".join(pending)


def _expand(line: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        line = line.replace("${" + name + "}", value).replace(f"${name}", value)
    return line


def commands_of_block(block: str) -> Iterator[tuple[int, list[str]]]:
    """Each simple command of a bash block as words, with ``VAR="..."`` assignments expanded
    and ``for x in a b; do ... done`` loops unrolled (nested loops on one line too); words
    with a variable it cannot expand are dropped."""
    variables: dict[str, str] = {}
    loops: list[tuple[str, list[str], list[tuple[int, str]]]] = []

    def emit(offset: int, line: str, bound: dict[str, str]) -> Iterator[tuple[int, list[str]]]:
        words = shlex.split(_expand(line, {**variables, **bound}), comments=True)
        if words:
            yield offset, [word for word in words if "$" not in word]

    def unroll(level: int, bound: dict[str, str]) -> Iterator[tuple[int, list[str]]]:
        name, values, body = loops[level]
        for value in values:
            for offset, line in body:
                if isinstance(line, int):  # a nested loop
                    yield from unroll(line, {**bound, name: value})
                else:
                    yield from emit(offset, line, {**bound, name: value})

    stack: list[int] = []
    for offset, raw in shell_lines(block):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        while line:
            if match := re.match(r"for (\w+) in ([^;]*); do\s*", line):
                loops.append((match.group(1), match.group(2).split(), []))
                if stack:
                    loops[stack[-1]][2].append((offset, len(loops) - 1))
                stack.append(len(loops) - 1)
                line = line[match.end() :]
            elif match := re.match(r"done\s*;?\s*", line):
                level = stack.pop()
                if not stack:
                    yield from unroll(level, {})
                line = line[match.end() :]
            elif match := re.fullmatch(r'([A-Za-z_]\w*)="([^"]*)"', line):
                variables[match.group(1)] = _expand(match.group(2), variables)
                line = ""
            else:
                if stack:
                    loops[stack[-1]][2].append((offset, line))
                else:
                    yield from emit(offset, line, {})
                line = ""


def documented_commands(path: Path, programs: set[str], root: Path = ROOT) -> list[Command]:
    """Commands of the file's bash blocks that run a project program (``srun`` dropped),
    ``python scripts/X.py`` as ``scripts/X.py``."""
    _, blocks = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for language, body, first in blocks:
        if language not in ("bash", "sh", "shell"):
            continue
        for offset, words in commands_of_block(body):
            if words and words[0] == "srun":
                words = words[1:]
            if len(words) >= 2 and words[0] in ("python", "python3") and words[1].endswith(".py"):
                words = words[1:]
            script = (
                words[0].startswith("scripts/") and words[0].endswith(".py") if words else False
            )
            if words and (words[0] in programs or script):
                where = f"{path.relative_to(root)}:{first + offset}"
                found.append(Command(where, tuple(words)))
    return found


def inline_commands(path: Path, programs: set[str], root: Path = ROOT) -> list[Command]:
    """Code spans of the prose that start with a project program, e.g. ``rulstm-import
    features --dtype float16`` (spans may wrap lines)."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for match in re.finditer(r"`([^`]+)`", prose):
        text = " ".join(match.group(1).split())
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        if words[:1] == ["python"] and len(words) > 1:
            words = words[1:]
        script = words[0].startswith("scripts/") and words[0].endswith(".py") if words else False
        if words and (words[0] in programs or script) and options_in(tuple(words)):
            line = prose.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(root)}:{line}"
            found.append(Command(where, tuple(w for w in words if "$" not in w), inline=True))
    return found


def project_programs() -> dict[str, str]:
    """Console script -> ``module:function`` (pyproject.toml)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(pyproject["project"]["scripts"])


# --------------------------------------------------------------------------- parsers
class _Captured(BaseException):
    """Raised where a program would parse its arguments, carrying the parser (a
    BaseException, so the programs' one-line error wrappers let it through)."""

    def __init__(self, parser: Any) -> None:
        super().__init__()
        self.parser = parser


def _capture(run: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The first parser ``run`` asks to parse (argparse or jsonargparse)."""
    import jsonargparse

    def stop(self, *args, **kwargs):
        raise _Captured(self)

    with monkeypatch.context() as patch:
        for cls in (argparse.ArgumentParser, jsonargparse.ArgumentParser):
            patch.setattr(cls, "parse_args", stop)
            patch.setattr(cls, "parse_known_args", stop, raising=False)
        patch.setattr(sys, "argv", ["program"])
        patch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "disabled"))  # restored after
        try:
            run()
        except _Captured as captured:
            return captured.parser
    raise AssertionError(f"{run} parsed no arguments")


def option_strings(parser: Any, words: tuple[str, ...] = ()) -> set[str]:
    """The parser's option strings, and those of the subcommand among ``words``."""
    names = {name for action in parser._actions for name in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                if word in action.choices:
                    names |= option_strings(action.choices[word], words)
                    break
    return names


def options_in(argv: tuple[str, ...]) -> list[str]:
    """The ``--option`` words before a ``--`` separator (values after ``=`` dropped)."""
    found = []
    for word in argv[1:]:
        if word == "--":
            break
        if word.startswith("--") and not re.fullmatch(r"--?[\d.]+", word):
            found.append(word.split("=", 1)[0])
    return found


class Checker:
    """Checks documented commands against the programs' own parsers (built once each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path = ROOT) -> None:
        self.monkeypatch = monkeypatch
        self.root = root
        self.programs = project_programs()
        self._parsers: dict[str, Any] = {}
        self._lightning: dict[type, Any] = {}

    def entry(self, program: str) -> Callable[..., Any]:
        module, _, function = self.programs[program].partition(":")
        return getattr(import_module(module), function)

    def parser(self, program: str) -> Any:
        if program not in self._parsers:
            if program.startswith("scripts/"):
                script = str(self.root / program)
                run = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
            else:
                main = self.entry(program)
                run = lambda: main([])  # noqa: E731
            self._parsers[program] = _capture(run, self.monkeypatch)
        return self._parsers[program]

    def extraction_options(self) -> set[str]:
        """The extraction options rulstm-demo and rulstm-web pass on (load_config's)."""
        if "extraction" not in self._parsers:
            from feature_extraction import load_config

            self._parsers["extraction"] = _capture(lambda: load_config(None, []), self.monkeypatch)
        return option_strings(self._parsers["extraction"])

    def problems(self, command: Command) -> list[str]:
        program = command.argv[0]
        if program not in self.programs and not (self.root / program).is_file():
            return [f"{command.where}: {program}: no such program or script"]
        if program == "rulstm" and command.inline:
            return self._lightning_names(command)
        if program == "rulstm":
            return self._lightning_problems(command)
        known = option_strings(self.parser(program), command.argv)
        passes_on = program in PASS_ON_TO_EXTRACTION
        extraction = self.extraction_options() if passes_on else set()
        problems = []
        for option in options_in(command.argv):
            underscored = "--" + option[2:].replace("-", "_")
            if option in known or (program == "rulstm-demo" and underscored in known):
                continue
            if passes_on and (option in extraction or underscored in extraction):
                continue
            problems.append(f"{command.where}: {program} has no option {option}")
        return problems

    def _lightning_problems(self, command: Command) -> list[str]:
        """``rulstm`` (LightningCLI): the whole command parses, configs (``-c``) included, so
        nested options (``--model.net.init_args.hidden``) are checked against the classes the
        configs name."""
        argv = [self._config_path(word) for word in command.argv[1:]]
        if any(word == "--help" or word.endswith(".help") for word in argv):
            return []
        missing = [w for i, w in enumerate(argv) if argv[i - 1 : i] in (["-c"], ["--config"])]
        missing = [name for name in missing if not (self.root / name).is_file()]
        if missing:
            return [f"{command.where}: no config {name}" for name in missing]
        parser = self._lightning_parser(argv)
        with self.monkeypatch.context() as patch:
            patch.chdir(self.root)
            try:
                parser.parse_args(argv)
            except (Exception, SystemExit) as error:
                message = " ".join(str(error).split())[:400]
                return [f"{command.where}: rulstm {' '.join(argv[:1])} does not parse: {message}"]
        return []

    def _lightning_parser(self, argv: list[str]) -> Any:
        """The parser ``rulstm`` builds for ``argv`` (next-action or Ego4D LTA), built once
        per CLI class."""
        from lightning.pytorch.cli import LightningCLI

        cache = self._lightning
        setup = LightningCLI.setup_parser

        def setup_once(cli, *args, **kwargs):
            if type(cli) in cache:
                cli.parser = cache[type(cli)]
            else:
                setup(cli, *args, **kwargs)
                cache[type(cli)] = cli.parser

        def stop(cli, parser, args):
            raise _Captured(parser)

        with self.monkeypatch.context() as patch:
            patch.chdir(self.root)
            patch.setattr(LightningCLI, "setup_parser", setup_once)
            patch.setattr(LightningCLI, "parse_arguments", stop)
            try:
                self.entry("rulstm")(argv)
            except _Captured as captured:
                return captured.parser
        raise AssertionError(f"rulstm {' '.join(argv)} parsed nothing")

    def _lightning_names(self, command: Command) -> list[str]:
        """An elided ``rulstm`` command of the prose: each option's key path must begin with
        an option of the subcommand (``--model.optimizer.init_args.lr`` under ``--model.optimizer``,
        whose class only a config names)."""
        words = command.argv[1:]
        subcommand = (
            words[0] if words and words[0] in ("fit", "validate", "test", "predict") else "fit"
        )
        parser = self._lightning_parser([subcommand])
        known = option_strings(parser, (subcommand,))
        problems = []
        for option in options_in(command.argv):
            parts = option[2:].split(".")
            prefixes = {"--" + ".".join(parts[:n]) for n in range(1, len(parts) + 1)}
            if not prefixes & known:
                problems.append(f"{command.where}: rulstm {subcommand} has no option {option}")
        return problems

    def _config_path(self, word: str) -> str:
        for copy, original in COPIED_CONFIGS.items():
            if word.startswith(copy) and not (self.root / word).exists():
                return original + word[len(copy) :]
        return word


# --------------------------------------------------------------------------- tests
def test_the_docs_are_the_readme_and_the_pages_it_links() -> None:
    readme = {target.split("#")[0] for _, target in links(ROOT / "README.md")}
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages - {"docs/README.md"} <= readme | {"docs/README.md"}, pages - readme
    index = {f"docs/{target.split('#')[0]}" for _, target in links(ROOT / "docs" / "README.md")}
    assert pages - {"docs/README.md"} <= index, pages - index


def test_every_relative_link_and_anchor_exists() -> None:
    problems = [problem for path in DOCS for problem in broken_links(path)]
    assert not problems, "\n".join(problems)


def test_every_option_of_a_documented_command_exists(monkeypatch) -> None:
    checker = Checker(monkeypatch)
    programs = set(checker.programs)
    commands = [command for path in DOCS for command in documented_commands(path, programs)]
    # The docs run every console script and the scripts they describe.
    assert {command.argv[0] for command in commands} >= programs - {"rulstm-quickstart"}
    commands += [command for path in DOCS for command in inline_commands(path, programs)]
    problems = [problem for command in commands for problem in checker.problems(command)]
    assert not problems, "\n".join(problems)


def test_the_command_reader_unrolls_loops_and_expands_variables() -> None:
    block = """# a comment
QUICK="--trainer.max_epochs 10 --data.num_workers 0"
for n in 1 2; do for m in rgb flow; do
  rulstm-import features --lmdb x_s${n}_${m} \\
      --modality $m --out data/split$n/$m.h5   # trailing comment
done; done
rulstm fit -c a.yaml $QUICK $UNKNOWN
"""
    commands = [words for _, words in commands_of_block(block)]
    assert len(commands) == 5
    assert commands[0] == [
        "rulstm-import", "features", "--lmdb", "x_s1_rgb", "--modality", "rgb",
        "--out", "data/split1/rgb.h5",
    ]  # fmt: skip
    assert commands[3][3] == "x_s2_flow"
    assert commands[4] == [
        "rulstm", "fit", "-c", "a.yaml", "--trainer.max_epochs", "10", "--data.num_workers", "0"
    ]  # fmt: skip


def test_the_checker_finds_made_up_options_and_broken_links(tmp_path, monkeypatch) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.md").write_text("# Title\n\n## A section\n")
    page = docs / "page.md"
    page.write_text(
        "# Page: one\n\nSee [the README](../README.md#a-section), [here](#page-one), "
        "[gone](missing.md), [no such part](../README.md#no-section) and "
        "![a picture](web.png); `[not a link](nowhere.md)`.\n\n"
        "```bash\n"
        "rulstm-extract --videos v --out o -c configs/extract/tiny.yaml --rgb.weights none\n"
        "rulstm-extract --videos v --out o --made-up-option 3\n"
        "rulstm-extract --vid v --out o   # an abbreviation is not an option\n"
        "rulstm-import features --lmdb x --modality rgb --out y --no-such-flag\n"
        "rulstm-demo --video v --checkpoint c --extract-config e --rgb.weights none "
        "--rgb.no_such_field 1\n"
        "python scripts/train_egtea.py --splits 1 --bogus\n"
        "rulstm fit -c configs/ek55/base.yaml -c configs/ek55/rgb_sc.yaml "
        "--model.net.init_args.hidden 8 --trainer.max_epochs 1\n"
        "rulstm fit -c configs/ek55/base.yaml -c configs/ek55/rgb_sc.yaml "
        "--model.net.init_args.no_such_argument 8\n"
        "rulstm fit -c configs/ek55/base.yaml -c configs/ek55/rgb_sc.yaml --trainer.no_such_option 1\n"
        "rulstm test -c configs/nowhere/base.yaml\n"
        "```\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert problems == [
        "docs/page.md:3: missing.md: no file missing.md",
        "docs/page.md:3: ../README.md#no-section: no heading #no-section in README.md",
        "docs/page.md:3: web.png: no file web.png",
    ]
    checker = Checker(monkeypatch)
    commands = documented_commands(page, set(checker.programs), root=tmp_path)
    assert len(commands) == 10
    found = [checker.problems(command) for command in commands]
    assert found[0] == [] and found[6] == []  # real options, a real nested option
    assert found[1] == ["docs/page.md:7: rulstm-extract has no option --made-up-option"]
    assert found[2] == ["docs/page.md:8: rulstm-extract has no option --vid"]
    assert found[3] == ["docs/page.md:9: rulstm-import has no option --no-such-flag"]
    assert found[4] == ["docs/page.md:10: rulstm-demo has no option --rgb.no_such_field"]
    assert found[5] == ["docs/page.md:11: scripts/train_egtea.py has no option --bogus"]
    assert len(found[7]) == 1 and "no_such_argument" in found[7][0], found[7]
    assert len(found[8]) == 1 and "no_such_option" in found[8][0], found[8]
    assert found[9] == ["docs/page.md:15: no config configs/nowhere/base.yaml"]


# --------------------------------------------------------------------------- Ego4D LTA layout
def _values(words: tuple[str, ...] | list[str], option: str) -> list[str]:
    """The words after ``option`` up to the next option (``[]`` when it is not given)."""
    if option not in words:
        return []
    rest = list(words[list(words).index(option) + 1 :])
    end = next((i for i, word in enumerate(rest) if word.startswith("-")), len(rest))
    return rest[:end]


def test_the_ego4d_page_and_the_lta_config_defaults_use_one_layout() -> None:
    """docs/ego4d_lta.md's commands and configs/ego4d_lta/{base,predict}.yaml agree: one
    annotation folder, the Ego4D CLI's ``<output_directory>/<version>/<dataset>/`` with
    ``ego4d.json`` at its root, the importer's output the feature file base.yaml reads, and
    ``rulstm-score`` reading the file a documented predict command writes for the val split."""
    import yaml

    page = ROOT / "docs" / "ego4d_lta.md"
    text = page.read_text(encoding="utf-8")
    _, blocks = split_fences(text)
    commands = [
        words
        for language, body, _ in blocks
        if language == "bash"
        for _, words in commands_of_block(body)
    ]
    data = yaml.safe_load((ROOT / "configs/ego4d_lta/base.yaml").read_text())["data"]
    annotations = Path(data["train"]).parent
    for key in ("taxonomy", "train", "val", "test"):
        assert Path(data[key]).parent == annotations, key
        assert Path(data[key]).name in text, f"{page.name} never names data.{key}'s file"
    named = {word for words in commands for word in words if "fho_lta_" in word}
    assert named and {Path(word).parent for word in named} == {annotations}, named
    # The Ego4D CLI writes <output_directory>/<version>/<dataset>/ and ego4d.json at the root.
    downloads = [words for words in commands if words[0] == "ego4d"]
    roots = {Path(value) for words in downloads for value in _values(words, "--output_directory")}
    datasets = {value for words in downloads for value in _values(words, "--datasets")}
    version = annotations.parent
    assert roots == {version.parent} and re.fullmatch(r"v\d+", version.name), (roots, version)
    assert annotations.name == "annotations" and "annotations" in datasets
    (importer,) = [w for w in commands if tuple(w[:2]) == ("rulstm-import", "ego4d-features")]
    assert _values(importer, "--metadata") == [str(version.parent / "ego4d.json")]
    (features,) = _values(importer, "--features")
    assert Path(features).parent == version and Path(features).name in datasets
    assert _values(importer, "--out") == [data["features"]]
    (extract,) = [words for words in commands if words[0] == "rulstm-extract"]
    (videos,) = _values(extract, "--videos")
    assert Path(videos) == version / "clips" and "clips" in datasets
    (out,) = _values(extract, "--out")
    assert f"--data.features {Path(out) / 'rgb.h5'}" in " ".join(text.split())
    # rulstm-score reads what a documented `rulstm predict` writes for the labelled split.
    predict_yaml = yaml.safe_load((ROOT / "configs/ego4d_lta/predict.yaml").read_text())
    (writer,) = predict_yaml["trainer"]["callbacks"]
    written = {
        (
            (_values(words, "--data.predict_split") or [predict_yaml["data"]["predict_split"]])[0],
            (
                _values(words, "--trainer.callbacks.init_args.out_file")
                or [writer["init_args"]["out_file"]]
            )[0],
        )
        for words in commands
        if tuple(words[:2]) == ("rulstm", "predict")
    }
    (score,) = [words for words in commands if words[0] == "rulstm-score"]
    assert _values(score, "--annotations") == [data["val"]]
    assert ("val", _values(score, "--predictions")[0]) in written, written
