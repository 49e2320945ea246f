"""EGTEA Gaze+: every config under configs/egtea runs (fast_dev_run) on the shipped splits and
vocabulary against generated feature files, and scripts/train_egtea.py trains, evaluates and
summarises the three splits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from epic_protocol.annotations import read_rulstm_split
from epic_protocol.features import FeatureFileWriter
from rulstm.cli import build_cli
from rulstm.models import RULSTM, RULSTMFusion
from rulstm.resources import resolve_path

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs" / "egtea"
DIMS = {"rgb": 16, "flow": 12}
STAGES = ("rgb_sc", "rgb_anticipation", "flow_sc", "flow_anticipation", "fusion")


@pytest.fixture(scope="module")
def egtea_features(tmp_path_factory) -> dict[str, Path]:
    """Sparse files covering every video of the shipped splits: two stored frames per video,
    the first and one past the last annotated frame, so every lookup finds a stored frame."""
    root = tmp_path_factory.mktemp("egtea_features")
    videos = sorted(
        {
            segment.video_id
            for name in ("training", "validation")
            for split in (1, 2, 3)
            for segment in read_rulstm_split(resolve_path(f"builtin:egtea/{name}{split}.csv"))
        }
    )
    rng = np.random.default_rng(0)
    paths = {}
    for modality, dim in DIMS.items():
        paths[modality] = root / f"{modality}.h5"
        with FeatureFileWriter(paths[modality], modality=modality, dim=dim, fps=30.0) as writer:
            for video in videos:
                values = rng.normal(size=(2, dim)).astype(np.float32)
                writer.write_video(video, np.array([1, 200_000]), values)
    return paths


COMMON = [
    "--data.batch_size", "4",
    "--data.num_workers", "0",
    "--model.net.init_args.hidden", "8",
    "--trainer.logger", "false",
    "--trainer.accelerator", "cpu",
    "--trainer.devices", "1",
    "--trainer.enable_progress_bar", "false",
]  # fmt: skip


@pytest.mark.parametrize(
    "split,stage", [(1, stage) for stage in STAGES] + [(2, "fusion"), (3, "rgb_sc")]
)
def test_config_runs_fast_dev_run(split, stage, egtea_features, tmp_path):
    modalities = list(DIMS) if stage == "fusion" else [stage.split("_")[0]]
    cli = build_cli(
        [
            "fit",
            "-c",
            str(CONFIGS / "base.yaml"),
            "-c",
            str(CONFIGS / f"split{split}.yaml"),
            "-c",
            str(CONFIGS / f"{stage}.yaml"),
            "--data.features",
            json.dumps({m: str(egtea_features[m]) for m in modalities}),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.default_root_dir",
            str(tmp_path / stage),
            *COMMON,
        ]  # fmt: skip
    )
    assert cli.trainer.state.finished and "train/loss" in cli.trainer.callback_metrics
    net = cli.model.net
    assert net.num_classes == 106  # from builtin:egtea/actions.csv
    if stage == "fusion":
        assert isinstance(net, RULSTMFusion)
        assert {m: b.feat_dim for m, b in net.branches.items()} == DIMS
    else:
        assert isinstance(net, RULSTM) and net.feat_dim == DIMS[modalities[0]]
    train = cli.datamodule.dataset("train")
    # Segments starting before 0.25 s * 14 cannot be sampled and are dropped from training.
    assert len(train) + train.num_dropped == {1: 8299, 2: 8299, 3: 8300}[split]


@pytest.mark.slow
def test_script_trains_evaluates_and_summarises_three_splits(
    egtea_features, tmp_path, capsys, load_script
):
    script = load_script("train_egtea")
    features = tmp_path / "features"
    for split in (1, 2, 3):
        (features / f"split{split}").mkdir(parents=True)
        for modality, path in egtea_features.items():
            (features / f"split{split}" / f"{modality}.h5").symlink_to(path)
    out = tmp_path / "evaluation"
    code = script.main(
        [
            "--features",
            str(features),
            "--runs",
            str(tmp_path / "runs"),
            "--out",
            str(out),
            "--",
            *COMMON,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "2",
            "--trainer.limit_test_batches",
            "3",
        ]  # fmt: skip
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "$ rulstm fit -c" in printed and "$ rulstm test -c" in printed
    assert "mean ± standard deviation" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"] == [1, 2, 3] and len(summary["times"]) == 8
    for model in ("rgb", "flow", "fusion"):
        for task in ("verb", "noun", "action"):
            for metric in ("top1", "top5", "recall5"):
                stats = summary["models"][model][f"{task}/{metric}"]
                values = np.array(stats["per_split"])  # (splits, times)
                assert values.shape == (3, 8)
                np.testing.assert_allclose(stats["mean"], values.mean(0), atol=1e-9)
                np.testing.assert_allclose(stats["std"], values.std(0, ddof=1), atol=1e-9)
    assert (out / "summary.csv").read_text().startswith("model,task,metric,time_s,mean,std")


def test_aggregate_mean_and_spread(tmp_path, load_script):
    script = load_script("train_egtea")
    times = [2.0, 1.0]
    for split, value in ((1, 10.0), (2, 20.0), (3, 60.0)):
        series = [
            {"task": t, "metric": m, "subset": "overall", "values": [value, value + 1]}
            for t in ("verb", "noun", "action")
            for m in ("top1", "top5", "recall5")
        ]
        (tmp_path / f"split{split}").mkdir()
        report = {"times": times, "series": series}
        (tmp_path / f"split{split}" / "fusion.json").write_text(json.dumps(report))
    summary = script.aggregate(tmp_path, [1, 2, 3], models=["fusion"])
    stats = summary["models"]["fusion"]["action/top5"]
    assert stats["mean"] == [30.0, 31.0]
    assert stats["std"] == pytest.approx([math.sqrt(700), math.sqrt(700)])  # (400+100+900)/2
    assert "30.00 ±26.46" in script.format_summary(summary)
    with pytest.raises(FileNotFoundError, match="split4"):
        script.aggregate(tmp_path, [4], models=["fusion"])
