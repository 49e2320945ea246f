"""``--trainer.precision bf16-mixed`` runs every kind of stage on CPU, with float32 losses
(test_stages.py checks that a bf16-mixed stage learns)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


pytestmark = pytest.mark.skipif(not _bf16_available(), reason="no CPU bf16 autocast")


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
