"""Backbones: feature dims, seeded random init, checkpoints, cross-modality initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from feature_extraction.backbones import (
    FLOW_MEAN,
    IMAGENET_MEAN,
    build_flow_backbone,
    build_rgb_backbone,
    resolve_weights,
)


def _images(channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, channels, 32, 32), dtype=torch.uint8, generator=generator)


def test_rgb_features_are_the_pooled_input_of_the_classifier() -> None:
    backbone = build_rgb_backbone(name="resnet18", weights=None, seed=0)
    with torch.no_grad():
        features = backbone(_images())
    assert features.shape == (2, 512) and backbone.feature_dim == 512
    assert tuple(backbone.mean.flatten().tolist()) == pytest.approx(IMAGENET_MEAN)
    assert (features >= 0).all()  # after ReLU and average pooling


def test_random_init_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_rgb_backbone(name="resnet18", weights="none", seed=0)
    assert torch.rand(1) == expected_next  # global RNG untouched
    again = build_rgb_backbone(name="resnet18", weights=None, seed=0)
    other = build_rgb_backbone(name="resnet18", weights=None, seed=1)
    with torch.no_grad():
        a, b, c = first(_images()), again(_images()), other(_images())
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_input_size_resizes_before_the_trunk() -> None:
    backbone = build_rgb_backbone(name="resnet18", weights=None, input_size=(16, 24))
    seen = []
    backbone.trunk.conv1.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        backbone(_images())
    assert seen[0] == (2, 3, 16, 24)


def test_any_torchvision_classifier_by_name() -> None:
    backbone = build_rgb_backbone(name="mobilenet_v3_small", weights=None)
    with torch.no_grad():
        assert backbone(_images()).shape == (2, backbone.feature_dim) == (2, 1024)


def test_flow_backbone_averages_and_replicates_the_rgb_filters() -> None:
    rgb = build_rgb_backbone(name="resnet18", weights=None, seed=3)
    flow = build_flow_backbone(name="resnet18", weights=None, seed=3, stack=5)
    rgb_filters = rgb.trunk.conv1.weight  # (64, 3, 7, 7)
    flow_filters = flow.trunk.conv1.weight  # (64, 10, 7, 7)
    assert flow_filters.shape == (64, 10, 7, 7)
    expected = rgb_filters.mean(dim=1, keepdim=True).expand(-1, 10, -1, -1)
    assert torch.allclose(flow_filters, expected)
    assert torch.equal(flow.trunk.layer1[0].conv1.weight, rgb.trunk.layer1[0].conv1.weight)
    assert flow.mean.flatten().tolist() == pytest.approx([FLOW_MEAN] * 10)
    with torch.no_grad():
        assert flow(_images(channels=10)).shape == (2, 512)


def test_local_checkpoints_load_for_rgb_and_flow(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18(num_classes=7)
    checkpoint = tmp_path / "resnet18.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, checkpoint
    )
    rgb = build_rgb_backbone(name="resnet18", weights=str(checkpoint), seed=99)
    assert torch.equal(rgb.trunk.conv1.weight, reference.conv1.weight)
    flow = build_flow_backbone(name="resnet18", weights=str(checkpoint), seed=99)
    assert torch.allclose(flow.trunk.conv1.weight[:, 4], reference.conv1.weight.mean(dim=1))
    # A converted flow checkpoint loads as is.
    torch.save(flow.trunk.state_dict(), tmp_path / "flow.pt")
    again = build_flow_backbone(name="resnet18", weights=str(tmp_path / "flow.pt"), seed=5)
    assert torch.equal(again.trunk.conv1.weight, flow.trunk.conv1.weight)


def test_weight_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        resolve_weights("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        resolve_weights("resnet18", "NOT_A_WEIGHT")
    assert resolve_weights("resnet18", "DEFAULT") == torchvision.models.ResNet18_Weights.DEFAULT
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "extra.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="does not fit"):
        build_rgb_backbone(name="resnet18", weights=str(wrong))
