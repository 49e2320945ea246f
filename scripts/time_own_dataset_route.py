"""Time the "Your own dataset" route of the docs, copied command by command, on generated clips.

The bash block of step 4 is taken from the docs as it is and run by ``bash`` with ``set -x``;
only ``WEIGHTS`` is set to the offline value the docs give (no network here). The own-dataset
folder the commands expect is generated first: three procedural-kitchen clips of about 20 s at
1280 x 720 (``my/videos/``; the validation clip is ``clip.mp4``), their annotations in the
RU-LSTM format, ``my/actions.csv``, and ``configs/mydata/`` copied from ``configs/egtea/`` and
edited as step 3 says. Prints each command's wall time and the total, with the CPU and the load.

    python scripts/time_own_dataset_route.py --out /tmp/route   # needs an empty or absent folder
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from epic_protocol.errors import ArgumentParser, cli_main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own_dataset.md"
OFFLINE = 'WEIGHTS="--rgb.weights none --flow.weights none"'


def route_block() -> tuple[Path, str]:
    """The first bash block of the "Your own dataset" page (docs/own_dataset.md)."""
    text = DOC.read_text()
    if "```bash\n" not in text:
        raise SystemExit(f"time_own_dataset_route: no bash block in {DOC}")
    start = text.index("```bash\n") + len("```bash\n")
    return DOC, text[start : text.index("```", start)]


def make_own_dataset(root: Path, *, seed: int) -> None:
    """my/ (videos, annotations, actions.csv) and configs/mydata/ as steps 1-3 say."""
    from synthetic_kitchen.generate import DatasetSize, generate_dataset

    size = DatasetSize(
        participants=1,
        videos_per_participant=3,
        validation_videos_per_participant=1,
        actions_per_video=6,
        width=1280,
        height=720,
    )
    paths = generate_dataset(root / "generated", preset=size, seed=seed, progress=False)
    my = root / "my"
    (my / "videos").mkdir(parents=True)
    validation = paths.validation_csv.read_text()
    (clip,) = {line.split(",")[1] for line in validation.splitlines() if line}
    for video in paths.videos_dir.glob("*.mp4"):
        name = "clip.mp4" if video.stem == clip else video.name
        shutil.copy(video, my / "videos" / name)
    (my / "validation.csv").write_text(validation.replace(f",{clip},", ",clip,"))
    shutil.copy(paths.training_csv, my / "training.csv")
    shutil.copy(paths.actions_csv, my / "actions.csv")

    write_step3_configs(root)


def write_step3_configs(root: Path, *, label_space: dict[str, int] | None = None) -> None:
    """``configs/extract/`` and ``configs/mydata/`` under ``root``: ``configs/egtea/`` copied
    and edited as step 3 of the docs' own-dataset route says (``my/`` paths, ``protocol:
    custom``). ``label_space`` (``num_verbs``, ``num_nouns``) goes to the evaluator, for a
    vocabulary that does not name every verb and noun. Also used by the route's test."""
    shutil.copytree(ROOT / "configs" / "extract", root / "configs" / "extract")
    mydata = root / "configs" / "mydata"
    shutil.copytree(ROOT / "configs" / "egtea", mydata)

    def edit(name: str, change) -> None:
        path = mydata / name
        values = yaml.safe_load(path.read_text())
        change(values)
        path.write_text(yaml.safe_dump(values))

    def base(c: dict) -> None:
        c["data"].update(actions="my/actions.csv")
        c["protocol"] = "custom"

    edit("base.yaml", base)
    edit(
        "split1.yaml",
        lambda c: c["data"].update(
            train_annotations="my/training.csv",
            val_annotations="my/validation.csv",
            test_annotations="my/validation.csv",
            features={"rgb": "data/mydata/rgb.h5", "flow": "data/mydata/flow.h5"},
        ),
    )

    def evaluator(c: dict) -> None:
        callback = c["trainer"]["callbacks"][0]["init_args"]
        callback.update(protocol="custom", dataset="mydata", out_dir="evaluation/mydata")
        callback.update(label_space or {})

    edit("test.yaml", evaluator)


@cli_main("time_own_dataset_route.py")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (new or empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated clips")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    doc, block = route_block()
    if 'WEIGHTS=""' not in block:
        raise SystemExit(f'time_own_dataset_route: {doc}: the route has no WEIGHTS="" line')
    # PS4 set in the script: bash ignores it from the environment when run as root.
    trace_prefix = "PS4='+TIMESTAMP $EPOCHREALTIME '\n"  # each traced command with its start
    script = trace_prefix + "set -euo pipefail\nset -x\n" + block.replace('WEIGHTS=""', OFFLINE)

    from epic_protocol.precision import cpu_description

    print(f"{os.cpu_count()} CPUs, {cpu_description()}; load at start: {os.getloadavg()}")
    began = time.monotonic()
    make_own_dataset(args.out.resolve(), seed=args.seed)
    print(f"generated the own-dataset folder in {time.monotonic() - began:.0f} s", flush=True)

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    began = time.time()
    trace = args.out / "route.log"
    with trace.open("w") as log:
        status = subprocess.run(
            ["bash", "-c", script], cwd=args.out, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    ended = time.time()

    starts = [
        (float(match.group(1)), match.group(2))
        for match in re.finditer(
            r"^\++TIMESTAMP (\d+\.\d+) (rulstm\S*.*)$", trace.read_text(), re.M
        )
    ]
    print(f"\n{'seconds':>8}  command (from {doc.relative_to(ROOT)})")
    for (start, command), (end, _) in zip(starts, [*starts[1:], (ended, "")]):
        print(f"{end - start:8.0f}  {command[:110]}")
    print(f"{ended - began:8.0f}  in all ({(ended - began) / 60:.1f} min); load at end: "
          f"{os.getloadavg()}")  # fmt: skip
    if status:
        print(f"the route failed (exit {status}); see {trace}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
