"""Channels-last memory format of the extraction backbones (``rgb.channels_last``)."""

from __future__ import annotations

import pytest
import torch

from feature_extraction.backbones import build_rgb_backbone
from feature_extraction.config import load_config
from feature_extraction.foundation import build_foundation_backbone
from feature_extraction.memory_format import configure_channels_last, resolve_channels_last
from feature_extraction.models import build_models, provenance

CHANNELS_LAST = torch.channels_last


def _images(k: int = 2, h: int = 64, w: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (k, 3, h, w), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize(
    ("name", "preprocessing", "dim"),
    [
        ("resnet18", "torchvision", 512),
        ("bninception", "torchvision", 1024),
        ("bninception", "tsn", 1024),
    ],
)
def test_cnn_features_with_channels_last_equal_without_and_weights_are_channels_last(
    name: str, preprocessing: str, dim: int
) -> None:
    kwargs = {"name": name, "weights": None, "seed": 0, "preprocessing": preprocessing}
    off, on = build_rgb_backbone(**kwargs), build_rgb_backbone(**kwargs)
    assert configure_channels_last(off, False) is False
    assert configure_channels_last(on, True) is True
    conv = next(m for m in on.trunk.modules() if isinstance(m, torch.nn.Conv2d)).weight
    assert conv.is_contiguous(memory_format=CHANNELS_LAST) and not conv.is_contiguous()
    with torch.no_grad():
        expected, got = off(_images(h=96, w=96)), on(_images(h=96, w=96))
    assert got.shape == expected.shape == (2, dim)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_convnext_features_with_channels_last_equal_without() -> None:
    pytest.importorskip("timm")
    frames = _images(h=48, w=56).permute(0, 2, 3, 1).contiguous()  # (K, H, W, 3)
    off = build_foundation_backbone(name="timm:convnext_atto", weights="none", seed=0)
    on = build_foundation_backbone(name="timm:convnext_atto", weights="none", seed=0)
    assert configure_channels_last(off, False) is False
    assert configure_channels_last(on, "auto") is True  # a ConvNeXt is convolutional
    assert on.model.stem[0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        expected, got = off(frames), on(frames)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_auto_is_on_for_cnns_and_off_for_vits_video_and_bninception() -> None:
    pytest.importorskip("timm")
    resnet = build_rgb_backbone(name="resnet18", weights=None, seed=0)
    assert resolve_channels_last("auto", resnet) is True
    assert resolve_channels_last("auto", resnet, video=True) is False
    assert resolve_channels_last(False, resnet) is False
    vit = build_foundation_backbone(name="timm:vit_tiny_patch16_224", weights="none", seed=0)
    assert configure_channels_last(vit, "auto") is False
    assert vit.model.patch_embed.proj.weight.is_contiguous()
    tsn = build_rgb_backbone(name="bninception", weights=None, seed=0, preprocessing="tsn")
    assert configure_channels_last(tsn, "auto") is False  # bit-exact to the reference
    bninception = build_rgb_backbone(name="bninception", weights=None, seed=0)
    assert configure_channels_last(bninception, "auto") is True
    with pytest.raises(ValueError, match="channels_last"):
        resolve_channels_last("yes", resnet)  # type: ignore[arg-type]


def test_channels_last_is_recorded_but_not_hashed() -> None:
    base = ["--modalities", "rgb", "flow", "--device", "cpu", "--rgb.backbone", "resnet18"]
    base += ["--rgb.weights", "none", "--flow.backbone", "resnet18", "--flow.weights", "none"]
    base += ["--flow.method", "dis"]
    records = {}
    for value in ("true", "false", "auto"):
        config = load_config(None, [*base, "--rgb.channels_last", value])
        assert config.rgb.channels_last == {"true": True, "false": False}.get(value, value)
        models = build_models(config)
        records[value] = provenance(models, "rgb")
        assert provenance(models, "flow")["backbone"]["channels_last"] is True  # auto, a CNN
    assert records["true"]["backbone"]["channels_last"] is True
    assert records["false"]["backbone"]["channels_last"] is False
    assert records["auto"]["backbone"]["channels_last"] is True
    assert len({record["config_hash"] for record in records.values()}) == 1
    assert "channels_last" not in records["true"]["settings"]["rgb"]
