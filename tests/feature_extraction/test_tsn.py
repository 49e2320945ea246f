"""TSN checkpoints in the RU-LSTM authors' layout, and their preprocessing, restated here
independently with torchvision transforms on PIL images (as the authors' scripts do)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from feature_extraction.backbones import build_flow_backbone, build_rgb_backbone
from feature_extraction.bninception import BNInception
from feature_extraction.tsn import CheckpointError, TSNBackbone


def _authors_checkpoint(path: Path, model: nn.Module, *, counters: bool = False) -> Path:
    """{'state_dict': {'module.base_model.<name>': ..., 'module.new_fc.*': ...}}, without the
    BatchNorm counters like the PyTorch 0.3-era TSN files."""
    state = {
        f"module.base_model.{key}": value
        for key, value in model.state_dict().items()
        if counters or not key.endswith("num_batches_tracked")
    }
    state["module.new_fc.weight"] = torch.randn(5, 1024)
    state["module.new_fc.bias"] = torch.zeros(5)
    torch.save({"epoch": 3, "arch": "BNInception", "state_dict": state}, path)
    return path


def test_an_authors_checkpoint_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = BNInception(in_channels=10)
    path = _authors_checkpoint(tmp_path / "TSN-flow.pth.tar", source)
    loaded = build_flow_backbone(name="bninception", weights=str(path), seed=99)
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.trunk.state_dict()[key], value), key
    assert loaded.feature_dim == 1024


def test_wrong_checkpoints_fail_naming_the_file_and_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rgb = BNInception(in_channels=3)
    rgb_path = _authors_checkpoint(tmp_path / "TSN-rgb.pth.tar", rgb)
    # An RGB network where a flow network is expected: the first convolution's channels.
    with pytest.raises(CheckpointError, match=r"TSN-rgb\.pth\.tar.*conv1_7x7_s2\.weight"):
        build_flow_backbone(name="bninception", weights=str(rgb_path))
    # Another layout ('module.features.<name>'): everything missing and unexpected.
    state = {f"module.features.{k}": v for k, v in rgb.state_dict().items()}
    other = tmp_path / "other.pth"
    torch.save({"state_dict": state}, other)
    with pytest.raises(CheckpointError, match=r"other\.pth.*missing keys.*conv1_7x7_s2"):
        build_rgb_backbone(name="bninception", weights=str(other))
    # One tensor missing.
    state = torch.load(rgb_path, weights_only=True)
    del state["state_dict"]["module.base_model.inception_4c_3x3_bn.running_var"]
    torch.save(state, tmp_path / "cut.pth.tar")
    with pytest.raises(CheckpointError, match=r"cut\.pth\.tar.*inception_4c_3x3_bn\.running_var"):
        build_rgb_backbone(name="bninception", weights=str(tmp_path / "cut.pth.tar"))
    with pytest.raises(ValueError, match="bninception has no weights named"):
        build_rgb_backbone(name="bninception", weights="DEFAULT")


class _Recorder(nn.Module):
    """A trunk that keeps its input and returns a fixed-size feature."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return x.flatten(1)[:, :4]


def _image(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def test_rgb_preprocessing_matches_the_authors_transforms() -> None:
    rng = np.random.default_rng(0)
    images = [_image(rng, 24, 40, 3) for _ in range(2)]
    reference = transforms.Compose(
        [
            transforms.Resize([20, 34]),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: x[[2, 1, 0], ...] * 255),
            transforms.Normalize(mean=[104, 117, 128], std=[1, 1, 1]),
        ]
    )
    expected = torch.stack([reference(Image.fromarray(image)) for image in images])
    trunk = _Recorder()
    backbone = TSNBackbone(trunk=trunk, feature_dim=4, modality="rgb", input_size=(20, 34))
    backbone(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))  # (B, H, W, 3) -> NCHW
    assert torch.equal(trunk.seen, expected)
    # A deliberate mistake (RGB order) is caught by the same comparison.
    assert not torch.equal(trunk.seen[:, [2, 1, 0]], expected)


def test_flow_preprocessing_matches_the_authors_transforms() -> None:
    rng = np.random.default_rng(1)
    stack = _image(rng, 10, 24, 40)  # u, v, u, v, ... (10, H, W)
    reference = transforms.Compose(
        [
            transforms.Resize([20, 34]),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: x * 255),
            transforms.Normalize(mean=[128], std=[1]),
        ]
    )
    expected = torch.cat([reference(Image.fromarray(c).convert("L")) for c in stack])[None]
    trunk = _Recorder()
    backbone = TSNBackbone(trunk=trunk, feature_dim=4, modality="flow", input_size=(20, 34))
    backbone(torch.from_numpy(stack)[None])
    assert torch.equal(trunk.seen, expected)
    with pytest.raises(TypeError, match="8-bit"):
        backbone(torch.zeros(1, 10, 20, 34, dtype=torch.float16))
