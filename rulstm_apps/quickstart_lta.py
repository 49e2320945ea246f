"""``rulstm-quickstart --task lta``: Ego4D-style long-term anticipation on the procedural kitchen.

1. generate the ``lta`` kitchen (12 videos of 60 actions; the generator also writes Ego4D's
   ``fho_lta_{train,val}.json`` and ``fho_lta_taxonomy.json``, read by the real reader);
2. extract RGB features with ``rulstm-extract --only-needed`` on the LTA files (the 4 step
   frames of every action, keyed by clip_uid = video id);
3. ``rulstm fit`` the rolling-unrolling forecaster (``configs/ego4d_lta/base.yaml`` +
   ``forecaster.yaml`` + ``quickstart.yaml``);
4. ``rulstm predict`` on the validation windows -> ``outputs.json`` (official layout), scored by
   ``rulstm-score ego4d-lta``;
5. print the model's ED@20 beside a prior baseline (the most frequent training action at each
   future position) and an oracle reference (K = 5 sequences sampled from the true recipe
   after each window's last observed action, scored the same way: a reference, not a bound,
   since a model can beat it).

Outputs (in ``--out``)::

    data/ (videos, data/ego4d/fho_lta_*.json), features/rgb.h5, runs/lta/, outputs.json,
    lta_metrics.json, lta_metrics.txt, commands.sh, timings.json
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from epic_protocol.ego4d_lta import read_lta_windows, read_taxonomy
from rulstm_apps.quickstart_steps import (
    COMMANDS,
    QuickstartError,
    banner,
    config_path,
    run_rulstm,
    show,
)

K = 5

#: What a run writes into its folder (``--overwrite`` deletes only these).
OUTPUTS = (
    "data",
    "features",
    "runs",
    "outputs.json",
    "lta_metrics.json",
    "lta_metrics.txt",
    "commands.sh",
    "timings.json",
)


def _extract(out: Path, data) -> Path:
    import subprocess

    features = out / "features"
    args = [
        "--videos", str(data.videos_dir),
        "--out", str(features),
        "-c", config_path("extract", "quickstart.yaml"),
        "--modalities", "rgb",
        "--annotations", str(data.lta_train_json), str(data.lta_val_json),
        "--only-needed",
    ]  # fmt: skip
    show("rulstm-extract", args)
    command = [sys.executable, "-m", "feature_extraction.cli", *args]
    result = subprocess.run(command, env={**os.environ, "WANDB_MODE": "disabled"})
    if result.returncode != 0:
        raise QuickstartError(f"feature extraction failed (exit code {result.returncode})")
    return features / "rgb.h5"


def _data_args(data, features: Path) -> list[str]:
    return [
        "--data.features", str(features),
        "--data.taxonomy", str(data.lta_taxonomy_json),
        "--data.train", str(data.lta_train_json),
        "--data.val", str(data.lta_val_json),
    ]  # fmt: skip


def prior_sequences(train_windows, num_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """The most frequent training (verb, noun) at each future position, for every window:
    verb and noun int64 (W, 1, Z)."""
    z = len(train_windows[0].future)
    verbs = np.empty(z, dtype=np.int64)
    nouns = np.empty(z, dtype=np.int64)
    for position in range(z):
        counts = Counter(
            (int(w.future_verbs[position]), int(w.future_nouns[position])) for w in train_windows
        )
        (verbs[position], nouns[position]), _ = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return (
        np.broadcast_to(verbs, (num_windows, 1, z)).copy(),
        np.broadcast_to(nouns, (num_windows, 1, z)).copy(),
    )


def summarise_lta(out: Path, data, outputs: Path, seed: int) -> dict[str, Any]:
    """Score the model, the prior baseline and the oracle reference; write the tables."""
    from rulstm.evaluation.lta import score_lta, score_predictions_file
    from rulstm.evaluation.score_cli import main as score_main
    from synthetic_kitchen.lta import oracle_sequences
    from synthetic_kitchen.recipe import RecipeModel

    taxonomy = read_taxonomy(data.lta_taxonomy_json)
    train = read_lta_windows(data.lta_train_json, taxonomy=taxonomy)
    val = read_lta_windows(data.lta_val_json, taxonomy=taxonomy)
    args = ["ego4d-lta", "--annotations", str(data.lta_val_json), "--predictions", str(outputs)]
    show("rulstm-score", args)
    if score_main(args) != 0:
        raise QuickstartError(f"rulstm-score failed on {outputs}")
    model = score_predictions_file(outputs, val)
    labels = (np.stack([w.future_verbs for w in val]), np.stack([w.future_nouns for w in val]))
    prior = score_lta(*prior_sequences(train, len(val)), *labels)
    recipe = RecipeModel.load(data.recipe_json)
    oracle_verbs, oracle_nouns = oracle_sequences(
        recipe,
        np.array([w.observed[-1].verb for w in val]),
        np.array([w.observed[-1].noun for w in val]),
        num_future_actions=len(val[0].future),
        k=K,
        seed=seed,
    )
    oracle = score_lta(oracle_verbs, oracle_nouns, *labels)
    z = model.num_future_actions
    rows = {"model (RU-LSTM forecaster, K=5)": model, "prior (most frequent, K=1)": prior,
            "oracle reference (recipe, K=5)": oracle}  # fmt: skip
    lines = [
        f"Long-term anticipation on the procedural kitchen: {model.num_windows} validation "
        f"windows (N=2 observed, Z={z}); edit distance, lower is better",
        f"{'':34s}" + "".join(f"{h + ' ED@' + str(z):>14s}" for h in ("verb", "noun", "action*")),
    ]
    for name, scores in rows.items():
        lines.append(
            f"{name:34s}" + "".join(f"{scores.ed(h):14.3f}" for h in ("verb", "noun", "action"))
        )
    lines += [
        "* action: (verb, noun) pairs, this project's own metric (Ego4D scores verb and noun)",
        "The oracle samples from the true recipe: a reference, not a bound (a model can beat it).",
    ]
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    summary = {name: scores.as_dict() for name, scores in rows.items()}
    (out / "lta_metrics.txt").write_text(table + "\n")
    (out / "lta_metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def run_lta(
    out: str | Path,
    *,
    seed: int = 0,
    preset: Any = "lta",
    epochs: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Every step into ``out`` (see the module doc); ``preset``: a synthetic-kitchen preset
    name or ``DatasetSize`` with at least 22 actions per video."""
    import torch

    from synthetic_kitchen.generate import generate_dataset

    COMMANDS.clear()
    out = Path(out).resolve()
    earlier = [name for name in OUTPUTS if (out / name).exists()]
    if earlier and not overwrite:
        raise QuickstartError(
            f"{out} already holds a quickstart run ({', '.join(earlier)}); pass --overwrite to "
            "replace it, or choose another --out"
        )
    for name in earlier:  # only the run's own outputs: other files in the folder stay
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.set_num_threads(1)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, function, *args, **kwargs):
        begin = time.perf_counter()
        value = function(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - begin, 1)
        return value

    banner(f"generating the procedural kitchen for long-term anticipation (seed {seed})")
    data = timed("generate", generate_dataset, out / "data", preset=preset, seed=seed)
    banner("extracting RGB features with rulstm-extract (LTA step frames only)")
    features = timed("extract", _extract, out, data)
    base = config_path("ego4d_lta", "base.yaml")
    stage = [
        base,
        config_path("ego4d_lta", "forecaster.yaml"),
        config_path("ego4d_lta", "quickstart.yaml"),
    ]
    configs = [arg for path in stage for arg in ("-c", path)]
    root = out / "runs" / "lta"
    extra = ["--trainer.max_epochs", str(epochs)] if epochs is not None else []
    banner("training the rolling-unrolling forecaster")
    timed(
        "train",
        run_rulstm,
        ["fit", *configs, *_data_args(data, features), "--trainer.default_root_dir", str(root),
         "--trainer.logger.init_args.save_dir", str(out / "runs" / "logs"), *extra],
    )  # fmt: skip
    best = root / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise QuickstartError(f"training wrote no best checkpoint in {best.parent}")
    banner("predicting the validation windows (outputs.json)")
    outputs = out / "outputs.json"
    timed(
        "predict",
        run_rulstm,
        ["predict", "-c", base, "-c", config_path("ego4d_lta", "predict.yaml"), "-c",
         config_path("ego4d_lta", "quickstart.yaml"), *_data_args(data, features),
         "--data.predict_split", "val", "--model.init_checkpoint", str(best),
         "--trainer.logger", "false", "--trainer.callbacks.init_args.out_file", str(outputs),
         "--trainer.default_root_dir", str(out / "runs" / "predict"),
         "--return_predictions", "false"],
    )  # fmt: skip
    if not outputs.is_file():
        raise QuickstartError(f"predict wrote no {outputs}")
    summary = timed("summarise", summarise_lta, out, data, outputs, seed)
    seconds["total"] = round(time.perf_counter() - started, 1)
    (out / "commands.sh").write_text(
        "# The commands rulstm-quickstart --task lta ran, in order.\n" + "\n".join(COMMANDS) + "\n"
    )
    (out / "timings.json").write_text(json.dumps(seconds, indent=1) + "\n")
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), flush=True)
    return summary
