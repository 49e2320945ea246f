"""``rulstm fit|test --ckpt_path FILE``: a truncated, pickled, hand-made or class-naming file
is refused before anything runs, with one line naming the file and what is wrong."""

from __future__ import annotations

import sys

import pytest
import torch

from rulstm.cli import main

from .test_stages import fit, fit_args


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real ``rulstm fit`` checkpoint (one epoch) and the data it was trained on."""
    from .conftest import make_dataset

    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root, dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    fit("rgb_sc", data, root / "runs", epochs=1)
    return data, root / "runs" / "rgb_sc" / "checkpoints" / "last.ckpt"


def _args(subcommand: str, data, root) -> list[str]:
    args = fit_args("rgb_sc", data, root, epochs=1)
    args[0] = subcommand
    if subcommand == "test":
        args += ["--data.test_annotations", str(data.val)]
    return args


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_unusable_checkpoints_name_the_file(trained, tmp_path, capsys, subcommand):
    data, last = trained
    checkpoint = torch.load(last, weights_only=True)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    unversioned = tmp_path / "hand_made.ckpt"
    torch.save({k: v for k, v in checkpoint.items() if k != "pytorch-lightning_version"},
               unversioned)  # fmt: skip
    args = _args(subcommand, data, tmp_path / "runs")

    assert main([*args, "--ckpt_path", str(truncated)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {truncated}: not a readable checkpoint"), line

    assert main([*args, "--ckpt_path", str(unversioned)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {unversioned} is not a"), line
    assert "lacks 'pytorch-lightning_version'" in line


def test_a_pickled_payload_is_refused_naming_the_file(trained, tmp_path, capsys):
    data, _ = trained
    marker = tmp_path / "ran.marker"

    class Payload:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Payload()}, evil)
    assert main([*_args("test", data, tmp_path / "runs"), "--ckpt_path", str(evil)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {evil}: refused") and "eval" in line
    assert not marker.exists()


def test_hyperparameters_naming_a_class_import_nothing(trained, tmp_path, capsys, monkeypatch):
    """LightningCLI parses --ckpt_path's hyper-parameters into the config, which would import
    the module a class_path names (here one that leaves a marker when imported)."""
    data, last = trained
    marker = tmp_path / "imported.marker"
    (tmp_path / "planted_optim.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "import torch\n\nclass Evil(torch.optim.SGD):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"]["optimizer"] = {
        "class_path": "planted_optim.Evil", "init_args": {"lr": 0.1}
    }  # fmt: skip
    planted = tmp_path / "planted.ckpt"
    torch.save(checkpoint, planted)
    for subcommand in ("test", "fit"):
        assert (
            main([*_args(subcommand, data, tmp_path / subcommand), "--ckpt_path", str(planted)])
            == 1
        )
        line = _error_line(capsys.readouterr().err)
        assert line.startswith(f"rulstm: error: {planted}: refused to build 'planted_optim.Evil'")
        assert "hyper_parameters.optimizer.class_path" in line
    assert not marker.exists() and "planted_optim" not in sys.modules


def test_a_real_checkpoint_still_resumes_and_tests(trained, tmp_path, capsys):
    data, last = trained
    args = _args("test", data, tmp_path / "runs")
    assert main([*args, "--ckpt_path", str(last)]) == 0


def test_best_is_checked_like_a_named_file(trained, tmp_path, capsys):
    data, last = trained
    checkpoint = torch.load(last, weights_only=True)
    best = tmp_path / "runs" / "rgb_sc" / "checkpoints" / "best.ckpt"
    best.parent.mkdir(parents=True)
    torch.save({k: v for k, v in checkpoint.items() if k != "pytorch-lightning_version"}, best)
    assert main([*_args("test", data, tmp_path / "runs"), "--ckpt_path", "best"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert (
        line.startswith(f"rulstm: error: {best} is not a") and "pytorch-lightning_version" in line
    )
