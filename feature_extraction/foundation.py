"""Frozen foundation-model backbones for RGB features: timm, OpenCLIP and Hugging Face
``transformers`` (image and video models).

The backbone is ``family:architecture`` in ``rgb.backbone``; the weights are ``rgb.weights``:

============  ===============================  ============================================
family        architecture                     weights
============  ===============================  ============================================
``timm``      any timm model name              ``pretrained``/``default`` (timm's default
              (``vit_base_patch14_dinov2``)    tag), a tag (``lvd142m``), a hub id
                                               ``org/repo[@revision]``, a local checkpoint
                                               file or snapshot folder, or ``none``
``open_clip`` an OpenCLIP architecture         a pretrained tag (``openai``,
              (``ViT-B-16``) or the path of    ``laion2b_s34b_b88k``), a hub id
              a model config JSON file         ``org/repo`` (``hf-hub:``), a local
                                               checkpoint file or folder, or ``none``
``hf``        a ``transformers`` model type    a hub id ``org/repo[@revision]``, a local
              (``dinov2``, ``videomae``,       folder (``save_pretrained`` / hub
              ``vjepa2``) or a local folder    snapshot), or ``none`` (the architecture's
              holding ``config.json``          ``config.json``, or the type's defaults)
============  ===============================  ============================================

``none`` is a random initialisation seeded with ``rgb.seed`` (tests, the quickstart).

Features (one float32 vector per output frame):

* ``timm``: the pooled pre-logits output (``num_classes=0``), ``model.head_hidden_size``-d.
* ``open_clip``: the image tower's projected embedding (``encode_image``, not normalised,
  ``embed_dim``-d); with ``rgb.projection: false`` the pooled output before the projection
  (ViT towers only, ``width``-d).
* ``hf`` image models: ``pooler_output`` when the model has one (DINOv2, CLIP vision: the
  normalised CLS token), else the mean of ``last_hidden_state`` over the tokens.
* ``hf`` video models: VideoMAE, the mean of its tokens (``last_hidden_state``); V-JEPA 2, the
  mean of the encoder's last hidden state with the predictor skipped.

Preprocessing is the library's own, applied to each decoded frame (RGB uint8, H x W x 3, at the
decode size): timm's transform of the resolved data config
(``timm.data.create_transform(**resolve_model_data_config(model))``), OpenCLIP's ``preprocess``
(both on a PIL image), the Hugging Face image or video processor (on the numpy frame or clip).
So a feature equals library transform -> model on the same decoded frame. With
``rgb.preprocessing: tensor`` the same steps, their parameters read from the library's
transform, run as batched torch ops on the model's device instead
(:mod:`feature_extraction.foundation_tensor`; pixels within 2/255 of the library's, measured;
the feature file records it and the config hash includes it).

Video models see only the past: the feature of frame ``f`` is computed from the clip of
``T = clip_length`` frames ``f - (T-1)*s, ..., f`` (``s = clip_stride`` output frames apart),
frames before the first being the first frame (:mod:`feature_extraction.clips`).

The libraries are the optional extra ``backbones`` (``pip install -e '.[backbones]'``); they
are imported only when such a backbone is built. This module is the backbone and its builder;
the family loaders are :mod:`feature_extraction.foundation_loaders`, the causal clips
:mod:`feature_extraction.clips`, the seeding and hashing of weights
:mod:`feature_extraction.weights`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from feature_extraction.foundation_loaders import (
    FAMILIES,
    FamilyParts,
    load_hf,
    load_open_clip,
    load_timm,
)
from feature_extraction.foundation_tensor import (
    TensorTransform,
    from_hf_processor,
    from_torchvision,
    preprocess_clips,
)
from feature_extraction.memory_format import channels_last_input


def split_backbone(name: str) -> tuple[str, str] | None:
    """``"timm:vit_small_patch14_dinov2"`` -> ``("timm", "vit_small_patch14_dinov2")``;
    ``None`` for the torchvision/BN-Inception names (no family prefix)."""
    family, sep, architecture = name.partition(":")
    if not sep or family not in FAMILIES:
        return None
    if not architecture:
        raise ValueError(f"rgb.backbone {name!r}: give the architecture after '{family}:'")
    return family, architecture


class FoundationBackbone(nn.Module):
    """Decoded frames in, one feature vector per frame out (library preprocessing + model).

    ``forward`` takes uint8 RGB frames (K, H, W, 3) for image models, or clips
    (K, T, H, W, 3) (oldest first) for video models (``clip_length > 1``), and returns
    (K, feature_dim) float32. Preprocessing runs on the CPU (the libraries' transforms); the
    model runs on the device of its parameters. Given a ``tensor_transform``
    (:mod:`feature_extraction.foundation_tensor`), preprocessing runs there too, the model's
    input being ``input_key``; a video batch then preprocesses each distinct frame once.
    """

    #: The computer passes decoded frames channels-last (no permute), clips for video models.
    takes_frames = True
    #: Image inputs in channels-last memory format (set by
    #: :func:`feature_extraction.memory_format.configure_channels_last`).
    channels_last = False

    def __init__(
        self,
        *,
        model: nn.Module,
        preprocess: Callable[[Sequence[np.ndarray]], dict[str, torch.Tensor]],
        pool: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
        feature_dim: int,
        record: dict[str, Any],
        clip_length: int = 1,
        clip_stride: int = 1,
        tensor_transform: TensorTransform | None = None,
        input_key: str = "x",
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self._preprocess, self._pool = preprocess, pool
        self.tensor_transform, self.input_key = tensor_transform, input_key
        self.feature_dim = feature_dim
        self.record = dict(record, dim=feature_dim)
        self.clip_length, self.clip_stride = clip_length, clip_stride

    @property
    def is_video(self) -> bool:
        return self.clip_length > 1

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        expected = 5 if self.is_video else 4
        if frames.ndim != expected or frames.shape[-1] != 3:
            raise ValueError(
                f"{self.record['backbone']} expects uint8 "
                f"{'(K, T, H, W, 3) clips' if self.is_video else '(K, H, W, 3) frames'}, "
                f"got {tuple(frames.shape)}"
            )
        if len(frames) == 0:
            return torch.zeros(0, self.feature_dim)
        inputs = {
            k: channels_last_input(v, self.channels_last) for k, v in self.inputs(frames).items()
        }
        return self._pool(self.model, inputs).float().flatten(1)  # (K, D)

    def inputs(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """The preprocessing alone: uint8 frames or clips (as :meth:`forward`) -> the model's
        inputs on the device of its parameters (the library's transform on the CPU, or the
        tensor path on that device)."""
        device = next(self.model.parameters()).device
        if self.tensor_transform is not None:
            return {self.input_key: self.tensor_inputs(frames, device)}
        arrays = list(frames.cpu().numpy())  # K x (H, W, 3) or K x (T, H, W, 3)
        return {k: v.to(device) for k, v in self._preprocess(arrays).items()}

    def tensor_inputs(
        self, frames: torch.Tensor, device: torch.device | None = None
    ) -> torch.Tensor:
        """The tensor path: (K, H, W, 3) uint8 -> (K, 3, h, w), or (K, T, H, W, 3) clips ->
        (K, T, 3, h, w), float32 on ``device`` (default: the frames'); a clip batch's distinct
        frames are found before the move, so only they are moved."""
        assert self.tensor_transform is not None
        if self.is_video:
            return preprocess_clips(self.tensor_transform, frames, device)
        return self.tensor_transform(frames.to(device) if device is not None else frames)


def tensor_transform_of(name: str, family: str, parts: FamilyParts) -> TensorTransform:
    """The tensor path of a loaded backbone, its parameters read from the library's transform
    (:mod:`feature_extraction.foundation_tensor`); one-line ValueError when that transform has
    a step the tensor path does not reproduce."""
    if family == "hf":
        return from_hf_processor(parts.transform, name)
    return from_torchvision(parts.transform, name, family)


def build_foundation_backbone(
    *,
    name: str,
    weights: str | None,
    seed: int = 0,
    projection: bool = True,
    clip_length: int | None = None,
    clip_stride: int = 4,
    tensor_preprocessing: bool = False,
) -> FoundationBackbone:
    """The ``family:architecture`` backbone ``name`` (see the module docstring);
    ``tensor_preprocessing``: the tensor path instead of the library's transform.

    Raises ImportError (the extra is missing), WeightsUnavailableError (hub weights neither
    cached nor downloadable), FileNotFoundError / ValueError (bad names or paths)."""
    parsed = split_backbone(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a family:architecture backbone ({', '.join(FAMILIES)})")
    family, architecture = parsed
    if clip_stride < 1 or (clip_length is not None and clip_length < 1):
        raise ValueError("rgb.clip_length and rgb.clip_stride must be >= 1")
    if family == "timm":
        parts = load_timm(architecture, weights, seed)
    elif family == "open_clip":
        parts = load_open_clip(architecture, weights, seed, projection)
    else:
        parts = load_hf(architecture, weights, seed, clip_length, clip_stride)
    if family != "hf" and clip_length not in (None, 1):
        raise ValueError(f"{name} is an image model: rgb.clip_length must be null or 1")
    record = {
        "backbone": name,
        "family": family,
        **parts.record,
        "clip_length": parts.clip_length,
        "clip_stride": parts.clip_stride,
        "clip_rule": (
            "frames f-(T-1)*s .. f (first frame repeated before the start)"
            if parts.clip_length > 1
            else "frame f only"
        ),
    }
    record["library"] = {**record["library"], "torch": torch.__version__}
    tensor = tensor_transform_of(name, family, parts) if tensor_preprocessing else None
    if tensor is not None:
        record["preprocessing"] = tensor.describe()
    return FoundationBackbone(
        model=parts.model,
        preprocess=parts.preprocess,
        pool=parts.pool,
        feature_dim=parts.dim,
        record=record,
        clip_length=parts.clip_length,
        clip_stride=parts.clip_stride,
        tensor_transform=tensor,
        input_key=parts.input_key,
    )
