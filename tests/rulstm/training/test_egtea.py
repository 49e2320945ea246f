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


def test_script_help_names_every_option_and_its_default(load_script, capsys):
    script = load_script("train_egtea")
    assert script.main(["--help"]) == 0  # cli_main returns argparse's status
    text = capsys.readouterr().out
    for option in ("--configs", "--features", "--runs", "--out", "--splits", "--modalities"):
        assert option in text, option
    for default in ("configs/egtea", "data/NAME", "runs/NAME", "evaluation/NAME", "rgb flow"):
        assert default in text, default
    assert 'options after "--" go unchanged to every rulstm command' in text


def test_script_runs_the_sequence_of_a_copied_config_folder(tmp_path, load_script, monkeypatch):
    # Your own dataset: configs/egtea copied to configs/mydata with one split, features
    # shared by the splits in data/mydata/{rgb,flow}.h5, defaults named after the folder.
    script = load_script("train_egtea")
    configs = tmp_path / "configs" / "mydata"
    configs.mkdir(parents=True)
    egtea = Path(script.CONFIGS)
    for name in ("base", "split1", "rgb_sc", "rgb_anticipation", "flow_sc"):
        (configs / f"{name}.yaml").write_text((egtea / f"{name}.yaml").read_text())
    for modality in ("rgb", "flow"):
        (tmp_path / "data" / "mydata").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "mydata" / f"{modality}.h5").touch()
    monkeypatch.chdir(tmp_path)
    commands: list[list[str]] = []
    report = {
        "times": [1.0],
        "series": [
            {"task": t, "metric": m, "subset": "overall", "values": [50.0]}
            for t in ("verb", "noun", "action")
            for m in ("top1", "top5", "recall5")  # the logged metric names
        ],
    }

    def fake_rulstm(args: list[str]) -> None:  # what would run; writes what it would write
        commands.append(args)
        root = Path(args[args.index("--trainer.default_root_dir") + 1])
        if args[0] == "fit":
            (root / "checkpoints").mkdir(parents=True)
            (root / "checkpoints" / "best.ckpt").touch()
        else:
            out = Path(args[args.index("--trainer.callbacks.init_args.out_dir") + 1])
            name = args[args.index("--trainer.callbacks.init_args.name") + 1]
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.json").write_text(json.dumps(report))

    monkeypatch.setattr(script, "_rulstm", fake_rulstm)
    # A missing stage file is named before anything runs.
    assert script.main(["--configs", str(configs)]) == 1
    assert commands == []
    for name in ("flow_anticipation", "fusion", "test"):
        (configs / f"{name}.yaml").write_text((egtea / f"{name}.yaml").read_text())
    assert script.main(["--configs", str(configs), "--", "--trainer.max_epochs", "1"]) == 0
    assert [c[0] for c in commands] == ["fit"] * 5 + ["test"] * 3
    for command in commands:
        config_files = [command[i + 1] for i, a in enumerate(command) if a == "-c"]
        assert config_files[:2] == [str(configs / "base.yaml"), str(configs / "split1.yaml")]
        assert all(f.startswith(str(configs)) for f in config_files)
        assert command[-2:] == ["--trainer.max_epochs", "1"]  # after --: to every command
    features = json.loads(commands[0][commands[0].index("--data.features") + 1])
    assert features == {"rgb": str(Path("data/mydata/rgb.h5"))}
    fit_roots = [c[c.index("--trainer.default_root_dir") + 1] for c in commands[:5]]
    assert fit_roots[0] == str(Path("runs/mydata/split1/rgb_sc"))
    assert (tmp_path / "evaluation" / "mydata" / "summary.json").is_file()
