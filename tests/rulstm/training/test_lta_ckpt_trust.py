"""``rulstm test|predict|fit --ckpt_path`` with the Ego4D LTA configs: the checkpoint is checked
as for the next-action CLI (tests/rulstm/training/test_ckpt_path_trust.py): hyper-parameters
naming a class outside the allow-list are refused with one line naming the file and the class
path, before jsonargparse imports anything."""

from __future__ import annotations

import sys

import pytest
import torch

from rulstm.checkpoints import check_hyperparameter_classes, check_lightning_checkpoint
from rulstm.cli import build_cli, main
from rulstm.models.lta import LTABaseline, RULSTMForecaster
from rulstm.models.spec import allowed_net

from .test_lta import CONFIGS, data_args, make_lta_data


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real LTA ``rulstm fit`` checkpoint (one epoch) and the data it was trained on."""
    root = tmp_path_factory.mktemp("lta_trained")
    paths = make_lta_data(root)
    build_cli(
        [
            "fit",
            "-c",
            str(CONFIGS / "base.yaml"),
            "-c",
            str(CONFIGS / "forecaster.yaml"),
            *data_args(paths, root / "run"),
            "--trainer.max_epochs=1",
        ]
    )
    return paths, root / "run" / "checkpoints" / "last.ckpt"


def _args(subcommand: str, paths, root) -> list[str]:
    return [
        subcommand,
        "-c",
        str(CONFIGS / "base.yaml"),
        "-c",
        str(CONFIGS / ("forecaster.yaml" if subcommand == "fit" else "test.yaml")),
        *data_args(paths, root),
        "--trainer.max_epochs=2",
        *(
            []
            if subcommand == "fit"
            else [
                "--model.init_checkpoint=null",
                # test.yaml's evaluator writes its report here, not into the current folder.
                f"--trainer.callbacks.init_args.out_dir={root / 'evaluation'}",
            ]
        ),
    ]


def test_the_lta_classes_are_allow_listed(trained):
    _, last = trained
    checkpoint = torch.load(last, weights_only=True)
    check_lightning_checkpoint(last, checkpoint)  # a real LTA checkpoint passes
    for net in (RULSTMForecaster, LTABaseline):
        assert allowed_net(f"rulstm.models.lta.{net.__name__}") is net
    hparams = {"_class_path": "rulstm.lightning_lta.LTAModule", "net": {
        "class_path": "rulstm.models.lta.LTABaseline", "init_args": {"encoder": "lstm"}}}  # fmt: skip
    check_hyperparameter_classes(last, hparams)


@pytest.mark.parametrize("subcommand", ["test", "fit"])
def test_a_net_naming_os_system_is_refused(trained, tmp_path, capsys, subcommand):
    paths, last = trained
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"]["net"] = {
        "class_path": "os.system",
        "init_args": {"command": f"touch {tmp_path / 'ran.marker'}"},
    }
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    assert main([*_args(subcommand, paths, tmp_path / "run"), "--ckpt_path", str(evil)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {evil}: refused to build 'os.system'"), line
    assert "hyper_parameters.net.class_path" in line
    assert not (tmp_path / "ran.marker").exists()


def test_a_planted_module_is_not_imported(trained, tmp_path, capsys, monkeypatch):
    paths, last = trained
    marker = tmp_path / "imported.marker"
    (tmp_path / "planted_lta.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "import torch\n\nclass Evil(torch.nn.Module):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = "planted_lta.Evil"
    planted = tmp_path / "planted.ckpt"
    torch.save(checkpoint, planted)
    assert main([*_args("test", paths, tmp_path / "run"), "--ckpt_path", str(planted)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {planted}: refused to build 'planted_lta.Evil'")
    assert "hyper_parameters._class_path" in line
    assert not marker.exists() and "planted_lta" not in sys.modules


def test_best_is_checked_like_a_named_file(trained, tmp_path, capsys):
    paths, last = trained
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"]["net"] = {"class_path": "os.system"}
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    best.parent.mkdir(parents=True)
    torch.save(checkpoint, best)
    assert main([*_args("test", paths, tmp_path / "run"), "--ckpt_path", "best"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm: error: {best}: refused to build 'os.system'"), line


def test_a_real_checkpoint_still_tests(trained, tmp_path):
    paths, last = trained
    assert main([*_args("test", paths, tmp_path / "run"), "--ckpt_path", str(last)]) == 0
    # test.yaml's evaluator report, named after the checkpoint's stage folder (run/).
    assert (tmp_path / "run" / "evaluation" / "run.json").is_file()
