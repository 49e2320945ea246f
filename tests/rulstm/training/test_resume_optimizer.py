"""Resuming with a changed optimiser: the same class resumes with the configured values (one
warning naming them), another class is refused before anything is written, and the run's
config.yaml always records what ran."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from rulstm.cli import main
from rulstm.lightning import AnticipationModule
from rulstm.optimization import OPTIMIZATION_KEY, OptimizerChangeError, compare, configured

from .test_stages import fit, fit_args

STEP_LR = [
    "--model.scheduler",
    "torch.optim.lr_scheduler.StepLR",
    "--model.scheduler.init_args.step_size",
    "1",
    "--model.scheduler.init_args.gamma",
    "0.5",
]


@pytest.fixture
def data(synthetic_data):
    return synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _last(run: Path) -> Path:
    return run / "rgb_sc" / "checkpoints" / "last.ckpt"


def test_same_optimizer_resumes_with_the_configured_values(tmp_path, data):
    fit("rgb_sc", data, tmp_path, epochs=1)  # SGD lr 0.2 (fit_args), momentum 0.9
    last = _last(tmp_path)
    saved = _load(last)
    assert saved[OPTIMIZATION_KEY] == {"optimizers": ["torch.optim.sgd.SGD"], "schedulers": []}
    momentum_before = saved["optimizer_states"][0]["state"]
    assert momentum_before  # a momentum buffer per parameter, kept on resume
    with pytest.warns(UserWarning, match="configured hyper-parameters") as caught:
        fit(
            "rgb_sc",
            data,
            tmp_path,
            "--model.optimizer.init_args.lr",
            "0.05",
            "--ckpt_path",
            str(last),
            epochs=2,
        )
    message = next(str(w.message) for w in caught if "configured hyper" in str(w.message))
    assert str(last) in message
    assert "model.optimizer.init_args.lr 0.2 -> 0.05" in message
    assert "momentum" not in message  # unchanged values are not reported
    resumed = _load(last)
    assert resumed["epoch"] == 1
    assert resumed["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.05)
    recorded = yaml.safe_load((tmp_path / "rgb_sc" / "config.yaml").read_text())
    assert recorded["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(0.05)


def test_scheduler_values_and_the_scheduled_lr(tmp_path, data):
    # lr 0.2 halved after each epoch: 0.1 saved after epoch 0. A new lr 0.4 doubles the base,
    # so the schedule goes on from 0.2; a new gamma 0.1 takes over from the next step.
    fit("rgb_sc", data, tmp_path, *STEP_LR, epochs=1)
    last = _last(tmp_path)
    saved = _load(last)
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.1)
    assert saved[OPTIMIZATION_KEY]["schedulers"] == ["torch.optim.lr_scheduler.StepLR"]
    with pytest.warns(UserWarning, match="configured hyper-parameters") as caught:
        fit(
            "rgb_sc",
            data,
            tmp_path,
            *STEP_LR,
            "--model.optimizer.init_args.lr",
            "0.4",
            "--model.scheduler.init_args.gamma",
            "0.1",
            "--ckpt_path",
            str(last),
            epochs=2,
        )
    message = next(str(w.message) for w in caught if "configured hyper" in str(w.message))
    assert "model.optimizer.init_args.lr 0.2 -> 0.4" in message
    assert "model.scheduler.init_args.gamma 0.5 -> 0.1" in message
    resumed = _load(last)
    assert resumed["lr_schedulers"][0]["gamma"] == pytest.approx(0.1)
    assert resumed["lr_schedulers"][0]["base_lrs"] == pytest.approx([0.4])
    # 0.2 (rescaled epoch-1 lr) * 0.1 (the new gamma) after the second epoch
    assert resumed["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.02)


def test_another_optimizer_class_is_refused_naming_both(tmp_path, data, capsys):
    fit("rgb_sc", data, tmp_path, epochs=1)
    last = _last(tmp_path)
    config = tmp_path / "rgb_sc" / "config.yaml"
    before = config.read_text()
    args = fit_args("rgb_sc", data, tmp_path, "--ckpt_path", str(last), epochs=2)
    adam = ["--model.optimizer", "torch.optim.Adam", "--model.optimizer.init_args.lr", "0.01"]
    assert main([*args, *adam]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"rulstm: error: --model.optimizer is torch.optim.adam.Adam but {last} was trained "
        "with torch.optim.sgd.SGD: resume with the same class (other hyper-parameters are "
        "applied with a warning), or start a new run from its weights with "
        f"--model.init_checkpoint {last} instead of --ckpt_path"
    )
    assert config.read_text() == before  # the refused run recorded nothing
    assert _load(last)["epoch"] == 0
    # A scheduler the checkpoint was not trained with is refused the same way.
    assert main([*args, *STEP_LR]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("rulstm: error: --model.scheduler is torch.optim.lr_scheduler.StepLR")
    assert "no scheduler" in line


def test_older_checkpoints_without_the_record(tmp_path, data):
    # Checkpoints written before the classes were recorded: inferred from the saved names.
    fit("rgb_sc", data, tmp_path, epochs=1)
    checkpoint = _load(_last(tmp_path))
    del checkpoint[OPTIMIZATION_KEY]
    model = AnticipationModule(
        net=torch.nn.Linear(12, 3), optimizer=lambda p: torch.optim.Adam(p, lr=0.01)
    )
    with pytest.raises(OptimizerChangeError, match=r"another optimizer \(hyper-parameters"):
        compare(checkpoint, *configured(model), path="old.ckpt")
