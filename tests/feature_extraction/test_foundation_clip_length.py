"""The clip length follows what the video model accepts: V-JEPA 2 (tubelet 2) takes any even
length and refuses an odd one in one line; an image model takes no clip length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from feature_extraction.foundation import build_foundation_backbone

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")


def _tiny_vjepa2(folder: Path) -> Path:
    config = transformers.VJEPA2Config(
        crop_size=32, frames_per_clip=4, tubelet_size=2, patch_size=8, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0, pred_hidden_size=32,
        pred_num_hidden_layers=1, pred_num_attention_heads=2, pred_num_mask_tokens=2,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.VJEPA2Model(config).save_pretrained(folder)
    return folder


def test_vjepa2_takes_any_even_clip_length_and_refuses_an_odd_one(tmp_path: Path) -> None:
    folder = _tiny_vjepa2(tmp_path / "vjepa2")
    six = build_foundation_backbone(name="hf:vjepa2", weights=str(folder), clip_length=6)
    assert (six.clip_length, six.clip_stride) == (6, 4)  # not the config's 4 frames
    clips = torch.randint(0, 256, (1, 6, 48, 64, 3), dtype=torch.uint8)
    assert six(clips).shape == (1, 32)
    with pytest.raises(ValueError) as caught:
        build_foundation_backbone(name="hf:vjepa2", weights=str(folder), clip_length=5)
    message = str(caught.value)
    assert "\n" not in message and "tubelet size 2" in message and "5" in message
    with pytest.raises(ValueError, match="image model"):
        build_foundation_backbone(name="timm:test_vit", weights="none", clip_length=4)
