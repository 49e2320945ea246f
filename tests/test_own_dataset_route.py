"""The "Your own dataset" route (docs/own_dataset.md), command by command as the page prints
it, on three tiny generated clips: configs copied from configs/egtea/ and edited as step 3 says, then every
command of step 4 (extraction, the five training stages, the evaluation and the demo), each
with options that only make it tiny (frame and network sizes, one epoch, random weights)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import av
import numpy as np
import pytest

from epic_protocol import ActionVocabulary, Segment, write_actions_csv, write_rulstm_split

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "rulstm-extract": [
        "--rgb.weights", "none", "--flow.weights", "none",
        "--decode.width", "64", "--decode.height", "48",
        "--rgb.input_size", "[32, 32]", "--flow.input_size", "[32, 32]",
        "--num_workers", "0", "--threads", "1", "--progress", "false",
    ],
    "rulstm": [
        "--model.net.init_args.hidden", "8",
        "--data.num_workers", "0", "--data.batch_size", "4",
        "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
    ],
    "rulstm-demo": [
        "--rgb.weights", "none", "--flow.weights", "none",
        "--decode.width", "64", "--decode.height", "48",
        "--rgb.input_size", "[32, 32]", "--flow.input_size", "[32, 32]",
        "--duration", "2", "--progress", "false",
    ],
}  # fmt: skip


def readme_route() -> list[list[str]]:
    """The commands of step 4 of docs/own_dataset.md, loops unrolled and shell variables
    (``QUICK="..."``) expanded."""
    section = (ROOT / "docs" / "own_dataset.md").read_text()
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("```", start)].replace("\\\n", " ")
    commands: list[str] = []
    loop: tuple[str, list[str], list[str]] | None = None
    variables: dict[str, str] = {}
    for line in (line.strip() for line in block.splitlines()):
        if not line or line.startswith("#"):
            continue
        for name, value in variables.items():  # unquoted, split into words as bash does
            line = line.replace(f"${name}", value)
        if match := re.fullmatch(r'([A-Z_]+)="([^"]*)"', line):
            variables[match.group(1)] = match.group(2)
        elif match := re.fullmatch(r"for (\w+) in ([\w ]+); do", line):
            loop = (match.group(1), match.group(2).split(), [])
        elif line == "done":
            assert loop is not None
            name, values, body = loop
            for value in values:
                for command in body:
                    commands.append(
                        command.replace("${" + name + "}", value).replace(f"${name}", value)
                    )
            loop = None
        elif loop is not None:
            loop[2].append(line)
        else:
            commands.append(line)
    return [shlex.split(command) for command in commands]


def _write_video(path: Path, *, frames: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _route_script():
    spec = importlib.util.spec_from_file_location(
        "time_own_dataset_route", ROOT / "scripts" / "time_own_dataset_route.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _own_dataset(root: Path) -> None:
    """Three clips, annotations and actions.csv in my/, configs/mydata/ as step 3 says."""
    for index, video in enumerate(("kitchen_a", "kitchen_b", "clip")):
        _write_video(root / "my" / "videos" / f"{video}.mp4", frames=150, seed=index)
    write_rulstm_split(
        root / "my" / "training.csv",
        [
            Segment("1", "kitchen_a", 110, 130, 0, 0, 0),
            Segment("2", "kitchen_a", 131, 149, 1, 2, 1),
            Segment("3", "kitchen_b", 115, 140, 2, 1, 2),
            Segment("4", "kitchen_b", 120, 145, 0, 0, 0),
        ],
    )
    write_rulstm_split(
        root / "my" / "validation.csv",
        [Segment("5", "clip", 110, 130, 1, 2, 1), Segment("6", "clip", 125, 149, 2, 1, 2)],
    )
    vocabulary = ActionVocabulary(
        verbs=np.array([0, 1, 2]),
        nouns=np.array([0, 2, 1]),
        names=("wash_cup", "cut_bread", "open_jar"),
        num_verbs=3,
        num_nouns=3,
    )
    write_actions_csv(root / "my" / "actions.csv", vocabulary)
    # configs/mydata/ as step 3 says: the same edits the route's timing script makes.
    _route_script().write_step3_configs(root, label_space={"num_verbs": 3, "num_nouns": 3})


def test_the_readme_route_parses_into_its_commands() -> None:
    route = readme_route()
    programs = [command[0] for command in route]
    assert programs == ["rulstm-extract", *["rulstm"] * 6, "rulstm-demo"]
    assert route[0][route[0].index("-c") + 1] == "configs/extract/cpu_small.yaml"
    demo = route[-1]
    assert demo[demo.index("--extract-config") + 1] == "configs/extract/cpu_small.yaml"
    # The first-try options go to every training stage and to the evaluation alike.
    for command in route[1:7]:
        assert command[-6:] == [
            "--trainer.max_epochs", "10", "--model.net.init_args.hidden", "256",
            "--data.num_workers", "0",
        ], command  # fmt: skip
    stages = [command[command.index("--trainer.default_root_dir") + 1] for command in route[1:6]]
    assert stages == [
        "runs/mydata/rgb_sc",
        "runs/mydata/rgb_anticipation",
        "runs/mydata/flow_sc",
        "runs/mydata/flow_anticipation",
        "runs/mydata/fusion",
    ]


@pytest.mark.slow
def test_the_readme_own_dataset_route_runs_from_videos_to_a_demo(tmp_path, monkeypatch) -> None:
    from feature_extraction.cli import main as extract_main
    from rulstm.cli import build_cli
    from rulstm_apps.demo import main as demo_main

    _own_dataset(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for command in readme_route():
        program, args = command[0], [*command[1:], *TINY[command[0]]]
        if program == "rulstm-extract":
            assert extract_main(args) == 0, command
        elif program == "rulstm":
            cli = build_cli(args)
            assert cli.trainer.state.finished, command
        else:
            assert program == "rulstm-demo"
            assert demo_main(args) == 0, command
    for modality in ("rgb", "flow"):
        assert (tmp_path / "data" / "mydata" / f"{modality}.h5").is_file()
    for stage in ("rgb_sc", "rgb_anticipation", "flow_sc", "flow_anticipation", "fusion"):
        assert (tmp_path / "runs" / "mydata" / stage / "checkpoints" / "best.ckpt").is_file()
    # The report is named after the tested stage, the combined plot after the data set.
    reports = {p.name for p in (tmp_path / "evaluation" / "mydata").iterdir()}
    assert {"fusion.json", "fusion.csv", "accuracy_mydata.png"} <= reports, reports
    # Each run's config stays with it: the stages' in their folders, the test's beside its
    # report (not ./config.yaml, replaced by every run).
    assert "fusion.config.yaml" in reports and not (tmp_path / "config.yaml").exists()
    with av.open(str(tmp_path / "demo.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) > 0
