"""Train and evaluate RU-LSTM on the three EGTEA Gaze+ splits; report mean and spread.

For each split N (features in ``<features>/splitN/{rgb,flow}.h5``, 30 fps like the split files):

1. ``rgb_sc`` -> ``rgb_anticipation`` and ``flow_sc`` -> ``flow_anticipation`` (sequence
   completion, then anticipation from its best checkpoint);
2. ``fusion``: MATT over the two anticipation bests;
3. ``rulstm test`` of rgb, flow and fusion on the split's validation file, which writes
   ``<out>/splitN/{rgb,flow,fusion}.json``.

Then every metric (top-1 / top-5 accuracy and class-mean top-5 recall, verb / noun / action, at
each anticipation time) is summarised over the splits as mean and sample standard deviation
(``n - 1``), printed and written to ``<out>/summary.json`` and ``<out>/summary.csv``. Every
``rulstm`` command is printed before it runs, so any step can be rerun by hand.

    python scripts/train_egtea.py                              # the whole recipe, 3 splits
    python scripts/train_egtea.py --splits 1 -- --data.num_workers 8   # options after -- go
                                                               # to every rulstm command
    python scripts/train_egtea.py --aggregate-only             # summarise existing reports
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "egtea"
MODALITIES = ("rgb", "flow")
MODELS = (*MODALITIES, "fusion")
METRICS = ("top1", "top5", "recall5")
TASKS = ("verb", "noun", "action")


def _rulstm(args: list[str]):
    """Print the command, then run it in this process (``rulstm`` is LightningCLI)."""
    from rulstm.cli import build_cli

    print("$ rulstm " + shlex.join(args), flush=True)
    return build_cli(args)


def _configs(split: int, *stage: str) -> list[str]:
    files = ["base.yaml", f"split{split}.yaml", *stage]
    return [arg for name in files for arg in ("-c", str(CONFIGS / name))]


def train_split(
    split: int,
    *,
    features: Path,
    runs: Path,
    out: Path,
    extra: Sequence[str] = (),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Every stage of one split; returns the reports written (model -> JSON path).
    ``overwrite`` lets each ``rulstm fit`` replace the checkpoints of an earlier run (it
    refuses such a stage folder otherwise)."""
    root = features / f"split{split}"
    paths = {m: str(root / f"{m}.h5") for m in MODALITIES}
    for path in paths.values():
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{path} not found: extract EGTEA features at 30 fps into {root} "
                "(rulstm-extract) or import the authors' LMDBs (rulstm-import features)"
            )
    run_dir = runs / f"split{split}"

    def best(stage: str) -> str:
        path = run_dir / stage / "checkpoints" / "best.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"stage {stage} of split {split} wrote no {path}")
        return str(path)

    def fit(stage: str, features_arg: dict[str, str], *stage_extra: str) -> None:
        _rulstm(
            [
                "fit",
                *_configs(split, f"{stage}.yaml"),
                "--data.features",
                json.dumps(features_arg),
                "--trainer.default_root_dir",
                str(run_dir / stage),
                *(["--overwrite", "true"] if overwrite else []),
                *stage_extra,
                *extra,
            ]  # fmt: skip
        )

    for modality in MODALITIES:
        single = {modality: paths[modality]}
        fit(f"{modality}_sc", single)
        fit(f"{modality}_anticipation", single, "--model.init_checkpoint", best(f"{modality}_sc"))
    branches = {m: best(f"{m}_anticipation") for m in MODALITIES}
    fit("fusion", paths, "--model.branch_checkpoints", json.dumps(branches))

    reports = {}
    for model in MODELS:
        stage = "fusion" if model == "fusion" else f"{model}_anticipation"
        features_arg = paths if model == "fusion" else {model: paths[model]}
        _rulstm(
            [
                "test",
                *_configs(split, f"{stage}.yaml", "test.yaml"),
                "--data.features",
                json.dumps(features_arg),
                "--model.init_checkpoint",
                best(stage),
                "--trainer.callbacks.init_args.name",
                model,
                "--trainer.callbacks.init_args.out_dir",
                str(out / f"split{split}"),
                "--trainer.default_root_dir",
                str(run_dir / f"test_{model}"),
                *extra,
            ]  # fmt: skip
        )
        reports[model] = out / f"split{split}" / f"{model}.json"
    return reports


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(out: Path, splits: Sequence[int], models: Sequence[str] = MODELS) -> dict:
    """Mean and sample standard deviation over splits of every overall metric series.

    Reads ``<out>/splitN/<model>.json`` (``rulstm test`` reports). Returns
    ``{"splits": [...], "times": [...], "models": {model: {"task/metric": {"mean": [...],
    "std": [...], "per_split": [[...], ...]}}}}``. Raises FileNotFoundError naming a missing
    report and ValueError when the splits' anticipation times differ.
    """
    summary: dict = {"splits": list(splits), "times": None, "models": {}}
    for model in models:
        per_split = []
        for split in splits:
            path = out / f"split{split}" / f"{model}.json"
            if not path.is_file():
                raise FileNotFoundError(f"no report {path}: run the split first")
            report = json.loads(path.read_text())
            if summary["times"] is None:
                summary["times"] = report["times"]
            elif report["times"] != summary["times"]:
                raise ValueError(f"{path}: anticipation times differ from the other splits")
            per_split.append(
                {
                    f"{s['task']}/{s['metric']}": [
                        float("nan") if v is None else v for v in s["values"]
                    ]
                    for s in report["series"]
                    if s["subset"] == "overall"
                }
            )
        series = {}
        for task in TASKS:
            for metric in METRICS:
                key = f"{task}/{metric}"
                columns = list(zip(*(split_values[key] for split_values in per_split)))
                stats = [_mean_std(list(column)) for column in columns]
                series[key] = {
                    "mean": [m for m, _ in stats],
                    "std": [s for _, s in stats],
                    "per_split": [split_values[key] for split_values in per_split],
                }
        summary["models"][model] = series
    return summary


def format_summary(summary: dict) -> str:
    times = summary["times"]
    splits = ", ".join(map(str, summary["splits"]))
    lines = [
        f"EGTEA Gaze+ action anticipation, splits {splits}: mean ± standard deviation (%)",
        f"{'':34}" + "".join(f"{t:>14.2f}s" for t in times),
    ]
    for model, series in summary["models"].items():
        lines.append(f"-- {model}")
        for key, stats in series.items():
            cells = "".join(
                f"{m:>8.2f} ±{s:>5.2f}" if not math.isnan(s) else f"{m:>8.2f}       "
                for m, s in zip(stats["mean"], stats["std"])
            )
            lines.append(f"{key:<34}{cells}")
    return "\n".join(lines)


def write_summary(summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(summary).replace("NaN", "null"))
    (out / "summary.json").write_text(json.dumps(clean, indent=1) + "\n")
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "task", "metric", "time_s", "mean", "std", "n_splits"])
        for model, series in summary["models"].items():
            for key, stats in series.items():
                task, metric = key.split("/")
                for time, mean, std in zip(summary["times"], stats["mean"], stats["std"]):
                    writer.writerow(
                        [
                            model,
                            task,
                            metric,
                            time,
                            f"{mean:.4f}",
                            f"{std:.4f}",
                            len(summary["splits"]),
                        ]
                    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="train_egtea.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, default=Path("data/egtea"))
    parser.add_argument("--runs", type=Path, default=Path("runs/egtea"))
    parser.add_argument("--out", type=Path, default=Path("evaluation/egtea"))
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoints an earlier run left in --runs (rulstm fit refuses them)",
    )
    args = parser.parse_args(argv)
    try:
        if not args.aggregate_only:
            for split in args.splits:
                print(f"\n=== EGTEA Gaze+ split {split} ===", flush=True)
                train_split(
                    split,
                    features=args.features,
                    runs=args.runs,
                    out=args.out,
                    extra=extra,
                    overwrite=args.overwrite,
                )
        summary = aggregate(args.out, args.splits)
    except (FileNotFoundError, ValueError) as error:
        print(f"train_egtea.py: error: {error}", file=sys.stderr)
        return 1
    write_summary(summary, args.out)
    print("\n" + format_summary(summary), flush=True)
    print(f"\nwritten: {args.out / 'summary.json'}, {args.out / 'summary.csv'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
