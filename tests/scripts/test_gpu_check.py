"""``scripts/gpu_check.sh`` in quick mode on whatever machine runs the suite (a CPU here): every
part passes, so the one run that measures a GPU cannot fail on the script itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
PARTS = (
    "training step",
    "HDF5 DataLoader",
    "extraction: RAFT, Faster R-CNN, ResNet-50",
    "extraction: BNInception (TSN) backbones",
    "extraction: foundation backbones",
    "extraction: video foundation backbone (videomae.yaml, rulstm-extract)",
    "online step",
    "rulstm fit --trainer.devices 1 --trainer.precision auto",
)


@pytest.mark.slow
def test_quick_mode_passes_every_part(tmp_path):
    summary = tmp_path / "summary.txt"
    env = {
        **os.environ,
        "GPU_CHECK_QUICK": "1",
        # The parts' time limits guard against hangs; on a loaded CI machine a tiny fit can take
        # minutes, and this test checks that every part runs, not how fast.
        "GPU_CHECK_LIMIT_SCALE": "10",
        "PYTHON": sys.executable,
        "TMPDIR": str(tmp_path),
        "WANDB_MODE": "disabled",
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), str(summary)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    text = summary.read_text()
    assert result.returncode == 0, text[-3000:]
    assert "gpu_check finished: 0 part(s) failed" in text
    assert "FAILED" not in text and "!!!" not in text
    for part in PARTS:
        assert f"=== {part}" in text, part
    # The CPU line of the precision rule, and the training run's best checkpoint was read.
    assert "bf16 native:" in text
    assert text.count("best val/action/top5/1.00s:") == 1
    # The foundation families side by side (one table row each) and the video model's file.
    for label in (
        "timm test_vit",
        "OpenCLIP tiny",
        "DINOv2 tiny",
        "VideoMAE tiny",
        "V-JEPA 2 tiny",
    ):
        assert f"| test | {label}" in text, label
    assert "video model features: 60 x 32, hf:" in text
    # The work folder is removed on exit.
    assert not list(tmp_path.glob("gpu_check.*"))
