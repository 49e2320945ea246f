"""What a stage leaves and prints: every logger writes into the stage folder, --overwrite
removes all of the earlier run, worker count from the CPUs, one screen of output (the
project's table, where files went, warnings only when actionable), and no silent nothing
from ``rulstm predict``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import wandb

from rulstm.cli import build_cli, main
from rulstm.data import datamodule
from rulstm.data.datamodule import resolve_num_workers

from .test_stages import CONFIGS, fit_args

CSV_LOGGER = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]


@pytest.fixture
def data(synthetic_data):
    return synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)


def _without(args: list[str], option: str) -> list[str]:
    at = args.index(option)
    return args[:at] + args[at + 2 :]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_num_workers_auto_follows_the_usable_cpus(monkeypatch, data):
    monkeypatch.setattr(datamodule.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_num_workers("auto") == 2  # a 2-core machine: no "might freeze" warning
    monkeypatch.setattr(datamodule.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert resolve_num_workers("auto") == 4
    assert resolve_num_workers(0) == 0 and resolve_num_workers(8) == 8  # explicit: kept
    monkeypatch.setattr(datamodule.os, "sched_getaffinity", lambda pid: {0, 1})
    with pytest.warns(UserWarning, match=r"data.num_workers is 3 but this process may use 2 CPU"):
        assert resolve_num_workers(3) == 3  # explicit above the cores: kept, with a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_num_workers(2) == 2 and resolve_num_workers("auto") == 2
    monkeypatch.setattr(datamodule.os, "sched_getaffinity", lambda pid: set(range(16)))
    with pytest.raises(ValueError, match="data.num_workers must be 'auto' or an int >= 0"):
        resolve_num_workers(-1)
    for dataset in ("ek55", "ek100", "egtea"):
        base = (CONFIGS.parent / dataset / "base.yaml").read_text()
        assert "num_workers: auto" in base, dataset
    module = datamodule.AnticipationDataModule(features={"rgb": str(data.features["rgb"])})
    assert module.num_workers == 4


def test_any_logger_writes_into_the_stage_folder(tmp_path, data, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    runs = tmp_path / "runs"
    args = _without(fit_args("rgb_sc", data, runs, epochs=1), "--trainer.logger")
    build_cli([*args, *CSV_LOGGER])
    assert _files(cwd) == []  # not ./version_0/ in the current folder
    stage = runs / "rgb_sc"
    assert {"version_0/metrics.csv", "version_0/config.yaml"} <= set(_files(stage))


def test_a_logger_default_save_dir_goes_into_the_stage_folder():
    # MLflow is not installed here: the config rewrite is checked, as applied before the
    # loggers are built. Its default ./mlruns lands in the stage; explicit folders are kept.
    from jsonargparse import Namespace

    from rulstm.run_folder import keep_logs_with_the_run

    def logger(class_name: str, **init_args) -> Namespace:
        path = f"lightning.pytorch.loggers.{class_name}"
        return Namespace(class_path=path, init_args=Namespace(**init_args))

    loggers = [
        logger("MLFlowLogger", save_dir="./mlruns", experiment_name="x"),
        logger("CSVLogger", save_dir=None),
        logger("WandbLogger", save_dir="."),
        logger("CSVLogger", save_dir="elsewhere/logs"),
        logger("MLFlowLogger", save_dir="/abs/mlruns"),
    ]
    config = Namespace(trainer=Namespace(default_root_dir="runs/mine/rgb_sc", logger=loggers))
    keep_logs_with_the_run(config)
    assert [lg.init_args.save_dir for lg in loggers] == [
        str(Path("runs/mine/rgb_sc/mlruns")),
        "runs/mine/rgb_sc",
        "runs/mine/rgb_sc",
        "elsewhere/logs",
        "/abs/mlruns",
    ]


def test_overwrite_removes_everything_of_the_earlier_run(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_QUIET", raising=False)
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    stage = runs / "rgb_sc"
    args = _without(fit_args("rgb_sc", data, runs, epochs=1), "--trainer.logger")
    cli = build_cli(args)  # the default logger: W&B offline, in the stage folder
    assert "anonymous" not in cli.trainer.logger._wandb_init  # W&B warned about it each run
    # No 30-line W&B history and summary under the stage's lines (W&B prints to the
    # terminal, not to the captured streams: the setting is checked).
    assert cli.trainer.logger._wandb_init["settings"] == {"quiet": True}
    assert (stage / "config.yaml").is_file() and list((stage / "wandb").glob("offline-run-*"))
    assert wandb.run is None  # ended: the next command in this process starts its own run
    build_cli([*args, *CSV_LOGGER, "--overwrite", "true"])
    left = _files(stage)
    assert not any(name.startswith("wandb") for name in left), left
    assert "config.yaml" not in left  # the earlier run's; this run's is in version_0
    assert {"checkpoints/best.ckpt", "checkpoints/last.ckpt", "version_0/config.yaml"} <= set(left)
    build_cli([*args, *CSV_LOGGER, "--overwrite", "true"])
    assert not (stage / "version_1").exists()  # the earlier CSV logs went too
    out, err = capsys.readouterr()
    assert f"--overwrite: removed the earlier run from {stage}: checkpoints/best.ckpt, " in out
    assert "version_0" in out.split("--overwrite: removed")[-1]
    assert "git root" not in out + err and "anonymous setting" not in out + err


def test_a_stage_prints_one_screen(tmp_path, data, capfd):
    # num_workers from base.yaml (auto), few training batches, the evaluator's own table.
    runs = tmp_path / "runs"
    args = _without(fit_args("rgb_sc", data, runs, epochs=1), "--data.num_workers")
    assert main(args) == 0
    trained_with = (runs / "rgb_sc" / "config.yaml").read_text()
    test_args = [
        "test",
        *args[1:5],
        "-c",
        str(CONFIGS / "test_rgb.yaml"),
        *args[5:],
        "--model.init_checkpoint",
        "null",
        "--data.test_annotations",
        str(data.val),
        "--trainer.callbacks.init_args.out_dir",
        str(tmp_path / "evaluation"),
        "--ckpt_path",
        "best",
    ]
    assert main(test_args) == 0
    out, err = capfd.readouterr()
    for noise in ("might freeze", "worker processes", "log_every_n_steps", "is not empty"):
        assert noise not in out + err, noise
    assert "Test metric" not in out and "DataLoader 0" not in out  # Lightning's metric table
    assert "Action Top-5 Accuracy" in out  # the project's table
    assert f"evaluation written to {tmp_path / 'evaluation'}" in out
    assert "test/loss " in out  # what the module logged besides the evaluator's report
    assert f"checkpoint written: {runs / 'rgb_sc' / 'checkpoints' / 'best.ckpt'}" in out
    # The test run in the stage folder records its config beside, not over, the training one.
    assert (runs / "rgb_sc" / "config.yaml").read_text() == trained_with
    assert "test_annotations" in (runs / "rgb_sc" / "config_test.yaml").read_text()


def test_validate_and_test_print_the_logged_names_not_lightnings_table(tmp_path, data, capfd):
    """``rulstm validate`` (and ``rulstm test`` without an evaluator) print the logged values
    under the logged names, one spelling each (row + column = ``val/action/top5/1.00s``),
    instead of Lightning's table of every name."""
    args = fit_args("rgb_sc", data, tmp_path / "runs", epochs=1)
    for stage, extra in (("val", []), ("test", ["--data.test_annotations", str(data.val)])):
        command = "validate" if stage == "val" else "test"
        capfd.readouterr()
        cli = build_cli([command, *args[1:], *extra])
        out, err = capfd.readouterr()
        assert "Validate metric" not in out and "Test metric" not in out and "┃" not in out
        lines = out.splitlines()
        (title,) = [line for line in lines if line.startswith(f"{stage} metrics")]
        assert f"{stage}/action/top1/1.00s" in title
        header = lines[lines.index(title) + 1].split()
        assert header == ["2.00s", "1.75s", "1.50s", "1.25s", "1.00s", "0.75s", "0.50s", "0.25s"]
        logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        for metric in ("top1", "top5", "recall5"):
            (row,) = [line for line in lines if line.startswith(f"{stage}/action/{metric}/ ")]
            values = [float(v) for v in row.split()[1:]]
            assert values == [round(logged[f"{stage}/action/{metric}/{w}"], 2) for w in header]
        assert f"{stage}/loss {logged[f'{stage}/loss']:.4f}" in out


def test_more_workers_than_cores_warn_once_naming_the_option(tmp_path, data, capfd, monkeypatch):
    # One usable core, two workers asked for: one line naming data.num_workers, instead of
    # PyTorch's "might freeze" warning once per loader.
    monkeypatch.setattr(datamodule.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    args = _without(fit_args("rgb_sc", data, tmp_path / "runs", epochs=1), "--data.num_workers")
    assert main([*args, "--data.num_workers", "2", "--trainer.limit_train_batches", "1"]) == 0
    out, err = capfd.readouterr()
    assert "might freeze" not in out + err and "worker processes in total" not in out + err
    warning = (
        "rulstm: warning: data.num_workers is 2 but this process may use 1 CPU core: more "
        "loader processes than cores slow the run down (or freeze the machine); set "
        "data.num_workers auto (1 here) or at most 1"
    )
    assert err.count(warning) == 1, err


def test_predict_without_a_writer_says_nothing_was_written(tmp_path, data, capsys):
    runs = tmp_path / "runs"
    args = fit_args("rgb_sc", data, runs, epochs=1)
    assert main(args) == 0
    capsys.readouterr()
    predict = ["predict", *args[1:], "--data.predict_annotations", str(data.val)]
    assert main([*predict, "--ckpt_path", "best", "--return_predictions", "false"]) == 0
    err = capsys.readouterr().err
    assert "rulstm: warning: rulstm predict wrote no file" in err
    assert "rulstm.evaluation.SubmissionWriter" in err and "predict_seen.yaml" in err
