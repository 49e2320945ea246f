"""``rulstm`` ends a run on bad input with one line ``rulstm: error: ...`` and a non-zero
exit status, no traceback (``--debug`` shows it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rulstm.cli import main

from .test_stages import fit, fit_args

REPO = Path(__file__).resolve().parents[3]


def _error_line(err: str) -> str:
    """The one error line; Lightning's info lines (seed, devices) may precede it."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def data(synthetic_data):
    return synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)


def test_missing_feature_file_from_the_console(tmp_path, data):
    args = fit_args("rgb_sc", data, tmp_path, epochs=1)
    missing = tmp_path / "features" / "rgb.h5"
    args[args.index("--data.features") + 1] = str({"rgb": str(missing)})
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("RULSTM_DEBUG", None)
    command = [sys.executable, "-m", "rulstm.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    line = _error_line(result.stderr)
    assert line.startswith(f"rulstm: error: feature file not found: {missing}")
    assert "rulstm-extract" in line and "rulstm-import features" in line  # how to create it
    debug = subprocess.run(
        [*command, "--debug"], capture_output=True, text=True, env=env, timeout=300
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_num_classes_that_do_not_match_the_vocabulary(tmp_path, data, capsys):
    args = fit_args("rgb_sc", data, tmp_path, "--model.net.init_args.num_classes", "7", epochs=1)
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("rulstm: error: the net predicts 7 classes")
    assert "has 3; set num_classes to 3" in line


def test_a_logger_whose_package_is_missing_is_one_line(tmp_path, data, capsys):
    """``--trainer.logger MLFlowLogger`` without mlflow (or Comet without comet-ml): one line
    naming the logger and what to install, exit status 1 (the environment), instead of
    jsonargparse's screen of every type the option accepts."""
    import importlib.util

    missing = {"MLFlowLogger": "mlflow", "CometLogger": "comet_ml"}
    absent = [name for name, module in missing.items() if importlib.util.find_spec(module) is None]
    if not absent:
        pytest.skip("mlflow and comet_ml are both installed")
    logger = absent[0]
    args = fit_args("rgb_sc", data, tmp_path, epochs=1)
    args[args.index("--trainer.logger") + 1] = logger
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err)
    package = "mlflow" if logger == "MLFlowLogger" else "comet-ml"
    assert line.startswith(f"rulstm: error: {logger} (lightning.pytorch.loggers.{logger}) ")
    assert f"needs the package {package}>=" in line and f"pip install '{package}>=" in line
    assert "Union" not in line and len(line) < 200


def test_unknown_option_and_class_name_the_key(tmp_path, data, capsys):
    args = fit_args("rgb_sc", data, tmp_path, epochs=1)
    assert main([*args, "--model.nosuch", "1"]) == 2
    assert _error_line(capsys.readouterr().err) == (
        "rulstm: error: unrecognized arguments: --model.nosuch 1"
    )
    assert main([*args, "--model.net", "rulstm.models.NoSuchNet"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith('rulstm: error: Parser key "model.net"') and "NoSuchNet" in line


def test_checkpoints_of_another_kind(tmp_path, data, capsys):
    # A branch checkpoint of a narrower net (hidden 8, not 16), and one without optimizer state.
    fit("rgb_sc", data, tmp_path / "other", "--model.net.init_args.hidden", "8", epochs=1)
    narrower = tmp_path / "other" / "rgb_sc" / "checkpoints" / "last.ckpt"
    weights_only = tmp_path / "weights.ckpt"
    torch.save({"state_dict": torch.load(narrower, weights_only=False)["state_dict"]}, weights_only)
    args = fit_args("rgb_sc", data, tmp_path / "runs", epochs=1)

    assert main([*args, "--ckpt_path", str(narrower)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {narrower} is a checkpoint of another network")
    assert "other shapes" in line and "net.rolling_lstm" in line

    assert main([*args, "--ckpt_path", str(weights_only)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"{weights_only} is not a training checkpoint" in line
    assert "--model.init_checkpoint" in line

    assert main([*args, "--model.init_checkpoint", str(narrower)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {narrower} does not fit RULSTM")
    # The differing hyper-parameter and the option to set, not a screen of tensor shapes.
    assert line.endswith(
        "it was trained with hidden 8 (this network: 16); give the network the same "
        "(--model.net.init_args.hidden 8)"
    )


def test_a_checkpoint_of_features_of_another_size_names_the_features_not_feat_dim(
    tmp_path, data, capsys
):
    """feat_dim is read from the feature file: a checkpoint trained on 12-d features, tested
    on 8-d ones, asks for the features it was trained on (with their recorded backbone), not
    for --model.net.init_args.feat_dim 12, which would then not fit the file."""
    from epic_protocol.backbones import CHECKPOINT_KEY

    from .conftest import make_dataset

    fit("rgb_sc", data, tmp_path / "runs", epochs=1)
    best = tmp_path / "runs" / "rgb_sc" / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=False)
    checkpoint[CHECKPOINT_KEY] = {"rgb": {"backbone": "hf:dinov2", "weights": "models/dinov2"}}
    torch.save(checkpoint, best)
    (tmp_path / "small").mkdir()
    smaller = make_dataset(tmp_path / "small", dims={"rgb": 8}, num_classes=3, videos=3,
                           frames=600).features["rgb"]  # fmt: skip
    args = fit_args("rgb_sc", data, tmp_path / "eval", epochs=1)
    args[0] = "test"
    args[args.index("--data.features") + 1] = str({"rgb": str(smaller)})
    args += ["--data.test_annotations", str(data.val), "--model.init_checkpoint", str(best)]
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {best} does not fit RULSTM")
    assert "12-d rgb features of hf:dinov2 (weights models/dinov2)" in line
    assert "data.features gives 8-d" in line and "--model.net.init_args.feat_dim" not in line
