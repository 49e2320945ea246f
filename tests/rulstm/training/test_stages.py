"""The training stages end to end on a synthetic HDF5: SC -> anticipation -> fusion, early
recognition, learning, resuming, and 2-process DDP on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rulstm.cli import build_cli

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "ek55"
DIMS = {"rgb": 12, "flow": 12, "obj": 6}


def fit(stage: str, data, run_dir: Path, *extra: str, epochs: int = 12):
    return build_cli(fit_args(stage, data, run_dir, *extra, epochs=epochs))


def fit_args(stage: str, data, run_dir: Path, *extra: str, epochs: int = 12) -> list[str]:
    modalities = (
        list(DIMS)
        if "fusion" in stage
        else [stage.split("_")[-1] if stage.startswith("early") else stage.split("_")[0]]
    )
    args = [
        "fit",
        "-c",
        str(CONFIGS / "base.yaml"),
        "-c",
        str(CONFIGS / f"{stage}.yaml"),
        "--data.features",
        str({m: str(data.features[m]) for m in modalities}),
        "--data.train_annotations",
        str(data.train),
        "--data.val_annotations",
        str(data.val),
        "--data.actions",
        "null",
        "--data.batch_size",
        "16",
        "--data.num_workers",
        "0",
        "--model.net.init_args.hidden",
        "16",
        "--model.net.init_args.dropout",
        "0.1",
        "--model.optimizer.init_args.lr",
        "0.2",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.logger",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(run_dir / stage),
        *extra,
    ]
    return args


def best(run_dir: Path, stage: str) -> str:
    path = run_dir / stage / "checkpoints" / "best.ckpt"
    assert path.is_file(), f"{stage} did not write its best checkpoint"
    return str(path)


@pytest.mark.slow
def test_reference_stage_sequence_learns(tmp_path, synthetic_data):
    data = synthetic_data(dims=DIMS, num_classes=5, frames=3000)
    runs = tmp_path / "runs"
    for modality in DIMS:
        fit(f"{modality}_sc", data, runs)
        cli = fit(
            f"{modality}_anticipation",
            data,
            runs,
            "--model.init_checkpoint",
            best(runs, f"{modality}_sc"),
        )
        # Labels are predictable from the features: top-1 at 1 s well above chance (20 %).
        assert cli.trainer.callback_metrics["val/action/top1/1.00s"] > 60
    branches = {m: best(runs, f"{m}_anticipation") for m in DIMS}
    cli = fit("fusion", data, runs, "--model.branch_checkpoints", str(branches), epochs=2)
    metrics = cli.trainer.callback_metrics
    assert metrics["val/action/top5/1.00s"] == pytest.approx(100.0)
    weights = [metrics[f"val/attention/{m}"] for m in DIMS]
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_bf16_mixed_anticipation_learns(tmp_path, synthetic_data):
    data = synthetic_data(dims=DIMS, num_classes=5, frames=3000)
    cli = fit(
        "rgb_anticipation",
        data,
        tmp_path / "runs",
        "--model.init_checkpoint",
        "null",
        "--trainer.precision",
        "bf16-mixed",
    )
    # As the float32 stage in test_stages: top-1 at 1 s well above chance (20 %).
    assert cli.trainer.callback_metrics["val/action/top1/1.00s"] > 60


@pytest.mark.slow
def test_early_recognition_stages(tmp_path, synthetic_data):
    data = synthetic_data(dims=DIMS, num_classes=5, frames=3000)
    runs = tmp_path / "runs"
    for modality in DIMS:
        fit(f"early_{modality}", data, runs, epochs=1)
    branches = {m: best(runs, f"early_{m}") for m in DIMS}
    cli = fit("early_fusion", data, runs, "--model.branch_checkpoints", str(branches), epochs=1)
    assert "val/action/top1/100.0%" in cli.trainer.callback_metrics
    assert "val/action/top1/12.5%" in cli.trainer.callback_metrics


def test_checkpoint_carries_optimizer_state_and_resumes(tmp_path, synthetic_data):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    runs = tmp_path / "runs"
    fit("rgb_sc", data, runs, epochs=1)
    last = runs / "rgb_sc" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    momentum = checkpoint["optimizer_states"][0]["state"]
    assert momentum and all("momentum_buffer" in s for s in momentum.values())
    assert checkpoint["epoch"] == 0
    cli = fit("rgb_sc", data, runs, "--ckpt_path", str(last), epochs=2)
    assert cli.trainer.current_epoch == 2  # resumed at epoch 1, ran one more
    resumed = torch.load(last, map_location="cpu", weights_only=False)
    assert resumed["epoch"] > checkpoint["epoch"]
    assert resumed["global_step"] > checkpoint["global_step"]


def test_default_wandb_logger_is_offline_and_stays_in_the_stage_folder(
    tmp_path, synthetic_data, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    args = [a for a in fit_args("rgb_sc", data, tmp_path / "runs", epochs=1) if a]
    logger_at = args.index("--trainer.logger")
    del args[logger_at : logger_at + 2]  # keep the default logger
    cli = build_cli(args)
    assert type(cli.trainer.logger).__name__ == "WandbLogger"
    run = tmp_path / "runs" / "rgb_sc"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    # The offline W&B run and the saved config stay with the stage, not in the working folder.
    assert list((run / "wandb").glob("offline-run-*")), "W&B must log offline"
    assert (run / "config.yaml").is_file()
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "config.yaml").exists()


def test_bad_setup_fails_with_clear_errors(tmp_path, synthetic_data):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    with pytest.raises(ValueError, match="predicts 7 classes but the action vocabulary"):
        fit("rgb_sc", data, tmp_path, "--model.net.init_args.num_classes", "7", epochs=1)
    with pytest.raises(ValueError, match="rgb features are 12-d but the net expects 5-d"):
        fit("rgb_sc", data, tmp_path, "--model.net.init_args.feat_dim", "5", epochs=1)
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.ckpt"):
        fit(
            "rgb_anticipation",
            data,
            tmp_path,
            "--model.init_checkpoint",
            str(tmp_path / "nope.ckpt"),
        )


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path, synthetic_data):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=4, frames=600)
    command = [
        sys.executable,
        "-m",
        "rulstm.cli",
        "fit",
        "-c",
        str(CONFIGS / "base.yaml"),
        "-c",
        str(CONFIGS / "rgb_sc.yaml"),
        "--data.features",
        str({"rgb": str(data.features["rgb"])}),
        "--data.train_annotations",
        str(data.train),
        "--data.val_annotations",
        str(data.val),
        "--data.actions",
        "null",
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--model.net.init_args.hidden",
        "8",
        "--trainer.max_epochs",
        "1",
        "--trainer.logger",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "PL_DISABLE_FORK": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    assert "All distributed processes registered" in result.stderr + result.stdout
    assert (tmp_path / "ddp" / "checkpoints" / "best.ckpt").is_file()


def test_ckpt_path_best_and_last_resolve_in_a_new_process(tmp_path, synthetic_data):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    runs = tmp_path / "runs"
    fit("rgb_sc", data, runs, epochs=2)
    checkpoints = runs / "rgb_sc" / "checkpoints"

    def run(subcommand: str, which: str, *extra: str):
        args = fit_args("rgb_sc", data, runs, epochs=1)
        args[0] = subcommand
        return build_cli(
            [
                *args,
                "--data.test_annotations",
                str(data.val),
                "--data.predict_annotations",
                str(data.val),
                "--ckpt_path",
                which,
                *extra,
            ]
        )

    # A new CLI (nothing in memory from fit) finds the files from the callback's dirpath.
    assert run("test", "best").trainer.ckpt_path == str(checkpoints / "best.ckpt")
    assert run("validate", "last").trainer.ckpt_path == str(checkpoints / "last.ckpt")
    predict = run("predict", "best", "--return_predictions", "false")
    assert predict.trainer.ckpt_path == str(checkpoints / "best.ckpt")
    elsewhere = tmp_path / "elsewhere" / "checkpoints"
    message = rf"--ckpt_path best: no best\.ckpt in {elsewhere} \(the folder does not exist\)"
    with pytest.raises(FileNotFoundError, match=message):
        run("test", "best", "--trainer.default_root_dir", str(tmp_path / "elsewhere"))


def test_ckpt_path_best_without_a_checkpoint_callback_says_which_path_to_pass(
    tmp_path, synthetic_data
):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    args = fit_args("rgb_sc", data, tmp_path / "runs", epochs=1)
    no_callbacks = tmp_path / "no_callbacks.yaml"
    no_callbacks.write_text("trainer:\n  callbacks: []\n")
    args[0] = "test"
    args[5:5] = ["-c", str(no_callbacks)]  # Lightning's default checkpoint: no fixed name
    # The missing file and the folder searched, not a missing callback (issue 24.5).
    folder = tmp_path / "runs" / "rgb_sc" / "checkpoints"
    message = (
        rf"--ckpt_path best: no best\.ckpt in {folder} \(the folder does not exist\); train "
        rf"the stage there first \(rulstm fit with --trainer.default_root_dir {folder.parent}\)"
        r", or pass the checkpoint file to --ckpt_path$"
    )
    with pytest.raises(FileNotFoundError, match=message):
        build_cli([*args, "--data.test_annotations", str(data.val), "--ckpt_path", "best"])
    folder.mkdir(parents=True)
    (folder / "last.ckpt").touch()
    with pytest.raises(FileNotFoundError, match=r"no best\.ckpt in .* \(it holds last\.ckpt\)"):
        build_cli([*args, "--data.test_annotations", str(data.val), "--ckpt_path", "best"])
    (folder / "last.ckpt").unlink()
    # Once the stage has run, such a config (like the test_*.yaml ones) finds its files in
    # <default_root_dir>/checkpoints.
    fit("rgb_sc", data, tmp_path / "runs", epochs=1)
    cli = build_cli([*args, "--data.test_annotations", str(data.val), "--ckpt_path", "best"])
    assert cli.trainer.ckpt_path == str(tmp_path / "runs" / "rgb_sc" / "checkpoints" / "best.ckpt")


def test_wandb_mode_online_turns_syncing_on(tmp_path, synthetic_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    args = fit_args("rgb_sc", data, tmp_path / "runs", epochs=1)
    logger_at = args.index("--trainer.logger")
    del args[logger_at : logger_at + 2]  # keep the default logger
    args = args[1:]  # parse and instantiate only: no run, no network
    for mode, offline in (("online", False), (None, True)):
        if mode is None:
            monkeypatch.delenv("WANDB_MODE", raising=False)
        else:
            monkeypatch.setenv("WANDB_MODE", mode)
        cli = build_cli(args, run=False)
        logger = cli.trainer.logger
        assert type(logger).__name__ == "WandbLogger"
        # Neither the logger nor the environment forces offline when online was asked.
        assert logger._offline is False
        assert (os.environ["WANDB_MODE"] == "offline") is offline
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cli = build_cli([*args, "--wandb-online"], run=False)
    assert cli.trainer.logger._offline is False and os.environ["WANDB_MODE"] == "online"


def test_partial_validation_says_n_of_m_segments(tmp_path, synthetic_data, caplog):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    args = fit_args("rgb_sc", data, tmp_path / "runs", epochs=1)
    args[0] = "validate"
    batch_at = args.index("--data.batch_size")
    args[batch_at + 1] = "2"
    with caplog.at_level("WARNING"):
        cli = build_cli([*args, "--trainer.limit_val_batches", "1"])
    total = len(data.val.read_text().splitlines())
    assert total > 2
    assert f"val metrics of a partial run: 2 of {total} segments of the split" in caplog.text
    assert "val/action/top5/1.00s" in cli.trainer.callback_metrics


def test_a_full_validation_with_a_discarded_segment_is_not_partial(
    tmp_path, synthetic_data, caplog
):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    # A segment starting at frame 3: nothing observable before it, so EK55 drops it.
    with data.val.open("a") as split:
        split.write("early,P03_01,3,40,0,0,0\n")
    args = fit_args("rgb_sc", data, tmp_path / "runs", epochs=1)
    args[0] = "validate"
    with caplog.at_level("WARNING"):
        cli = build_cli(args)
    assert "val/action/top5/1.00s" in cli.trainer.callback_metrics
    assert "partial run" not in caplog.text
