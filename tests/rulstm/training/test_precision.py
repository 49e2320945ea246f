"""``--trainer.precision bf16-mixed`` runs every kind of stage on CPU, with float32 losses
(test_stages.py checks that a bf16-mixed stage learns)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from epic_protocol.precision import EmulatedBf16Warning
from rulstm.cli import build_cli

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "ek55"
DIMS = {"rgb": 12, "flow": 12, "obj": 6}
STAGES = [
    "rgb_sc",
    "rgb_anticipation",
    "fusion",
    "early_rgb",
    "early_fusion",
    "baseline_lstm_rgb",
    "baseline_tcn_rgb",
    "baseline_rugru_rgb",
    "baseline_transformer_rgb",
]


def _bf16_available() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except RuntimeError:
        return False
    return True


needs_bf16_autocast = pytest.mark.skipif(not _bf16_available(), reason="no CPU bf16 autocast")


@needs_bf16_autocast
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_under_bf16_mixed(stage, tmp_path, synthetic_data, fast_dev_run_args):
    data = synthetic_data(dims=DIMS, videos=3, frames=600, num_classes=4)
    modalities = list(DIMS) if "fusion" in stage else ["rgb"]
    net_dims = (
        ["--model.net.init_args.feat_dims", str({m: DIMS[m] for m in modalities})]
        if "fusion" in stage
        else ["--model.net.init_args.feat_dim", str(DIMS["rgb"])]
    )
    args = fast_dev_run_args(
        CONFIGS / "base.yaml",
        CONFIGS / f"{stage}.yaml",
        features={m: data.features[m] for m in modalities},
        train=data.train,
        val=data.val,
        root=tmp_path / "run",
    )
    args += [*net_dims, "--model.net.init_args.num_classes", "4"]
    args += ["--trainer.precision", "bf16-mixed"]
    cli = build_cli(args)
    assert cli.trainer.state.finished
    assert cli.trainer.precision == "bf16-mixed"
    loss = cli.trainer.callback_metrics["train/loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # Parameters (and so checkpoints) stay float32: autocast only lowers the products.
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())


def _stage_args(stage, tmp_path, synthetic_data, fast_dev_run_args, *extra: str) -> list[str]:
    data = synthetic_data(dims=DIMS, videos=3, frames=600, num_classes=4)
    args = fast_dev_run_args(
        CONFIGS / "base.yaml",
        CONFIGS / f"{stage}.yaml",
        features={"rgb": data.features["rgb"]},
        train=data.train,
        val=data.val,
        root=tmp_path / "run",
    )
    return [*args, "--model.net.init_args.feat_dim", "12", *extra]


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_resolves_by_the_rule_before_lightning(
    native, expected, tmp_path, synthetic_data, fast_dev_run_args, force_bf16_native
):
    """``--trainer.precision auto`` reaches the Trainer as bf16-mixed only where the CPU has
    native bf16 (both branches forced; a stage without nn.LSTM, which has no bf16 kernel when
    the real CPU lacks native bf16)."""
    force_bf16_native(native)
    args = _stage_args(
        "baseline_tcn_rgb", tmp_path, synthetic_data, fast_dev_run_args,
        "--trainer.precision", "auto",
    )  # fmt: skip
    cli = build_cli(args)
    assert cli.trainer.state.finished
    assert cli.trainer.precision == expected
    assert cli.config.fit.trainer.precision == expected  # what config.yaml records


def test_explicit_bf16_on_a_cpu_without_native_bf16_warns_and_runs(
    tmp_path, synthetic_data, fast_dev_run_args, force_bf16_native
):
    force_bf16_native(False)
    args = _stage_args(
        "baseline_lstm_rgb", tmp_path, synthetic_data, fast_dev_run_args,
        "--trainer.precision", "bf16-mixed",
    )  # fmt: skip
    with pytest.warns(EmulatedBf16Warning, match="bf16-mixed.*emulated"):
        cli = build_cli(args)
    assert cli.trainer.state.finished and cli.trainer.precision == "bf16-mixed"
