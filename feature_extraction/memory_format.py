"""Channels-last memory format for the convolutional image backbones (``rgb.channels_last``,
``flow.channels_last``).

With ``torch.channels_last`` a (B, C, H, W) tensor is stored as (B, H, W, C); oneDNN (CPU) and
cuDNN (GPU tensor cores) run convolutions faster in that layout. The numbers are the same up
to float rounding (a different summation order), so the setting is left out of the config
hash; the resolved value is recorded in the file's backbone provenance (``"mixed"``, with both
values, when a resumed run used the other one: :func:`epic_protocol.backbones.combine_records`).

``auto`` turns it on for convolutional image models (torchvision CNNs, BN-Inception, timm
ConvNeXt / EfficientNet / ResNet ...) and off for transformers (a ViT's only convolution is its
patch embedding), video models (5-D clips) and BN-Inception behind the TSN preprocessing
(its float32 output is bit-equal to the reference's). Rule: at least :data:`MIN_SPATIAL_CONVS`
``nn.Conv2d`` layers with a kernel larger than 1x1. (A parameter-share rule would miss
ConvNeXt, whose parameters are mostly in its ``nn.Linear`` MLPs though its compute is
conv-shaped.)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

#: ``rgb.channels_last`` / ``flow.channels_last``: ``auto``, or on/off.
ChannelsLast = bool | Literal["auto"]

#: Spatial (kernel > 1x1) nn.Conv2d layers from which ``auto`` calls a model convolutional.
MIN_SPATIAL_CONVS = 8


def spatial_convs(model: nn.Module) -> int:
    """Number of ``nn.Conv2d`` layers of ``model`` with a kernel larger than 1x1."""
    return sum(
        1
        for module in model.modules()
        if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)
    )


def resolve_channels_last(setting: ChannelsLast, model: nn.Module, *, video: bool = False) -> bool:
    """``setting`` resolved for ``model``: ``auto`` is on for a convolutional image model
    (:data:`MIN_SPATIAL_CONVS`), off for video models and transformers.

    Raises ValueError on another string."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"channels_last: expected auto, true or false, got {setting!r}")
    return not video and spatial_convs(model) >= MIN_SPATIAL_CONVS


def configure_channels_last(backbone: nn.Module, setting: ChannelsLast) -> bool:
    """Resolve ``setting`` for ``backbone`` (a PooledBackbone, TSNBackbone or
    FoundationBackbone), convert its 4-D parameters and buffers to channels-last when on (in
    place; ``Module.to(device)`` keeps the format) and set ``backbone.channels_last``, which
    its ``forward`` passes to :func:`channels_last_input`. Returns the resolved value.

    ``auto`` stays off for video backbones (``is_video``) and for backbones whose float32
    output is bit-equal to a reference implementation (``bit_exact``: BN-Inception/TSN)."""
    video = bool(getattr(backbone, "is_video", False))
    if setting == "auto" and getattr(backbone, "bit_exact", False):
        enabled = False
    else:
        enabled = resolve_channels_last(setting, backbone, video=video)
    if enabled:
        backbone.to(memory_format=torch.channels_last)
    backbone.channels_last = enabled
    return enabled


def channels_last_input(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """A 4-D (B, C, H, W) image batch in channels-last layout when ``enabled``; other tensors
    (token ids, 5-D clips) and ``enabled=False`` unchanged."""
    if enabled and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
