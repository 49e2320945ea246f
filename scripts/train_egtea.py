"""Train and evaluate RU-LSTM on every split of a dataset; report mean and spread.

The EGTEA Gaze+ recipe by default (``configs/egtea``, its three official splits), or your own
dataset: ``--configs configs/mydata``, a copy of ``configs/egtea`` (docs/own_dataset.md).
For each split N (``<configs>/splitN.yaml``), with the features of each modality in
``<features>/splitN/<modality>.h5`` (one feature set per split, as the EGTEA features) or
``<features>/<modality>.h5`` (one set for every split):

1. ``<m>_sc`` -> ``<m>_anticipation`` for each modality m (sequence completion, then
   anticipation from its best checkpoint);
2. ``fusion``: MATT over the anticipation bests;
3. ``rulstm test`` of each modality and fusion (``test.yaml``) on the split's validation file,
   which writes ``<out>/splitN/<model>.json``.

Then every metric (top-1 / top-5 accuracy and class-mean top-5 recall, verb / noun / action, at
each anticipation time) is summarised over the splits as mean and sample standard deviation
(``n - 1``), printed and written to ``<out>/summary.json`` and ``<out>/summary.csv``. Every
``rulstm`` command is printed before it runs, so any step can be rerun by hand.

    python scripts/train_egtea.py                              # EGTEA Gaze+, 3 splits
    python scripts/train_egtea.py --configs configs/mydata     # your own dataset's splits
    python scripts/train_egtea.py --splits 1 -- --data.num_workers 0 --trainer.max_epochs 5
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

from epic_protocol.errors import ArgumentParser, cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "egtea"
MODALITIES = ("rgb", "flow")
#: Titles of the summary table per config folder name (other folders: the folder's name).
TITLES = {"egtea": "EGTEA Gaze+"}
MODELS = (*MODALITIES, "fusion")
METRICS = ("top1", "top5", "recall5")
TASKS = ("verb", "noun", "action")


def _rulstm(args: list[str]):
    """Print the command, then run it in this process (``rulstm`` is LightningCLI)."""
    from rulstm.cli import build_cli

    print("$ rulstm " + shlex.join(args), flush=True)
    return build_cli(args)


def _configs(split: int, *stage: str, configs: Path = CONFIGS) -> list[str]:
    files = ["base.yaml", f"split{split}.yaml", *stage]
    return [arg for name in files for arg in ("-c", str(configs / name))]


def config_splits(configs: Path) -> list[int]:
    """The split numbers N of the ``splitN.yaml`` files in ``configs``, in order."""
    numbers = (p.stem[len("split") :] for p in configs.glob("split*.yaml"))
    return sorted(int(n) for n in numbers if n.isdigit())


def check_configs(configs: Path, splits: Sequence[int], modalities: Sequence[str]) -> None:
    """Raise FileNotFoundError naming the first config file the sequence needs that
    ``configs`` lacks."""
    names = ["base.yaml", "fusion.yaml", "test.yaml", *(f"split{n}.yaml" for n in splits)]
    names += [f"{m}_{stage}.yaml" for m in modalities for stage in ("sc", "anticipation")]
    for name in names:
        if not (configs / name).is_file():
            raise FileNotFoundError(
                f"{configs / name} not found: --configs needs base.yaml, splitN.yaml per "
                "split, <modality>_sc.yaml and <modality>_anticipation.yaml per modality, "
                "fusion.yaml and test.yaml (copy configs/egtea, see docs/own_dataset.md)"
            )


def split_features(features: Path, split: int, modalities: Sequence[str]) -> dict[str, str]:
    """modality -> feature file of ``split``: ``<features>/splitN/<m>.h5``, else the files
    shared by every split, ``<features>/<m>.h5``. Raises FileNotFoundError naming both."""
    per_split, shared = features / f"split{split}", features
    for root in (per_split, shared):
        paths = {m: root / f"{m}.h5" for m in modalities}
        if all(path.is_file() for path in paths.values()):
            return {m: str(path) for m, path in paths.items()}
    missing = next(m for m in modalities if not (per_split / f"{m}.h5").is_file())
    raise FileNotFoundError(
        f"{per_split / (missing + '.h5')} not found (nor {shared / (missing + '.h5')}): "
        f"extract features at the configs' fps into {per_split} or {shared} (rulstm-extract) "
        "or import them (rulstm-import features)"
    )


def train_split(
    split: int,
    *,
    features: Path,
    runs: Path,
    out: Path,
    extra: Sequence[str] = (),
    overwrite: bool = False,
    configs: Path = CONFIGS,
    modalities: Sequence[str] = MODALITIES,
) -> dict[str, Path]:
    """Every stage of one split; returns the reports written (model -> JSON path).
    ``overwrite`` lets each ``rulstm fit`` replace the checkpoints of an earlier run (it
    refuses such a stage folder otherwise)."""
    paths = split_features(features, split, modalities)
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
                *_configs(split, f"{stage}.yaml", configs=configs),
                "--data.features",
                json.dumps(features_arg),
                "--trainer.default_root_dir",
                str(run_dir / stage),
                *(["--overwrite", "true"] if overwrite else []),
                *stage_extra,
                *extra,
            ]  # fmt: skip
        )

    for modality in modalities:
        single = {modality: paths[modality]}
        fit(f"{modality}_sc", single)
        fit(f"{modality}_anticipation", single, "--model.init_checkpoint", best(f"{modality}_sc"))
    branches = {m: best(f"{m}_anticipation") for m in modalities}
    fit("fusion", paths, "--model.branch_checkpoints", json.dumps(branches))

    reports = {}
    for model in (*modalities, "fusion"):
        stage = "fusion" if model == "fusion" else f"{model}_anticipation"
        features_arg = paths if model == "fusion" else {model: paths[model]}
        _rulstm(
            [
                "test",
                *_configs(split, f"{stage}.yaml", "test.yaml", configs=configs),
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


def format_summary(summary: dict, title: str = "EGTEA Gaze+") -> str:
    times = summary["times"]
    splits = ", ".join(map(str, summary["splits"]))
    lines = [
        f"{title} action anticipation, splits {splits}: mean ± standard deviation (%)",
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


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="train_egtea.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""
options after "--" go unchanged to every rulstm command (fit and test), after the configs,
so they override them; see `rulstm fit --help`. For example:
  python scripts/train_egtea.py -- --data.num_workers 0 --trainer.max_epochs 5
  python scripts/train_egtea.py -- --trainer.logger lightning.pytorch.loggers.CSVLogger
Every rulstm command is printed before it runs (rerun a step by hand).

layout, for --configs configs/NAME (defaults in brackets):
  features  [data/NAME]        splitN/<modality>.h5 per split, or <modality>.h5 for all
  runs      [runs/NAME]        splitN/<stage>/checkpoints/{best,last}.ckpt, config.yaml, logs
  out       [evaluation/NAME]  splitN/<model>.{json,csv,png}, summary.{json,csv}
""",
    )
    parser.add_argument(
        "--configs",
        type=Path,
        default=CONFIGS,
        metavar="DIR",
        help="config folder: base.yaml, splitN.yaml per split, <modality>_{sc,anticipation}"
        ".yaml, fusion.yaml, test.yaml (default: configs/egtea; your own dataset: a copy)",
    )
    parser.add_argument(
        "--features",
        type=Path,
        metavar="DIR",
        help="feature folder: DIR/splitN/<modality>.h5 per split, or DIR/<modality>.h5 "
        "shared by every split (default: data/NAME for --configs configs/NAME)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        metavar="DIR",
        help="run folder, one trainer.default_root_dir per split and stage: "
        "DIR/splitN/<stage> (default: runs/NAME)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="evaluation reports DIR/splitN/<model>.json and the summary "
        "DIR/summary.{json,csv} (default: evaluation/NAME)",
    )
    parser.add_argument(
        "--splits",
        type=int,
        nargs="+",
        metavar="N",
        help="the splits to run (default: every splitN.yaml in --configs; EGTEA: 1 2 3)",
    )
    parser.add_argument(
        "--modalities",
        nargs="+",
        default=list(MODALITIES),
        metavar="M",
        help="the branches to train and fuse (default: rgb flow, the EGTEA features)",
    )
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="train nothing: summarise the reports already in --out",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoints an earlier run left in --runs (rulstm fit refuses them)",
    )
    return parser


@cli_main("train_egtea.py")
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    args = build_parser().parse_args(argv)
    name = args.configs.resolve().name
    features = args.features or Path("data") / name
    runs = args.runs or Path("runs") / name
    out = args.out or Path("evaluation") / name
    models = [*args.modalities, "fusion"]
    try:
        splits = args.splits or config_splits(args.configs)
        if not splits:
            raise FileNotFoundError(f"no splitN.yaml in {args.configs}: give --splits")
        if not args.aggregate_only:
            check_configs(args.configs, splits, args.modalities)
            for split in splits:
                print(f"\n=== {TITLES.get(name, name)} split {split} ===", flush=True)
                train_split(
                    split,
                    features=features,
                    runs=runs,
                    out=out,
                    extra=extra,
                    overwrite=args.overwrite,
                    configs=args.configs,
                    modalities=args.modalities,
                )
        summary = aggregate(out, splits, models)
    except (FileNotFoundError, ValueError) as error:
        print(f"train_egtea.py: error: {error}", file=sys.stderr)
        return 1
    write_summary(summary, out)
    print("\n" + format_summary(summary, TITLES.get(name, name)), flush=True)
    print(f"\nwritten: {out / 'summary.json'}, {out / 'summary.csv'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
