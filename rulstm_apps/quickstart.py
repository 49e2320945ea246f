"""``rulstm-quickstart``: the whole pipeline on a procedural kitchen, on a laptop CPU, offline.

1. generate first-person kitchen videos whose action sequences follow a known recipe model
   (``synthetic_kitchen``), with the Bayes-optimal anticipation accuracy;
2. extract RGB, Flow and Obj features with the real ``rulstm-extract`` CLI (seeded random
   ResNet-18s, DIS flow, a colour-blob detector for the coloured objects);
3. train the RGB, Flow and Obj RU-LSTM branches (sequence completion, then anticipation) and
   MATT fusion with ``rulstm fit`` configs (``configs/quickstart/``);
4. evaluate every model (``rulstm test``) and compare it with the Bayes bound and chance;
5. render ``demo.mp4`` on a validation video with ``rulstm-demo``.

Every command is printed as it runs (``$ rulstm fit ...``, ``$ rulstm test ...``,
``$ rulstm-demo ...``) and saved in ``commands.sh``, so each step can be copied and rerun.
With ``--baselines`` (or ``--preset baselines``) the LSTM, TCN, RU-GRU, Transformer and
attentive-probe baselines are trained on RGB too and appear as extra rows of the table.

Everything lands in one folder (``--out``, default ``quickstart_output``)::

    data/        videos, annotations (RU-LSTM and EPIC formats), recipe.json, bayes.json
    features/    rgb.h5 flow.h5 obj.h5
    runs/        one folder per training stage, with checkpoints/best.ckpt and last.ckpt
    evaluation/  per-model reports (JSON/CSV/PNG)
    metrics.txt  metrics.json  accuracy.png  demo.mp4  timings.json  commands.sh

A folder that already holds these outputs is refused (a rerun would otherwise mix its
checkpoints and features with the earlier run's); ``--overwrite`` deletes them first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from epic_protocol.annotations import read_id_list
from epic_protocol.errors import ArgumentParser, cli_main
from rulstm_apps.quickstart_steps import (
    COMMANDS,
    QuickstartError,
    banner,
    config_path,
    run_rulstm,
    show,
)

MODALITIES = ("rgb", "flow", "obj")
# Baselines on RGB features: report name -> stage config under configs/quickstart/.
BASELINES = {
    "lstm_rgb": "baseline_lstm.yaml",
    "tcn_rgb": "baseline_tcn.yaml",
    "rugru_rgb": "baseline_rugru.yaml",
    "transformer_rgb": "baseline_transformer.yaml",
    "probe_rgb": "baseline_probe.yaml",
}


@dataclass(frozen=True)
class QuickstartPreset:
    """How big the generated kitchen is and how long each stage trains."""

    dataset: str  # a synthetic_kitchen preset
    sc_epochs: int
    anticipation_epochs: int
    fusion_epochs: int
    extract_config: str = "quickstart.yaml"
    baselines: bool = False  # also train and tabulate the baselines (BASELINES)


PRESETS = {
    "tiny": QuickstartPreset("tiny", sc_epochs=1, anticipation_epochs=2, fusion_epochs=1),
    "default": QuickstartPreset("default", sc_epochs=5, anticipation_epochs=20, fusion_epochs=8),
    "large": QuickstartPreset("large", sc_epochs=10, anticipation_epochs=30, fusion_epochs=15),
    "baselines": QuickstartPreset(
        "default", sc_epochs=5, anticipation_epochs=20, fusion_epochs=8, baselines=True
    ),
}


#: What a quickstart run writes into its folder (and ``--overwrite`` deletes).
OUTPUTS = (
    "data",
    "features",
    "runs",
    "evaluation",
    "metrics.txt",
    "metrics.json",
    "accuracy.png",
    "demo.mp4",
    "timings.json",
    "commands.sh",
)


def claim_output_folder(out: Path, *, overwrite: bool) -> None:
    """Refuse a folder holding an earlier run's outputs, or with ``overwrite`` delete them
    (only the quickstart's own outputs: other files in the folder stay)."""
    earlier = [name for name in OUTPUTS if (out / name).exists()]
    if not earlier:
        return
    if not overwrite:
        raise QuickstartError(
            f"{out} already holds a quickstart run ({', '.join(earlier)}); pass --overwrite to "
            "replace it, or choose another --out"
        )
    for name in earlier:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def generate(out: Path, preset: QuickstartPreset, seed: int):
    from synthetic_kitchen.generate import generate_dataset

    return generate_dataset(out / "data", preset=preset.dataset, seed=seed)


def extract(out: Path, data, preset: QuickstartPreset) -> dict[str, Path]:
    """Run the real extraction CLI in a subprocess, on the frames the sampling needs."""
    features = out / "features"
    args = [
        "--videos", str(data.videos_dir),
        "--out", str(features),
        "-c", config_path("extract", preset.extract_config),
        "--obj.palette", str(data.palette_yaml),
        "--annotations", str(data.training_csv), str(data.validation_csv),
        "--only-needed",
    ]  # fmt: skip
    show("rulstm-extract", args)
    command = [sys.executable, "-m", "feature_extraction.cli", *args]
    result = subprocess.run(command, env={**os.environ, "WANDB_MODE": "disabled"})
    if result.returncode != 0:
        raise QuickstartError(f"feature extraction failed (exit code {result.returncode})")
    return {m: features / f"{m}.h5" for m in MODALITIES}


def _common_args(
    data, features: dict[str, Path], modalities: Sequence[str], *, log_dir: Path | None = None
) -> list[str]:
    """Paths and the modality for a stage config (classes and feature sizes are read from
    actions.csv and the feature files by ``rulstm`` itself)."""
    args = [
        "--data.features", json.dumps({m: str(features[m]) for m in modalities}),
        "--data.train_annotations", str(data.training_csv),
        "--data.val_annotations", str(data.validation_csv),
        "--data.actions", str(data.actions_csv),
    ]  # fmt: skip
    if log_dir is not None:
        args += ["--trainer.logger.init_args.save_dir", str(log_dir)]
    if len(modalities) == 1:
        args += ["--model.modality", modalities[0]]
    return args


def train(
    out: Path,
    data,
    features: dict[str, Path],
    preset: QuickstartPreset,
    precision: str = "32-true",
) -> dict[str, Path]:
    """SC then anticipation for each branch, then MATT fusion (and the baselines with
    ``preset.baselines``), at Lightning ``precision``; returns the best checkpoints."""
    runs = out / "runs"
    base = config_path("quickstart", "base.yaml")
    best: dict[str, Path] = {}

    def fit(stage: str, config: str, modalities: Sequence[str], epochs: int, *extra: str) -> Path:
        banner(f"training {stage}")
        run_rulstm(
            [
                "fit",
                "-c",
                base,
                "-c",
                config,
                *_common_args(data, features, modalities, log_dir=runs / "logs"),
                "--trainer.max_epochs",
                str(epochs),
                "--trainer.default_root_dir",
                str(runs / stage),
                "--trainer.precision",
                precision,
                *extra,
            ]  # fmt: skip
        )
        checkpoint = runs / stage / "checkpoints" / "best.ckpt"
        if not checkpoint.is_file():
            raise QuickstartError(f"stage {stage} wrote no best checkpoint in {checkpoint.parent}")
        return checkpoint

    for modality in MODALITIES:
        sc = fit(
            f"{modality}_sc", config_path("quickstart", "sc.yaml"), [modality], preset.sc_epochs
        )
        best[modality] = fit(
            f"{modality}_anticipation",
            config_path("quickstart", "anticipation.yaml"),
            [modality],
            preset.anticipation_epochs,
            "--model.init_checkpoint", str(sc),
        )  # fmt: skip
    best["fusion"] = fit(
        "fusion",
        config_path("quickstart", "fusion.yaml"),
        MODALITIES,
        preset.fusion_epochs,
        "--model.branch_checkpoints", json.dumps({m: str(best[m]) for m in MODALITIES}),
    )  # fmt: skip
    if preset.baselines:
        for name, config in BASELINES.items():
            best[name] = fit(
                f"baseline_{name}",
                config_path("quickstart", config),
                ["rgb"],
                preset.anticipation_epochs,
            )
    return best


def evaluate(out: Path, data, features: dict[str, Path], best: dict[str, Path]) -> dict:
    """``rulstm test`` on the validation split for every model; returns the reports."""
    from rulstm.evaluation import AnticipationEvaluator

    reports = {}
    for name, checkpoint in best.items():
        banner(f"evaluating {name}")
        modalities = MODALITIES if name == "fusion" else ("rgb",) if name in BASELINES else (name,)
        stage = BASELINES.get(name, "fusion.yaml" if name == "fusion" else "anticipation.yaml")
        cli = run_rulstm(
            [
                "test",
                "-c",
                config_path("quickstart", "base.yaml"),
                "-c",
                config_path("quickstart", stage),
                "-c",
                config_path("quickstart", "test.yaml"),
                *_common_args(data, features, modalities),
                "--data.test_annotations",
                str(data.validation_csv),
                "--model.init_checkpoint",
                str(checkpoint),
                "--trainer.callbacks.init_args.name",
                name,
                "--trainer.callbacks.init_args.out_dir",
                str(out / "evaluation"),
                "--trainer.default_root_dir",
                str(out / "runs" / f"test_{name}"),
            ]  # fmt: skip
        )
        evaluator = next(c for c in cli.trainer.callbacks if isinstance(c, AnticipationEvaluator))
        reports[name] = evaluator.report
    return reports


def bound_ratio_interval(
    accuracy: float, segments: int, bound: float, *, z: float = 1.96
) -> tuple[float, float]:
    """95 % interval (``z = 1.96``) of ``accuracy / bound``, both in percent.

    ``accuracy`` is a proportion of ``segments`` independent validation segments: its Wilson
    score interval (Wilson, JASA 1927; it stays inside [0, 1] near 100 %) is divided by the
    expected Bayes bound, which is exact (computed from the recipe, not sampled). With 128
    segments the interval is about +-5 points wide at 89 %; with 512 about +-2.7.
    """
    if segments < 1 or bound <= 0:
        raise ValueError(f"need segments >= 1 and a positive bound, got {segments}, {bound}")
    p = accuracy / 100
    centre = (p + z**2 / (2 * segments)) / (1 + z**2 / segments)
    half = z / (1 + z**2 / segments) * math.sqrt(p * (1 - p) / segments + z**2 / (4 * segments**2))
    return (centre - half) * 100 / bound, (centre + half) * 100 / bound


def summarise(out: Path, data, reports: dict) -> dict:
    """The final table (model vs Bayes bound vs chance), metrics.txt/json and accuracy.png."""
    from rulstm.evaluation import plot_accuracy

    bayes = json.loads(data.bayes_json.read_text())
    first = next(iter(reports.values()))
    times = list(first.times)
    bound_by_time = {round(entry["time"], 4): entry for entry in bayes["per_time"]}
    bound = {
        k: [100 * bound_by_time[round(t, 4)]["action_expected"][k] for t in times]
        for k in ("top1", "top5")
    }
    # The Bayes classifier scored on the sampled labels: the same sampling noise as the models.
    realised = {
        k: [100 * bound_by_time[round(t, 4)]["action_realised"][k] for t in times]
        for k in ("top1", "top5")
    }
    chance = {k: 100 * bayes["chance"]["prior_expected"][k] for k in ("top1", "top5")}
    lines = [
        f"Action anticipation on the procedural kitchen: {first.num_evaluated} validation "
        "segments, accuracy (%) by anticipation time",
        f"{'':24}" + "".join(f"{t:>7.2f}s" for t in times),
    ]
    table: dict[str, dict[str, list[float]]] = {}
    for metric, key in (("top5", "top5"), ("top1", "top1")):
        lines.append(f"-- {key} action accuracy")
        for name, report in reports.items():
            values = list(report.get("action", metric).values)
            table.setdefault(name, {})[key] = values
            lines.append(f"{name:<24}" + "".join(f"{v:8.2f}" for v in values))
        lines.append(f"{'Bayes bound (expected)':<24}" + "".join(f"{v:8.2f}" for v in bound[key]))
        lines.append(
            f"{'Bayes bound (realised)':<24}" + "".join(f"{v:8.2f}" for v in realised[key])
        )
        lines.append(f"{'chance (best prior)':<24}" + "".join(f"{chance[key]:8.2f}" for _ in times))
    index = times.index(1.0) if 1.0 in times else len(times) // 2
    fusion_top5 = table["fusion"]["top5"][index]
    ratio = fusion_top5 / bound["top5"][index]
    low, high = bound_ratio_interval(fusion_top5, first.num_evaluated, bound["top5"][index])
    lines.append(
        f"fusion top-5 at 1 s: {fusion_top5:.2f} % = {100 * ratio:.1f} % of the Bayes bound "
        f"({bound['top5'][index]:.2f} % expected; {100 * fusion_top5 / realised['top5'][index]:.1f} %"
        f" of its realised {realised['top5'][index]:.2f} %); chance {chance['top5']:.2f} %"
    )
    lines.append(
        f"95 % interval of that ratio: {100 * low:.1f} - {100 * high:.1f} % (Wilson interval of "
        f"the top-5 accuracy over {first.num_evaluated} segments, divided by the exact expected "
        "bound)"
    )
    text = "\n".join(lines)
    (out / "metrics.txt").write_text(text + "\n")
    summary = {
        "times": times,
        "models": table,
        "bayes_expected": bound,
        "bayes_realised": realised,
        "chance_prior_expected": chance,
        "fusion_top5_at_1s_over_bound": ratio,
        "fusion_top5_at_1s_over_bound_95ci": [low, high],
        "validation_segments": first.num_evaluated,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    references = {
        "Bayes bound": {
            ("action", "top5"): bound["top5"],
            ("action", "top1"): bound["top1"],
        },
        "chance": {
            ("action", "top5"): [chance["top5"]] * len(times),
            ("action", "top1"): [chance["top1"]] * len(times),
        },
    }
    plot_accuracy(
        reports, out / "accuracy.png", title="Quickstart: procedural kitchen", references=references
    )
    banner("results")
    print(text, flush=True)
    return summary


def demo(out: Path, data, best: dict[str, Path]) -> Path:
    """``rulstm-demo`` on the first validation video, with the fusion model."""
    from rulstm_apps.demo import main as demo_main

    video_id = read_id_list(data.validation_videos_csv)[0]
    path = out / "demo.mp4"
    banner(f"demo on validation video {video_id}")
    args = [
            "--video",
            str(data.video(video_id)),
            "--checkpoint",
            str(best["fusion"]),
            "--extract-config",
            config_path("extract", "quickstart.yaml"),
            "--palette",
            str(data.palette_yaml),
            "--annotations",
            str(data.validation_csv),
            "--actions",
            str(data.actions_csv),
            "--verb-classes",
            str(data.verb_classes_csv),
            "--noun-classes",
            str(data.noun_classes_csv),
            "--out",
            str(path),
        ]  # fmt: skip
    show("rulstm-demo", args)
    exit_code = demo_main(args)
    if exit_code not in (0, None) or not path.is_file():
        raise QuickstartError(f"the demo failed (exit code {exit_code})")
    return path


@dataclass(frozen=True)
class QuickstartResult:
    out: Path
    checkpoints: dict[str, Path]
    summary: dict
    seconds: dict[str, float]


def training_precision(requested: str) -> str:
    """The Lightning precision the quickstart trains at (on CPU, as configs/quickstart/ say):
    ``auto`` resolves by the precision rule (:mod:`epic_protocol.precision`: bf16-mixed only
    on a CPU with native bf16); an explicit bf16-mixed on a CPU that emulates bf16 warns once."""
    from epic_protocol import precision

    if requested == "auto":
        resolved = precision.auto_precision("cpu")
        print(f"precision auto -> {resolved} ({precision.cpu_description()})", flush=True)
        return resolved
    if requested.startswith("bf16"):
        precision.warn_if_emulated("cpu", what=f"--precision {requested}")
    return requested


def run(
    out: str | Path,
    *,
    preset: str = "default",
    seed: int = 0,
    with_demo: bool = True,
    baselines: bool = False,
    overwrite: bool = False,
    precision: str = "auto",
) -> QuickstartResult:
    """Run every step into ``out``; raises :class:`QuickstartError` when ``out`` holds an
    earlier run and ``overwrite`` is false, or when a step fails."""
    if preset not in PRESETS:
        raise QuickstartError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    settings = PRESETS[preset]
    if baselines and not settings.baselines:
        settings = replace(settings, baselines=True)
    COMMANDS.clear()
    out = Path(out).resolve()
    claim_output_folder(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")
    import torch

    # The quickstart's models are small: one intra-op thread is several times faster than two
    # threads contending for a 2-core laptop (measured: 2.0 s vs 8.0 s per training epoch).
    torch.set_num_threads(1)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, function, *args):
        begin = time.perf_counter()
        value = function(*args)
        seconds[name] = round(time.perf_counter() - begin, 1)
        return value

    precision = training_precision(precision)
    banner(f"generating the procedural kitchen ({settings.dataset} preset, seed {seed})")
    data = timed("generate", generate, out, settings, seed)
    banner("extracting features with rulstm-extract")
    features = timed("extract", extract, out, data, settings)
    best = timed("train", train, out, data, features, settings, precision)
    reports = timed("evaluate", evaluate, out, data, features, best)
    summary = timed("summarise", summarise, out, data, reports)
    if with_demo:
        timed("demo", demo, out, data, best)
    seconds["total"] = round(time.perf_counter() - started, 1)
    from rulstm_apps.quickstart_reference import compare_lines

    print("\n".join(compare_lines(summary, seconds, preset=preset, precision=precision)))
    (out / "commands.sh").write_text(
        "# The commands rulstm-quickstart ran, in order.\n" + "\n".join(COMMANDS) + "\n"
    )
    (out / "timings.json").write_text(json.dumps(seconds, indent=1) + "\n")
    print(
        "\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
        f"\noutputs in {out}: data/, features/, runs/, evaluation/, metrics.txt, metrics.json, "
        "accuracy.png, commands.sh, timings.json" + (", demo.mp4" if with_demo else ""),
        flush=True,
    )
    return QuickstartResult(out, best, summary, seconds)


DESCRIPTION = """\
The whole pipeline on a procedural kitchen, on a laptop CPU, offline: generate
first-person kitchen videos with a known recipe (and so a known Bayes-optimal
accuracy), extract RGB, Flow and Obj features with rulstm-extract, train the three
RU-LSTM branches and MATT fusion with rulstm fit, evaluate every model against the
Bayes bound and chance, and render demo.mp4 with rulstm-demo."""

EPILOG = """\
outputs (in --out):
  data/        videos, annotations (RU-LSTM and EPIC formats), recipe.json, bayes.json
  features/    rgb.h5, flow.h5, obj.h5
  runs/        one folder per training stage, with checkpoints/best.ckpt and last.ckpt
  evaluation/  per-model reports (JSON, CSV, PNG)
  metrics.txt, metrics.json, accuracy.png, demo.mp4, timings.json, commands.sh
               (every command the run ran, in order, to copy and rerun one step)

Errors end the run with one line "rulstm-quickstart: error: ..." and exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="rulstm-quickstart",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("quickstart_output"),
        help="output folder (default: %(default)s); one that holds an earlier run is refused "
        "unless --overwrite is given",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="size of the generated kitchen and length of training (default: %(default)s). "
        "tiny is used by the tests; large renders more data and trains longer; baselines is "
        "default plus the RGB baselines (LSTM, TCN, RU-GRU, Transformer, attentive probe). Measured times and "
        "accuracies, with their spread over seeds and the CPU they were measured on: "
        "docs/quickstart.md; each run prints how it compares",
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also train the RGB baselines (LSTM, TCN, RU-GRU, Transformer, attentive probe) with any preset",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the generated kitchen: its recipe and every video (default: %(default)s); "
        "training is seeded by the configs in configs/quickstart/",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "32-true", "bf16-mixed"],
        default="auto",
        help="training precision (default: %(default)s: bf16-mixed on a CPU with native bf16, "
        "AVX-512 BF16 or AMX, where it is faster; 32-true elsewhere, where bf16 is emulated "
        "and many times slower)",
    )
    parser.add_argument(
        "--task",
        choices=["anticipation", "lta"],
        default="anticipation",
        help="anticipation (default): the next action, the pipeline above; lta: Ego4D-style "
        "long-term anticipation of the next 20 actions (rulstm_apps/quickstart_lta.py; its "
        "own kitchen of 12 videos x 60 actions, RGB only; --preset, --baselines, --precision "
        "and --no-demo do not apply)",
    )
    parser.add_argument("--no-demo", action="store_true", help="skip rendering demo.mp4")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the outputs of an earlier run in --out (listed below) before starting",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback (also: RULSTM_DEBUG=1)",
    )
    return parser


@cli_main("rulstm-quickstart")
def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a step failed or --out holds an earlier run, 2 bad arguments."""
    args = build_parser().parse_args(argv)
    if args.task == "lta":
        from rulstm_apps.quickstart_lta import run_lta

        run_lta(args.out, seed=args.seed, overwrite=args.overwrite)
        return 0
    run(
        args.out,
        preset=args.preset,
        seed=args.seed,
        with_demo=not args.no_demo,
        baselines=args.baselines,
        overwrite=args.overwrite,
        precision=args.precision,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
