"""``scripts/bench_extract.py --backbones``: every foundation family side by side in one run,
one Markdown row each, with FLOPs per feature and EK100's sparse feature count (tiny random
models: the script, not the speed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]


def _rows(*arguments: str) -> dict[str, list[str]]:
    """Run the benchmark; its table rows by backbone label (cells after the label)."""
    environment = dict(os.environ, WANDB_MODE="disabled")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_extract.py"), "--backbones", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("| test |")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {row[1]: row[2:] for row in cells}


@pytest.mark.slow
def test_every_family_is_timed_side_by_side_with_flops_and_ek100_counts() -> None:
    timed = _rows(
        "--sizes", "test", "--repeat", "1", "--precision", "32", "--flops", "--ek100"
    )  # fmt: skip
    assert list(timed) == [
        "timm test_vit",
        "OpenCLIP tiny ViT (config file)",
        "DINOv2 tiny (`hf:`)",
        "VideoMAE tiny (`hf:`), T=4",
        "V-JEPA 2 tiny (`hf:`), T=4",
    ]
    # dim, params, frames, batch, features/s 32-true, GFLOP, EK100 features (decoded), then
    # sparse and dense hours at the measured rate and at the assumed TFLOP/s
    for label, cells in timed.items():
        assert len(cells) == 11, (label, cells)
        assert float(cells[4]) > 0 and float(cells[5]) > 0 and float(cells[7]) > 0
        assert float(cells[9]) > float(cells[7])  # dense: every frame
    assert timed["OpenCLIP tiny ViT (config file)"][0] == "24"  # the projected embedding
    assert timed["VideoMAE tiny (`hf:`), T=4"][3] == "2 clips"
    image_count, video_count = timed["timm test_vit"][6], timed["VideoMAE tiny (`hf:`), T=4"][6]
    features, decoded = (int(x.strip("()").replace(",", "")) for x in video_count.split())
    # One feature per needed frame for both kinds; a clip decodes earlier frames too.
    assert image_count.split()[0] == video_count.split()[0]
    assert decoded > features > 100_000

    # Counted on the meta device (nothing computed), the FLOPs are the same.
    counted = _rows("--sizes", "test", "--flops_only", "--only", "tiny")
    assert len(counted) == 4
    for label, cells in counted.items():
        assert cells[4] == timed[label][5], label


@pytest.mark.slow
def test_library_and_tensor_preprocessing_side_by_side() -> None:
    """``--preprocessing library tensor``: per row the preprocessing alone and end to end for
    both paths, in one run; ``--preprocess_only`` leaves the forward out."""
    timed = _rows(
        "--sizes", "test", "--repeat", "1", "--precision", "32",
        "--preprocessing", "library", "tensor",
    )  # fmt: skip
    assert len(timed) == 5
    # dim, params, frames, batch, preprocess/s library and tensor, features/s library and tensor
    for label, cells in timed.items():
        assert len(cells) == 8, (label, cells)
        assert all(float(c) > 0 for c in cells[4:]), (label, cells)
    alone = _rows("--sizes", "test", "--repeat", "1", "--preprocessing", "library", "tensor",
                  "--preprocess_only", "--only", "V-JEPA")  # fmt: skip
    assert list(alone) == ["V-JEPA 2 tiny (`hf:`), T=4"]
    cells = alone["V-JEPA 2 tiny (`hf:`), T=4"]
    assert len(cells) == 6 and float(cells[4]) > 0 and float(cells[5]) > 0
