"""Sizes come from the data: ``feat_dim`` from the HDF5 ``dim`` attribute, ``num_classes`` from
the action vocabulary; a config value that disagrees stops the run naming both values. The
sampling protocol (alpha, task, steps) is set once under ``data`` and checked the same way."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from rulstm.cli import build_cli
from rulstm.models import RULSTM, RULSTMFusion

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "ek55"
# What configs/extract/default.yaml writes: ResNet-50 RGB and Flow, COCO Faster R-CNN classes.
EXTRACTOR_DIMS = {"rgb": 2048, "flow": 2048, "obj": 90}


@pytest.fixture
def run(tmp_path, fast_dev_run_args):
    """``run(stage, features, data, *extra)``: one fast_dev_run of an EK55 stage config."""

    def fit(stage: str, features: dict[str, Path], data, *extra: str):
        args = fast_dev_run_args(
            CONFIGS / "base.yaml",
            CONFIGS / f"{stage}.yaml",
            features=features,
            train=data.train,
            val=data.val,
            root=tmp_path / stage,
        )
        return build_cli([*args, *extra])

    return fit


def test_extractor_sizes_train_with_the_stage_configs_unchanged(tmp_path, synthetic_data, run):
    data = synthetic_data(dims=EXTRACTOR_DIMS, num_classes=4, videos=3, frames=600)
    cli = run("rgb_sc", {"rgb": data.features["rgb"]}, data)
    assert isinstance(cli.model.net, RULSTM)
    assert (cli.model.net.feat_dim, cli.model.net.num_classes) == (2048, 4)
    cli = run("obj_anticipation", {"obj": data.features["obj"]}, data)
    assert cli.model.net.feat_dim == 90
    cli = run("fusion", data.features, data)
    assert isinstance(cli.model.net, RULSTMFusion)
    assert {m: b.feat_dim for m, b in cli.model.net.branches.items()} == EXTRACTOR_DIMS
    assert cli.model.net.num_classes == 4 and cli.trainer.state.finished


def test_imported_lmdb_features_train_without_size_overrides(tmp_path, synthetic_data, run):
    lmdb = pytest.importorskip("lmdb")
    from rulstm.compat import convert_lmdb

    # The released RU-LSTM size (the importer checks it): 1024-d RGB.
    data = synthetic_data(dims={"rgb": 1024}, num_classes=3, videos=3, frames=600)
    database = tmp_path / "rgb_lmdb"
    env = lmdb.open(str(database), map_size=64 * 1024 * 1024)
    with h5py.File(data.features["rgb"], "r") as source, env.begin(write=True) as txn:
        for video in source:
            frames, values = source[video]["frames"][:], source[video]["features"][:]
            for frame, row in zip(frames, values):
                key = f"{video}_frame_{int(frame):010d}.jpg"
                txn.put(key.encode(), np.asarray(row, np.float32).tobytes())
    env.close()
    imported = tmp_path / "imported_rgb.h5"
    convert_lmdb(database, imported, modality="rgb", progress=False)
    cli = run("rgb_anticipation", {"rgb": imported}, data)
    assert (cli.model.net.feat_dim, cli.model.net.num_classes) == (1024, 3)


def test_values_set_on_the_model_must_agree_with_the_data(tmp_path, synthetic_data, run):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    features = {"rgb": data.features["rgb"]}
    # Agreeing values are accepted.
    cli = run("rgb_sc", features, data, "--model.net.init_args.num_classes", "3")
    assert cli.model.net.num_classes == 3
    cases = {
        ("--model.net.init_args.num_classes", "7"): "predicts 7 classes but the action vocabulary",
        ("--model.net.init_args.feat_dim", "5"): "rgb features are 12-d but the net expects 5-d",
    }
    for (key, value), message in cases.items():
        with pytest.raises(ValueError, match=message):
            run("rgb_sc", features, data, key, value)
    # Protocol values: the command line refuses them on the model side; a config file that
    # sets one which disagrees with the data stops the run naming both values.
    with pytest.raises(SystemExit):
        run("rgb_sc", features, data, "--model.alpha", "0.5")
    configs = {
        "alpha: 0.5": r"model.alpha is 0.5 but the data gives 0.25",
        "anticipation_steps: 4": r"model.anticipation_steps is 4 but the data gives 8",
        "task: early_recognition": (
            r"model.task is 'early_recognition' but the data gives 'anticipation'"
        ),
    }
    for line, message in configs.items():
        override = tmp_path / "override.yaml"
        override.write_text(f"model:\n  {line}\n")
        with pytest.raises(ValueError, match=message):
            run("rgb_sc", features, data, "-c", str(override))


def test_protocol_values_reach_the_model_from_the_data(tmp_path, synthetic_data, run):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    features = {"rgb": data.features["rgb"]}
    cli = run("rgb_sc", features, data, "--data.alpha", "0.5")
    assert cli.model.hparams.alpha == 0.5
    # alpha 0.5 and 8 steps: outputs at 4.0 ... 0.5 s, and the 1 s column is step -2.
    assert cli.model.output_times[cli.model.headline_index] == pytest.approx(1.0)
    cli = run("early_rgb", features, data, "--data.early_recognition_steps", "4")
    assert (cli.model.task, cli.model.anticipation_steps) == ("early_recognition", 4)


def test_single_branch_net_on_several_modalities_needs_model_modality(
    tmp_path, synthetic_data, run
):
    data = synthetic_data(dims={"rgb": 12, "flow": 6}, num_classes=3, videos=3, frames=600)
    with pytest.raises(ValueError, match="set model.modality"):
        run("rgb_sc", data.features, data, "--model.modality", "null")
    cli = run("rgb_sc", data.features, data, "--model.modality", "flow")
    assert cli.model.net.feat_dim == 6


def test_evaluator_alpha_must_agree_with_the_data(tmp_path, synthetic_data, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    args = [
        "test",
        "-c", str(CONFIGS / "base.yaml"),
        "-c", str(CONFIGS / "test_rgb.yaml"),
        "--data.features", str({"rgb": str(data.features["rgb"])}),
        "--data.test_annotations", str(data.val),
        "--data.train_annotations", str(data.train),
        "--data.actions", "null",
        "--data.num_workers", "0",
        "--data.alpha", "0.5",
        "--model.init_checkpoint", "null",
        "--model.net.init_args.hidden", "8",
        "--trainer.logger", "false",
        "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    # An evaluator's explicit alpha must agree with the data ...
    with pytest.raises(
        ValueError, match=r"AnticipationEvaluator.alpha is 0.25 but data.alpha is 0.5"
    ):
        build_cli([*args, "--trainer.callbacks.init_args.alpha", "0.25"])
    # ... and without one it takes the model's (linked from the data): 1.0 s is step -2.
    cli = build_cli([*args, "--trainer.callbacks.init_args.class_lists", "false"])
    evaluator = next(c for c in cli.trainer.callbacks if hasattr(c, "report"))
    assert evaluator.report.times[-2] == 1.0 and evaluator.report.times[0] == 4.0
