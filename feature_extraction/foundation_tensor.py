"""The tensor preprocessing path of the foundation backbones (``rgb.preprocessing: tensor``).

By default a foundation backbone preprocesses each decoded frame with its library's own
transform (timm's and OpenCLIP's torchvision ``Compose`` on a PIL image, the Hugging Face
image or video processor on the numpy frame). The tensor path runs the same steps as batched
torch ops on the model's device, on the uint8 frames as decoded (no PIL, no numpy round trip):

1. resize (antialiased, the library's interpolation; a shorter side or an exact size),
2. centre crop (torchvision's rounding for timm/OpenCLIP, Hugging Face's floor for ``hf:``),
3. scale to [0, 1] (``/255``, or the processor's ``rescale_factor``) and normalise with the
   library's mean and std.

Every parameter is read from the library's transform object (:func:`from_torchvision` walks the
``Compose`` that ``timm.data.create_transform(**resolve_model_data_config(model))`` or OpenCLIP's
``create_model_and_transforms`` built; :func:`from_hf_processor` reads the processor's
``size``, ``crop_size``, ``resample``, ``rescale_factor``, ``image_mean`` and ``image_std``);
nothing is restated. A transform holding a step this module does not reproduce (timm's
``border`` crop mode or a non-square input's ``ResizeKeepRatio``, OpenCLIP's ``longest``
resize mode, a processor with padding, ``longest_edge`` sizes or its own ``_preprocess``, an
interpolation other than bilinear or bicubic) is refused in one line naming the backbone.

The resize runs on the uint8 frames as PIL does: the horizontal pass, rounded to uint8, then
the vertical one (on a CPU torchvision's uint8 kernel, PIL's algorithm in floating point; on a
GPU float passes, each rounded). Against the Hugging Face torchvision backend on a CPU it is the
same op; against timm's and OpenCLIP's PIL transforms a pixel differs by at most 2/255
(PIL's fixed-point filter weights; measured in
``tests/feature_extraction/test_foundation_tensor.py`` and ``docs/extraction.md``).

A batch of video clips (K, T, H, W, 3) preprocesses each distinct frame once
(:func:`distinct_frames`): causal clips ending at nearby frames share most of their frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

from epic_protocol.errors import UsageError

#: ``rgb.preprocessing``: ``torchvision``/``tsn`` for torchvision classifiers and BN-Inception
#: (:mod:`feature_extraction.backbones`); for ``family:architecture`` backbones the default
#: (``torchvision``) is the library's own transform and ``tensor`` this module.
RGBPreprocessing = Literal["torchvision", "tsn", "tensor"]
TENSOR = "tensor"
_INTERPOLATIONS = ("bilinear", "bicubic")


class UnsupportedTransformError(UsageError, ValueError):
    """The library's transform has a step the tensor path does not reproduce: the option
    cannot be used with that backbone (a usage error, exit status 2)."""


def _refuse(backbone: str, step: str) -> UnsupportedTransformError:
    return UnsupportedTransformError(
        f"rgb.preprocessing tensor: the library transform of {backbone} has a step the tensor "
        f"path does not reproduce ({step}); use the default rgb.preprocessing"
    )


@dataclass(frozen=True)
class TensorTransform:
    """Resize -> centre crop -> scale -> normalise, as batched torch ops.

    ``resize``: ``(shorter side,)`` (the longer side scaled as torchvision and Hugging Face do,
    ``int(side * long / short)``), ``(height, width)``, or None; ``interpolation``: a
    torchvision ``InterpolationMode`` value (``bilinear``, ``bicubic``), always antialiased;
    ``crop``: (height, width) or None, offset ``round((H - h) / 2)`` (``crop_rounding="round"``,
    torchvision's ``CenterCrop``) or ``(H - h) // 2`` (``"floor"``, Hugging Face); ``scale``:
    the factor from uint8 to [0, 1]; ``mean``/``std``: per channel, or None (no
    normalisation); ``source``: what the parameters were read from."""

    resize: tuple[int, ...] | None
    interpolation: str
    crop: tuple[int, int] | None
    crop_rounding: Literal["round", "floor"]
    scale: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    source: str

    def describe(self) -> str:
        """One line for the feature file's backbone record."""
        if self.resize is None:
            resize = "no resize"
        elif len(self.resize) == 1:
            resize = f"resize shorter side to {self.resize[0]}"
        else:
            resize = f"resize to {self.resize[0]}x{self.resize[1]}"
        crop = (
            f"centre crop {self.crop[0]}x{self.crop[1]} ({self.crop_rounding} offset)"
            if self.crop
            else "no crop"
        )
        norm = (
            f"normalise mean {list(self.mean)} std {list(self.std)}" if self.mean else "no mean/std"
        )
        return (
            f"tensor (batched torch on the model's device): {resize} ({self.interpolation}, "
            f"antialias, uint8, PIL's pass order), {crop}, scale {self.scale!r}, {norm}; "
            f"read from {self.source}"
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 frames (any device) -> (N, 3, h, w) float32 on that device."""
        x = images.permute(0, 3, 1, 2).contiguous()  # (N, H, W, 3) -> (N, 3, H, W)
        with torch.autocast(x.device.type, enabled=False):
            if self.resize is not None:
                x = self._resize(x)
            if self.crop is not None:
                x = self._center_crop(x)
            x = x.float() * self.scale
            if self.mean is not None and self.std is not None:
                mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
                std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
                x = (x - mean) / std
        return x

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize, before the crop (torchvision's rule, which is also
        Hugging Face's for a shorter side: ``int(side * long / short)``)."""
        if self.resize is None:
            return height, width
        if len(self.resize) == 2:
            return self.resize[0], self.resize[1]
        side = self.resize[0]
        if height <= width:
            return side, int(side * width / height)
        return int(side * height / width), side

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """PIL's order, on uint8: the horizontal pass, rounded to uint8, then the vertical one.
        On a CPU this is bit-identical to one ``torchvision.transforms.v2`` resize of a uint8
        image (its kernel is PIL's algorithm: what the Hugging Face torchvision backend runs);
        on a GPU each pass runs in float and is rounded, so bicubic's overshoot is clipped
        between the passes as PIL does."""
        height, width = self.output_size(*x.shape[-2:])
        mode = InterpolationMode(self.interpolation)
        if x.shape[-1] != width:
            x = tvF.resize(x, [x.shape[-2], width], interpolation=mode, antialias=True)
        if x.shape[-2] != height:
            x = tvF.resize(x, [height, width], interpolation=mode, antialias=True)
        return x

    def _center_crop(self, x: torch.Tensor) -> torch.Tensor:
        assert self.crop is not None
        if self.crop_rounding == "round":
            return tvF.center_crop(x, list(self.crop))  # torchvision's CenterCrop, as the library
        height, width = x.shape[-2:]
        crop_height, crop_width = self.crop
        if crop_height > height or crop_width > width:
            raise ValueError(
                f"tensor preprocessing: crop {crop_height}x{crop_width} is larger than the "
                f"resized frame {height}x{width}; use the default rgb.preprocessing"
            )
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return x[..., top : top + crop_height, left : left + crop_width]


def distinct_frames(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, 3) frames -> (the distinct frames (M, H, W, 3), ``inverse`` (N,) with
    ``frames[i] == distinct[inverse[i]]``). Frames are grouped by a sample of their bytes and
    compared in full, so equal means bit-identical."""
    count = len(frames)
    flat = frames.reshape(count, -1)
    step = max(1, flat.shape[1] // 2048)
    probes = flat[:, ::step].cpu().numpy()  # (N, <= ~2048) bytes: the grouping key
    # numpy compares a CPU frame ~100x faster than torch.equal; on a GPU torch.equal.
    arrays = flat.numpy() if flat.device.type == "cpu" else None

    def same(a: int, b: int) -> bool:
        if arrays is not None:
            return bool(np.array_equal(arrays[a], arrays[b]))
        return torch.equal(flat[a], flat[b])

    groups: dict[bytes, list[int]] = {}
    kept: list[int] = []
    inverse: list[int] = []
    for index in range(count):
        candidates = groups.setdefault(probes[index].tobytes(), [])
        for slot in candidates:
            if same(index, kept[slot]):
                inverse.append(slot)
                break
        else:
            candidates.append(len(kept))
            inverse.append(len(kept))
            kept.append(index)
    if len(kept) == count:
        return frames, torch.arange(count, device=frames.device)
    index_of = torch.tensor(kept, device=frames.device)
    return frames[index_of], torch.tensor(inverse, device=frames.device)


def preprocess_clips(
    transform: Callable[[torch.Tensor], torch.Tensor],
    clips: torch.Tensor,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(K, T, H, W, 3) uint8 clips -> (K, T, 3, h, w) float32 on ``device`` (default: the
    clips'), each distinct frame once: found where the clips are, then moved and transformed."""
    count, length = clips.shape[:2]
    unique, inverse = distinct_frames(clips.reshape(count * length, *clips.shape[2:]))
    device = device if device is not None else clips.device
    out = transform(unique.to(device))[inverse.to(device)]  # (M, 3, h, w) -> (K*T, 3, h, w)
    return out.reshape(count, length, *out.shape[1:])  # (K*T, 3, h, w) -> (K, T, 3, h, w)


# ------------------------------------------------------------------- reading the parameters


def _floats(values: Any) -> tuple[float, ...]:
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, int | float):
        values = [values] * 3
    return tuple(float(v) for v in values)


def _interpolation(value: Any, backbone: str) -> str:
    name = getattr(value, "value", value)
    if name not in _INTERPOLATIONS:
        raise _refuse(backbone, f"interpolation {value}")
    return str(name)


def from_torchvision(transform: Any, backbone: str, library: str) -> TensorTransform:
    """The tensor transform of a torchvision ``Compose`` of ``Resize`` -> ``CenterCrop`` ->
    to-tensor -> ``Normalize`` (timm's and OpenCLIP's evaluation transforms); RGB mode
    conversions are no-ops on RGB frames. Raises :class:`UnsupportedTransformError` on any
    other step or order."""
    from torchvision import transforms

    steps = list(getattr(transform, "transforms", [transform]))
    resize: tuple[int, ...] | None = None
    interpolation = "bilinear"
    crop: tuple[int, int] | None = None
    mean = std = None
    stage = 0  # 0 resize, 1 crop, 2 to tensor, 3 normalise, 4 done
    for step in steps:
        kind = type(step).__name__
        if kind == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB":
            continue
        if getattr(step, "__name__", "") == "_convert_to_rgb" and stage < 2:
            continue
        if type(step) is transforms.Resize and stage == 0:
            if step.max_size is not None:
                raise _refuse(backbone, f"Resize max_size {step.max_size}")
            size = [step.size] if isinstance(step.size, int) else list(step.size)
            resize, stage = tuple(int(s) for s in size), 1
            interpolation = _interpolation(step.interpolation, backbone)
        elif type(step) is transforms.CenterCrop and stage <= 1:
            crop, stage = (int(step.size[0]), int(step.size[1])), 2
        elif kind in ("ToTensor", "MaybeToTensor") and stage <= 2:
            stage = 3
        elif type(step) is transforms.Normalize and stage == 3:
            mean, std, stage = _floats(step.mean), _floats(step.std), 4
        else:
            raise _refuse(backbone, f"{kind} {step!r}".replace("\n", " "))
    if stage < 3:
        raise _refuse(backbone, "no conversion to a [0, 1] tensor")
    return TensorTransform(
        resize=resize,
        interpolation=interpolation,
        crop=crop,
        crop_rounding="round",
        scale=1 / 255,
        mean=mean,
        std=std,
        source=f"{library}: {transform!r}".replace("\n", " "),
    )


def _size(size: Any, key: str) -> Any:
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _hf_bases(processor: Any) -> list[type]:
    """The transformers base classes whose steps the tensor path reproduces."""
    bases: list[type] = []
    try:
        from transformers.image_processing_backends import PilBackend, TorchvisionBackend

        bases += [TorchvisionBackend, PilBackend]
    except ImportError:  # an older transformers: compared by method below
        pass
    try:
        from transformers.video_processing_utils import BaseVideoProcessor

        bases.append(BaseVideoProcessor)
    except ImportError:
        pass
    return [b for b in bases if isinstance(processor, b)]


def from_hf_processor(processor: Any, backbone: str) -> TensorTransform:
    """The tensor transform of a Hugging Face image or video processor (resize to
    ``size["shortest_edge"]`` or ``(size["height"], size["width"])``, centre crop to
    ``crop_size``, rescale by ``rescale_factor``, normalise by ``image_mean``/``image_std``).
    Raises :class:`UnsupportedTransformError` when the processor pads, has a size it does not
    read, or overrides a step (``_preprocess``, ``resize``, ``center_crop``, ``rescale``,
    ``normalize``) of its transformers base class."""
    name = type(processor).__name__
    bases = _hf_bases(processor)
    if not bases:
        raise _refuse(backbone, f"{name} is not a transformers torchvision/PIL/video processor")
    for method in ("_preprocess", "resize", "center_crop", "rescale", "normalize"):
        own = getattr(type(processor), method, None)
        if own is not None and not any(getattr(b, method, None) is own for b in bases):
            raise _refuse(backbone, f"{name} overrides {method}")
    for flag in ("do_pad", "do_reduce_labels", "do_flip_channel_order"):
        if getattr(processor, flag, None):
            raise _refuse(backbone, f"{name} {flag}")
    resize: tuple[int, ...] | None = None
    if getattr(processor, "do_resize", False):
        size = processor.size
        extra = [k for k in ("longest_edge", "max_height", "max_width") if _size(size, k)]
        if extra:
            raise _refuse(backbone, f"{name} size {extra[0]}")
        if _size(size, "shortest_edge"):
            resize = (int(_size(size, "shortest_edge")),)
        elif _size(size, "height") and _size(size, "width"):
            resize = (int(_size(size, "height")), int(_size(size, "width")))
        else:
            raise _refuse(backbone, f"{name} size {size}")
    crop: tuple[int, int] | None = None
    if getattr(processor, "do_center_crop", False):
        crop_size = processor.crop_size
        crop = (int(_size(crop_size, "height")), int(_size(crop_size, "width")))
    scale = float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else 1.0
    mean = std = None
    if getattr(processor, "do_normalize", False):
        mean, std = _floats(processor.image_mean), _floats(processor.image_std)
    resample = getattr(processor, "resample", None)
    interpolation = "bilinear"
    if resize is not None:
        interpolation = _interpolation(_hf_interpolation(resample), backbone)
    return TensorTransform(
        resize=resize,
        interpolation=interpolation,
        crop=crop,
        crop_rounding="floor",
        scale=scale,
        mean=mean,
        std=std,
        source=f"{name} (size, crop_size, resample, rescale_factor, image_mean, image_std)",
    )


def _hf_interpolation(resample: Any) -> Any:
    """A processor's ``resample`` (a PIL resampling enum or int, or a torchvision mode) as a
    torchvision mode, by transformers' own mapping."""
    if resample is None or isinstance(resample, InterpolationMode):
        return resample or InterpolationMode.BILINEAR
    from transformers.image_utils import pil_torch_interpolation_mapping

    return pil_torch_interpolation_mapping.get(resample, resample)
