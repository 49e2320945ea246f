"""Feature backbones: torchvision classifiers without their last layer, for RGB and flow.

* Any torchvision classification model works by name (``torchvision.models.get_model``).
  The feature is the input of the model's final ``nn.Linear`` (for ResNets: the 2048-d
  global-average-pooled vector), found by replacing that layer with ``nn.Identity``.
* Weights: a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V2"``; downloaded on first
  use), a local checkpoint path (a state dict, possibly under ``"state_dict"``/``"model"``),
  or ``None``/``"none"`` for a random initialisation seeded with ``seed``.
* The flow backbone takes a stack of 5 (u, v) fields (10 channels). Its first convolution is
  built from the RGB one by cross-modality initialisation (TSN): the RGB filters are averaged
  over their 3 input channels and the average is replicated over the 10 flow channels.
* ``bninception`` (the project's own :class:`~feature_extraction.bninception.BNInception`, 1024-d)
  is the TSN backbone of the RU-LSTM features: weights are ``None`` (random, seeded) or a TSN
  checkpoint in the authors' layout, loaded strictly (:mod:`feature_extraction.tsn`); its flow
  variant takes ``2 * stack`` channels in ``conv1_7x7_s2`` and no conversion is done.
* ``preprocessing``: ``torchvision`` (scale to [0, 1], resize with torch, normalise with the
  weights' mean and std) or ``tsn`` (the RU-LSTM authors' exact preprocessing, see
  :class:`~feature_extraction.tsn.TSNBackbone`); for RGB ``family:architecture`` backbones
  the default is the library's own transform and ``tensor`` its batched torch version
  (:mod:`feature_extraction.foundation_tensor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from epic_protocol.errors import WeightsUnavailableError
from feature_extraction.foundation import (
    FoundationBackbone,
    build_foundation_backbone,
    split_backbone,
)
from feature_extraction.foundation_tensor import TENSOR, RGBPreprocessing
from feature_extraction.memory_format import channels_last_input
from feature_extraction.tsn import Preprocessing, TSNBackbone, TSNModality
from feature_extraction.weights import is_random_weights, seeded

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Flow images are in [0, 1] with no motion at 0.5; dividing by the mean ImageNet std gives the
# averaged RGB filters inputs on the scale they were trained on.
FLOW_MEAN = 0.5
FLOW_STD = sum(IMAGENET_STD) / 3
_CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".tar"}


class PooledBackbone(nn.Module):
    """Images in, one feature vector per image out.

    ``forward`` takes (B, C, H, W) uint8 (scaled by 1/255) or float in [0, 1], resizes to
    ``input_size`` (height, width) when given, normalises with ``mean``/``std`` and returns
    the trunk's (B, feature_dim) output as float32. ``channels_last`` (set by
    :func:`feature_extraction.memory_format.configure_channels_last`): the trunk's input is
    made channels-last.
    """

    channels_last = False

    def __init__(
        self,
        *,
        trunk: nn.Module,
        feature_dim: int,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.input_size = tuple(input_size) if input_size is not None else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = nn.functional.interpolate(
                x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True
            )
        x = channels_last_input((x - self.mean) / self.std, self.channels_last)
        return self.trunk(x).float().flatten(1)  # (B, D, ...) -> (B, D)


def _parent_and_name(model: nn.Module, qualified: str) -> tuple[nn.Module, str]:
    parent_name, _, child = qualified.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def strip_classifier(model: nn.Module) -> tuple[str, int]:
    """Replace the model's last ``nn.Linear`` by ``nn.Identity`` (in place).

    Returns the replaced layer's qualified name and its input size (the feature dim)."""
    linears = [
        (name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)
    ]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to remove")
    name, layer = linears[-1]
    parent, child = _parent_and_name(model, name)
    setattr(parent, child, nn.Identity())
    return name, layer.in_features


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name, module
    raise ValueError(f"{type(model).__name__} has no 3-channel nn.Conv2d to adapt to flow")


def cross_modality_weight(rgb_weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, 3, kh, kw) RGB filters -> (O, in_channels, kh, kw): channel mean, replicated."""
    mean = rgb_weight.mean(dim=1, keepdim=True)  # (O, 3, kh, kw) -> (O, 1, kh, kw)
    return mean.expand(-1, in_channels, -1, -1).contiguous()  # -> (O, C, kh, kw)


def adapt_first_conv(model: nn.Module, *, in_channels: int) -> str:
    """Make the model take ``in_channels`` inputs by cross-modality initialisation (in place).
    Returns the convolution's qualified name."""
    name, conv = _first_conv(model)
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(cross_modality_weight(conv.weight, in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, child = _parent_and_name(model, name)
    setattr(parent, child, new)
    return name


def resolve_weights(model_name: str, weights: str | None) -> WeightsEnum | Path | None:
    """``None`` (random), a local checkpoint path, or a torchvision weights enum member."""
    if is_random_weights(weights):
        return None
    assert weights is not None
    path = Path(weights).expanduser()
    if path.suffix.lower() in _CHECKPOINT_SUFFIXES or path.exists() or "/" in weights:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (weights of {model_name})")
        return path
    try:
        enum = torchvision.models.get_model_weights(model_name)
    except ValueError as error:
        raise ValueError(f"unknown torchvision model {model_name!r}: {error}") from error
    try:
        return enum.verify(weights if weights != "DEFAULT" else enum.DEFAULT)
    except (KeyError, ValueError) as error:
        options = ", ".join(["DEFAULT", *(member.name for member in enum)])
        raise ValueError(
            f"unknown weights {weights!r} for {model_name}; choose one of {options}, a "
            "checkpoint path, or none (random init)"
        ) from error


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file (plain, or under 'state_dict'/'model')."""
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} does not hold a state dict")
    return {
        (key[len("module.") :] if key.startswith("module.") else key): value
        for key, value in checkpoint.items()
        if isinstance(value, torch.Tensor)
    }


def _build_torchvision(model_name: str, weights: WeightsEnum | None, **kwargs: Any) -> nn.Module:
    try:
        return torchvision.models.get_model(model_name, weights=weights, **kwargs)
    except ValueError as error:
        raise ValueError(f"cannot build torchvision model {model_name!r}: {error}") from error
    except OSError as error:  # URLError is an OSError: no internet for the download
        raise WeightsUnavailableError(
            f"cannot download the {weights} weights of {model_name} ({error}); put them in "
            "the torch hub cache, pass a local checkpoint path, or use weights: none"
        ) from error


def _load_into(
    model: nn.Module, state: dict[str, torch.Tensor], *, drop_prefix: str, source: Path
) -> None:
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefix + ".")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"checkpoint {source} does not fit the model: {error}") from error
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {source} does not fit the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _normalisation(
    weights: WeightsEnum | Path | None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(weights, WeightsEnum):
        transforms = weights.transforms()
        mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
        if mean is not None and std is not None:
            return tuple(mean), tuple(std)
    return IMAGENET_MEAN, IMAGENET_STD


Backbone = PooledBackbone | TSNBackbone | FoundationBackbone
OWN_BACKBONES = ("bninception",)


def _build_bninception(*, in_channels: int, weights: str | None, seed: int) -> nn.Module:
    from feature_extraction.bninception import BNInception
    from feature_extraction.tsn import load_backbone_strictly

    with seeded(seed):
        model = BNInception(in_channels=in_channels)
    if not is_random_weights(weights):
        assert weights is not None
        path = Path(weights).expanduser()
        if not path.is_file():
            if path.suffix.lower() in _CHECKPOINT_SUFFIXES or "/" in weights:
                raise FileNotFoundError(f"checkpoint not found: {path} (weights of bninception)")
            raise ValueError(
                f"bninception has no weights named {weights!r}: give the path of a TSN "
                "checkpoint (TSN-rgb.pth.tar, TSN-flow.pth.tar) or none (random init)"
            )
        load_backbone_strictly(model, path, what=f"BNInception with {in_channels} input channels")
    return model.eval()


def _wrap(
    trunk: nn.Module,
    *,
    dim: int,
    preprocessing: Preprocessing,
    modality: TSNModality,
    mean: Sequence[float],
    std: Sequence[float],
    input_size: tuple[int, int] | None,
) -> Backbone:
    if preprocessing == "tsn":
        return TSNBackbone(trunk=trunk, feature_dim=dim, modality=modality, input_size=input_size)
    if preprocessing != "torchvision":
        raise ValueError(f"unknown preprocessing {preprocessing!r} (torchvision or tsn)")
    return PooledBackbone(trunk=trunk, feature_dim=dim, mean=mean, std=std, input_size=input_size)


def build_rgb_backbone(
    *,
    name: str = "resnet50",
    weights: str | None = "DEFAULT",
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    preprocessing: RGBPreprocessing = "torchvision",
    projection: bool = True,
    clip_length: int | None = None,
    clip_stride: int = 4,
) -> Backbone:
    """A torchvision classifier, ``bninception``, or a ``family:architecture`` foundation
    model (:mod:`feature_extraction.foundation`; ``projection``, ``clip_length`` and
    ``clip_stride`` are its options) as an RGB feature extractor (see the module
    docstring)."""
    if split_backbone(name) is not None:
        if input_size is not None or preprocessing not in ("torchvision", TENSOR):
            raise ValueError(
                f"rgb.backbone {name}: the library's own preprocessing sets the input size; "
                "leave rgb.input_size null and rgb.preprocessing at its default (the library's "
                "transform) or tensor"
            )
        return build_foundation_backbone(
            name=name,
            weights=weights,
            seed=seed,
            projection=projection,
            clip_length=clip_length,
            clip_stride=clip_stride,
            tensor_preprocessing=preprocessing == TENSOR,
        )
    if preprocessing == TENSOR:
        raise ValueError(
            f"rgb.preprocessing tensor is for family:architecture backbones (timm:, "
            f"open_clip:, hf:); {name} takes torchvision or tsn"
        )
    if name == "bninception":
        trunk = _build_bninception(in_channels=3, weights=weights, seed=seed)
        return _wrap(
            trunk,
            dim=trunk.feature_dim,
            preprocessing=preprocessing,
            modality="rgb",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            input_size=input_size,
        )
    resolved = resolve_weights(name, weights)
    with seeded(seed):
        model = _build_torchvision(name, resolved if isinstance(resolved, WeightsEnum) else None)
    head, dim = strip_classifier(model)
    if isinstance(resolved, Path):
        _load_into(model, load_state_dict(resolved), drop_prefix=head, source=resolved)
    mean, std = _normalisation(resolved)
    return _wrap(
        model.eval(),
        dim=dim,
        preprocessing=preprocessing,
        modality="rgb",
        mean=mean,
        std=std,
        input_size=input_size,
    )


def build_flow_backbone(
    *,
    name: str = "resnet50",
    weights: str | None = "DEFAULT",
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    stack: int = 5,
    preprocessing: Preprocessing = "torchvision",
) -> Backbone:
    """The RGB backbone turned into a ``2 * stack``-channel flow backbone (cross-modality
    initialisation). A checkpoint may hold either the RGB model (its first convolution is
    converted) or an already converted flow model; a ``bninception`` checkpoint must be a
    flow model (TSN-flow)."""
    if split_backbone(name) is not None:
        raise ValueError(
            f"flow.backbone {name}: foundation backbones are for RGB; flow takes a torchvision "
            "classifier or bninception"
        )
    in_channels = 2 * stack
    flow_norm = {"mean": (FLOW_MEAN,) * in_channels, "std": (FLOW_STD,) * in_channels}
    if name == "bninception":
        trunk = _build_bninception(in_channels=in_channels, weights=weights, seed=seed)
        return _wrap(
            trunk,
            dim=trunk.feature_dim,
            preprocessing=preprocessing,
            modality="flow",
            input_size=input_size,
            **flow_norm,
        )
    resolved = resolve_weights(name, weights)
    with seeded(seed):
        model = _build_torchvision(name, resolved if isinstance(resolved, WeightsEnum) else None)
    head, dim = strip_classifier(model)
    conv_name, _ = _first_conv(model)
    if isinstance(resolved, Path):
        state = load_state_dict(resolved)
        key = f"{conv_name}.weight"
        if key in state and state[key].shape[1] == 3:
            state[key] = cross_modality_weight(state[key], in_channels)
        adapt_first_conv(model, in_channels=in_channels)
        _load_into(model, state, drop_prefix=head, source=resolved)
    else:
        adapt_first_conv(model, in_channels=in_channels)
    return _wrap(
        model.eval(),
        dim=dim,
        preprocessing=preprocessing,
        modality="flow",
        input_size=input_size,
        **flow_norm,
    )
