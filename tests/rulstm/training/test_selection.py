"""Checkpoint selection comes from the evaluation protocol: a best checkpoint without a monitor
monitors the protocol's selection metric with its mode; a monitor the config sets is kept, and
one naming no logged metric, or with a mode against the metric's direction, stops the run at
start with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from epic_protocol.errors import UsageError
from rulstm.cli import build_cli, main
from rulstm.evaluation.lta_protocol import Ego4DLTAProtocol
from rulstm.selection import (
    MonitorChoice,
    ProtocolEarlyStopping,
    next_action_choice,
    next_action_protocols,
    select_by_protocol,
)

from .test_cli_errors import _error_line
from .test_lta import data_args, make_lta_data

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _args(data, root: Path, base: Path, *extra: str, stage: Path | None = None) -> list[str]:
    """``rulstm`` arguments without a subcommand (``run=False``: parse and build only)."""
    return [
        "-c",
        str(base),
        *(["-c", str(stage)] if stage else []),
        "--data.features",
        str({"rgb": str(data.features["rgb"])}),
        "--data.train_annotations",
        str(data.train),
        "--data.val_annotations",
        str(data.val),
        "--data.actions",
        "null",
        "--data.num_workers",
        "0",
        "--model.modality",
        "rgb",
        "--model.net.init_args.hidden",
        "8",
        "--trainer.logger",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.default_root_dir",
        str(root),
        *extra,
    ]


def _best(cli) -> ModelCheckpoint:
    (best,) = [c for c in cli.trainer.checkpoint_callbacks if c.filename == "best"]
    return best


@pytest.fixture
def data(synthetic_data):
    return synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)


@pytest.mark.parametrize(
    ("folder", "monitor"),
    [
        ("ek55", "val/action/top5/1.00s"),
        ("ek100", "val/action/recall5/1.00s"),
        ("egtea", "val/action/top5/1.00s"),
        ("quickstart", "val/action/top5/1.00s"),  # no protocol: the default, custom
    ],
)
def test_the_best_checkpoint_monitors_the_protocols_selection(tmp_path, data, folder, monitor):
    base = CONFIGS / folder / "base.yaml"
    best_entry = yaml.safe_load(base.read_text())["trainer"]["callbacks"][0]["init_args"]
    assert "monitor" not in best_entry and "mode" not in best_entry  # not restated
    cli = build_cli(_args(data, tmp_path, base), run=False)
    best = _best(cli)
    assert (best.monitor, best.mode) == (monitor, "max")
    # The parsed config (what config.yaml records) says what ran.
    (entry,) = [c for c in cli.config["trainer"]["callbacks"] if c.init_args.filename == "best"]
    assert (entry.init_args.monitor, entry.init_args.mode) == (monitor, "max")
    # Another protocol on the command line selects by its metric.
    other = build_cli(_args(data, tmp_path, base, "--protocol", "ek100"), run=False)
    assert (_best(other).monitor, _best(other).mode) == ("val/action/recall5/1.00s", "max")


def test_early_recognition_selects_with_the_whole_action_observed(tmp_path, data):
    args = _args(data, tmp_path, CONFIGS / "ek55" / "base.yaml")
    args += ["--data.task", "early_recognition", "--data.early_recognition_steps", "4"]
    assert _best(build_cli(args, run=False)).monitor == "val/action/top5/100.0%"


def test_a_monitor_set_by_the_config_is_kept(tmp_path, data):
    early = CONFIGS / "ek55" / "early_rgb.yaml"
    args = _args(data, tmp_path, CONFIGS / "ek55" / "base.yaml", stage=early)
    args += ["--data.early_recognition_steps", "4"]
    best = _best(build_cli(args, run=False))
    assert (best.monitor, best.mode) == ("val/action/top1/100.0%", "max")


def _override(tmp_path: Path, monitor: str, mode: str) -> Path:
    path = tmp_path / f"monitor_{mode}.yaml"
    callback = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"monitor": monitor, "mode": mode, "filename": "best"},
    }
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    return path


def test_a_bad_monitor_or_mode_stops_the_run_at_start(tmp_path, data, capsys):
    base = CONFIGS / "ek100" / "base.yaml"
    fit = ["fit", *_args(data, tmp_path / "run", base), "--trainer.max_epochs", "1"]
    unknown = _override(tmp_path, "val/action/recall5_acc/1.00s", "max")
    with pytest.raises(UsageError, match=r"names no logged metric; valid names: .*recall5/1\.00s"):
        build_cli([*fit, "-c", str(unknown)])
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained or written
    against = _override(tmp_path, "val/action/recall5/1.00s", "min")
    assert main([*fit, "-c", str(against)]) == 2  # a usage error
    line = _error_line(capsys.readouterr().err)
    assert line.endswith("is better when larger; set mode: max"), line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unknown_protocol_names_the_valid_ones(tmp_path, data, capsys):
    args = ["fit", *_args(data, tmp_path, CONFIGS / "ek55" / "base.yaml"), "--protocol", "nope"]
    assert main(args) == 2
    line = _error_line(capsys.readouterr().err)
    assert "nope" in line and all(name in line for name in next_action_protocols())
    assert "ego4d_lta" not in next_action_protocols()
    with pytest.raises(ValueError, match="ego4d_lta.*not a next-action evaluation protocol"):
        next_action_choice("ego4d_lta")


def test_lta_selects_by_its_protocol_with_mode_min(tmp_path):
    paths = make_lta_data(tmp_path)
    base = CONFIGS / "ego4d_lta" / "base.yaml"
    best_entry = yaml.safe_load(base.read_text())["trainer"]["callbacks"][0]["init_args"]
    assert "monitor" not in best_entry and "mode" not in best_entry
    cli = build_cli(["-c", str(base), *data_args(paths, tmp_path / "run")], run=False)
    protocol = Ego4DLTAProtocol()
    assert (_best(cli).monitor, _best(cli).mode) == (protocol.headline_metric("val"), "min")
    assert _best(cli).monitor == "val/verb/ED@20"


def test_select_by_protocol_fills_only_an_unmonitored_best_checkpoint():
    def entry(**init_args):
        return {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": init_args}

    best, last = entry(filename="best", monitor=None), entry(filename="last", monitor=None)
    own = entry(filename="best", monitor="val/loss", mode="min")
    other = {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {}}
    choice = MonitorChoice("val/action/top5/1.00s", "max")
    assert select_by_protocol([best, last, own, other], choice) == [best]
    assert best["init_args"] == {"filename": "best", "monitor": choice.monitor, "mode": "max"}
    assert other["init_args"] == {}
    assert last["init_args"]["monitor"] is None and own["init_args"]["monitor"] == "val/loss"
    assert select_by_protocol(None, choice) == [] and select_by_protocol(False, choice) == []


def test_no_config_restates_its_protocols_selection():
    """Configs are overrides: a monitor in a config differs from what its protocol selects."""
    for path in sorted(CONFIGS.rglob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        dataset = CONFIGS / path.relative_to(CONFIGS).parts[0]  # configs/ek55/foundation -> ek55
        base_path = dataset / "base.yaml"
        base = yaml.safe_load(base_path.read_text()) if base_path.is_file() else {}
        for callback in (config.get("trainer") or {}).get("callbacks") or []:
            monitor = (callback.get("init_args") or {}).get("monitor")
            if not monitor:
                continue
            if base.get("task") == "ego4d_lta":
                default = Ego4DLTAProtocol().headline_metric("val")
            else:
                task = (config.get("data") or {}).get("task") or "anticipation"
                protocol = config.get("protocol") or base.get("protocol") or "custom"
                default = next_action_choice(protocol, task=task).monitor
            assert monitor != default, f"{path}: monitor {monitor} restates the protocol's"


def _callbacks_config(tmp_path: Path, name: str, *callbacks: dict) -> Path:
    """A config appending ``callbacks`` to base.yaml's."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks+": list(callbacks)}}))
    return path


def _stopping(cli) -> EarlyStopping:
    (stopping,) = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    return stopping


def test_early_stopping_without_a_monitor_stops_on_the_protocols_metric(tmp_path, data):
    stopping = {
        "class_path": "rulstm.selection.ProtocolEarlyStopping",
        "init_args": {"patience": 2},
    }
    config = _callbacks_config(tmp_path, "stopping", stopping)
    base = CONFIGS / "ek55" / "base.yaml"
    for protocol, monitor in (
        ("ek55", "val/action/top5/1.00s"),
        ("ek100", "val/action/recall5/1.00s"),
    ):
        args = _args(data, tmp_path, base, "-c", str(config), "--protocol", protocol)
        cli = build_cli(args, run=False)
        assert isinstance(_stopping(cli), ProtocolEarlyStopping)
        assert (_stopping(cli).monitor, _stopping(cli).mode) == (monitor, "max")
        assert _stopping(cli).patience == 2
        # The saved config records what ran.
        (entry,) = [
            c for c in cli.config["trainer"]["callbacks"] if "EarlyStopping" in c.class_path
        ]
        assert (entry.init_args.monitor, entry.init_args.mode) == (monitor, "max")
    with pytest.raises(UsageError, match="no monitor"):
        ProtocolEarlyStopping()  # outside the CLI nothing fills it


def test_lightnings_early_stopping_without_a_monitor_is_one_line(tmp_path, data, capsys):
    stopping = {"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {}}
    config = _callbacks_config(tmp_path, "lightning_stopping", stopping)
    args = ["fit", *_args(data, tmp_path, CONFIGS / "ek55" / "base.yaml", "-c", str(config))]
    assert main(args) == 2
    line = _error_line(capsys.readouterr().err)
    assert "EarlyStopping needs init_args.monitor" in line
    assert "rulstm.selection.ProtocolEarlyStopping" in line and len(line) < 250


def test_a_monitor_without_a_mode_gets_the_metrics_direction(tmp_path, data):
    """``mode`` not written: the metric's direction, not Lightning's default ``min`` (which
    a larger-is-better monitor would then refuse); a written ``mode`` is kept and checked."""
    monitor = "val/action/top1/1.00s"
    stopping = {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                "init_args": {"monitor": monitor}}  # fmt: skip
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"monitor": monitor, "filename": "top1"}}  # fmt: skip
    loss = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"monitor": "val/loss", "filename": "loss"}}  # fmt: skip
    config = _callbacks_config(tmp_path, "modes", stopping, checkpoint, loss)
    cli = build_cli(
        _args(data, tmp_path, CONFIGS / "ek55" / "base.yaml", "-c", str(config)), run=False
    )
    assert (_stopping(cli).monitor, _stopping(cli).mode) == (monitor, "max")
    modes = {c.filename: c.mode for c in cli.trainer.checkpoint_callbacks}
    assert modes["top1"] == "max" and modes["loss"] == "min" and modes["best"] == "max"
    # Written on the command line, a mode is the user's: kept, and refused at fit start.
    written = _callbacks_config(
        tmp_path, "written", {**stopping, "init_args": {"monitor": monitor, "mode": "min"}}
    )
    fit = [
        "fit",
        *_args(data, tmp_path / "run", CONFIGS / "ek55" / "base.yaml", "-c", str(written)),
    ]
    with pytest.raises(UsageError, match="is better when larger; set mode: max"):
        build_cli([*fit, "--trainer.max_epochs", "1"])
