"""Run the quickstart for several seeds and print each model's accuracy and the wall times
side by side, with their mean and spread; optionally store them as the reference numbers the
quickstart compares its own result with (``rulstm_apps/resources/quickstart_reference.json``).

    python scripts/quickstart_seeds.py --seeds 0 1 2 --preset default --precision 32-true \\
        --out seeds_output --write-reference
    python scripts/quickstart_seeds.py --seeds 0 1 2 --precision auto --jobs 3 \\
        --out seeds_auto --write-reference    # what a plain rulstm-quickstart trains at

Each seed runs ``python -m rulstm_apps.quickstart --seed N`` in its own process into
``OUT/seedN`` (the seed sets the generated kitchen: its recipe and every video); ``--jobs N``
runs N seeds at the same time. ``--precision auto`` passes ``auto`` on, as a plain
``rulstm-quickstart`` does, and files the numbers under what it resolves to on this machine
(``bf16-mixed`` where the CPU has native bf16, else ``32-true``; printed first). A seed whose
folder already holds a finished run (``metrics.json`` and ``timings.json``) is not rerun unless
``--rerun``; ``--aggregate-only`` only summarises the finished ones. A finished run recorded at
another precision is refused rather than filed under this one. Timings depend on the CPU and
its load: the CPU's name and the 1-minute load average at the start and end of each run are
printed and stored with the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from epic_protocol.errors import ArgumentParser, cli_main
from rulstm_apps.quickstart import PRESETS
from rulstm_apps.quickstart_reference import (
    REFERENCE_FILE,
    aggregate,
    at,
    cpu_name,
    load_average,
    write_reference,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="quickstart_seeds.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="kitchen seeds (default: 0 1 2)"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="default: %(default)s"
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "32-true", "bf16-mixed"],
        default="32-true",
        help="training precision (default: %(default)s, the path every CPU runs); auto: what "
        "rulstm-quickstart picks by default, filed under what it resolves to on this machine",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run N seeds at the same time (default: %(default)s; each run's time then "
        "includes the others' load, which the stored load averages show)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("quickstart_seeds"),
        help="one quickstart folder per seed, OUT/seedN (default: %(default)s)",
    )
    parser.add_argument("--demo", action="store_true", help="also render demo.mp4 in every run")
    parser.add_argument("--rerun", action="store_true", help="rerun seeds that already finished")
    parser.add_argument(
        "--aggregate-only", action="store_true", help="only summarise the finished seeds"
    )
    parser.add_argument(
        "--write-reference",
        nargs="?",
        type=Path,
        const=REFERENCE_FILE,
        default=None,
        metavar="PATH",
        help=f"store the summary as the reference numbers (default PATH: {REFERENCE_FILE})",
    )
    parser.add_argument(
        "--note", default="", help="a remark stored with the reference (e.g. the machine's load)"
    )
    return parser


def resolve_precision(requested: str) -> str:
    """The precision the runs train at: ``auto`` by the quickstart's rule on this machine."""
    if requested != "auto":
        return requested
    from epic_protocol.precision import auto_precision, cpu_description

    resolved = auto_precision("cpu")
    print(f"precision auto -> {resolved} ({cpu_description()})", flush=True)
    return resolved


def _finished(folder: Path) -> dict | None:
    metrics, timings = folder / "metrics.json", folder / "timings.json"
    if not (metrics.is_file() and timings.is_file()):
        return None
    run = {"metrics": json.loads(metrics.read_text()), "seconds": json.loads(timings.read_text())}
    load = folder / "seed_run.json"
    if load.is_file():
        run.update(json.loads(load.read_text()))
    return run


def _other_precision(seed: int, finished: dict, precision: str) -> bool:
    """Whether a finished run was recorded at another precision (then it is not used)."""
    recorded = finished.get("precision")
    if recorded is None or recorded == precision:
        return False
    print(
        f"seed {seed}: the finished run trained at {recorded}, not {precision}; pass --rerun "
        "or another --out",
        flush=True,
    )
    return True


def run_seed(seed: int, args: argparse.Namespace, precision: str | None = None) -> dict | None:
    """Run (or reuse) one seed; ``precision`` is the resolved one (default: ``args``')."""
    precision = precision or resolve_precision(args.precision)
    folder = args.out / f"seed{seed}"
    finished = _finished(folder)
    if args.aggregate_only or (finished is not None and not args.rerun):
        if finished is None:
            print(f"seed {seed}: no finished run in {folder}", flush=True)
            return None
        if _other_precision(seed, finished, precision):
            return None
        return {"seed": seed, **finished}
    command = [
        sys.executable,
        "-m",
        "rulstm_apps.quickstart",
        "--out",
        str(folder),
        "--preset",
        args.preset,
        "--seed",
        str(seed),
        "--precision",
        args.precision,
        "--overwrite",
    ]
    if not args.demo:
        command.append("--no-demo")
    print(f"seed {seed}: {' '.join(command)}", flush=True)
    start_load = load_average()
    log = args.out / f"seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        print(f"seed {seed}: failed with exit code {code}; see {log}", flush=True)
        return None
    if args.precision == "auto" and f"precision auto -> {precision}" not in log.read_text():
        print(f"seed {seed}: the run did not resolve auto to {precision}; see {log}", flush=True)
        return None
    extra = {
        "load": [start_load, load_average()],
        "cpu": cpu_name(),
        "precision": precision,
        "parallel_runs": min(args.jobs, len(args.seeds)),  # runs sharing the CPU with this one
    }
    (folder / "seed_run.json").write_text(json.dumps(extra) + "\n")
    finished = _finished(folder)
    assert finished is not None
    print(f"seed {seed}: done in {finished['seconds'].get('total', 0):.0f} s", flush=True)
    return {"seed": seed, **finished}


def format_table(runs: Sequence[dict], entry: dict) -> str:
    """Per model, top-5 and top-1 at 1 s for each seed, then mean ± std; then wall times."""
    times = entry["times"]
    index = times.index(1.0) if 1.0 in times else len(times) // 2
    seeds = [run["seed"] for run in runs]
    head = (
        f"{'':22}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds) + "   mean ± std  [min - max]"
    )
    lines = [f"accuracy (%) at {times[index]:.2f} s over {len(seeds)} seeds", head]
    for key in ("top5", "top1"):
        for name, values in entry["models"].items():
            row = [run["metrics"]["models"][name][key][index] for run in runs]
            ref = at(values[key], index)
            lines.append(
                f"{name + ' ' + key:<22}"
                + "".join(f"{v:9.2f}" for v in row)
                + f"   {ref['mean']:.2f} ± {ref['std']:.2f}  [{ref['min']:.2f} - {ref['max']:.2f}]"
            )
    ratio = entry["fusion_over_bound"]
    row = [100 * run["metrics"]["fusion_top5_at_1s_over_bound"] for run in runs]
    lines.append(
        f"{'fusion / bound':<22}"
        + "".join(f"{v:9.1f}" for v in row)
        + f"   {ratio['mean']:.1f} ± {ratio['std']:.1f}  [{ratio['min']:.1f} - {ratio['max']:.1f}]"
    )
    lines.append("wall time (s)")
    for step, ref in entry["seconds"].items():
        row = [run["seconds"][step] for run in runs]
        lines.append(
            f"{step:<22}"
            + "".join(f"{v:9.0f}" for v in row)
            + f"   {ref['mean']:.0f} ± {ref['std']:.0f}  [{ref['min']:.0f} - {ref['max']:.0f}]"
        )
    loads = [run.get("load") for run in runs]
    lines.append(
        "1-min load at start/end: "
        + ", ".join(f"seed {s}: {load}" for s, load in zip(seeds, loads))
        + f"; CPU: {runs[0].get('cpu') or cpu_name()}"
    )
    return "\n".join(lines)


@cli_main("quickstart_seeds.py")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    precision = resolve_precision(args.precision)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each seed is its own process
        results = list(pool.map(lambda seed: run_seed(seed, args, precision), args.seeds))
    runs = [run for run in results if run is not None]
    if not runs:
        print("no finished runs to summarise", file=sys.stderr)
        return 1
    entry = aggregate(runs)
    print(format_table(runs, entry))
    if args.write_reference is not None:
        entry.update(
            cpu=runs[0].get("cpu") or cpu_name(),
            measured=date.today().isoformat(),
            demo=args.demo,
            note=args.note,
            parallel_runs=max((run.get("parallel_runs") or 1) for run in runs),
        )
        write_reference(entry, preset=args.preset, precision=precision, path=args.write_reference)
        print(f"reference numbers written to {args.write_reference}")
    return 0 if len(runs) == len(args.seeds) else 1


if __name__ == "__main__":
    sys.exit(main())
