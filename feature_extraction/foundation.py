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
So a feature equals library transform -> model on the same decoded frame.

Video models see only the past: the feature of frame ``f`` is computed from the clip of
``T = clip_length`` frames ``f - (T-1)*s, ..., f`` (``s = clip_stride`` output frames apart),
frames before the first being the first frame (:func:`clip_frames`, :class:`ClipBuffer`).

The libraries are the optional extra ``backbones`` (``pip install -e '.[backbones]'``); they
are imported only when such a backbone is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epic_protocol.errors import WeightsUnavailableError

FAMILIES = ("timm", "open_clip", "hf")
EXTRA = "backbones"
#: transformers model types handled as video models: how each names its clip length.
VIDEO_MODEL_TYPES = {"videomae": "num_frames", "vjepa2": "frames_per_clip"}
_PACKAGES = {"timm": "timm", "open_clip": "open_clip_torch", "hf": "transformers"}
_MODULES = {"timm": "timm", "open_clip": "open_clip", "hf": "transformers"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".tar", ".json")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """A block with a fixed torch RNG seed, the global RNG state left untouched (the random
    initialisation of ``none`` weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def split_backbone(name: str) -> tuple[str, str] | None:
    """``"timm:vit_small_patch14_dinov2"`` -> ``("timm", "vit_small_patch14_dinov2")``;
    ``None`` for the torchvision/BN-Inception names (no family prefix)."""
    family, sep, architecture = name.partition(":")
    if not sep or family not in FAMILIES:
        return None
    if not architecture:
        raise ValueError(f"rgb.backbone {name!r}: give the architecture after '{family}:'")
    return family, architecture


def require(family: str) -> Any:
    """The family's library module, or a one-line ImportError naming the extra."""
    try:
        return importlib.import_module(_MODULES[family])
    except ImportError as error:
        raise ImportError(
            f"rgb.backbone {family}:... needs {_PACKAGES[family]}, which is not installed "
            f"({error}): pip install -e '.[{EXTRA}]' (timm, open_clip_torch, transformers)"
        ) from None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def is_random(weights: str | None) -> bool:
    return weights is None or weights.strip().lower() in {"", "none", "null", "random"}


def file_hash(path: Path) -> str:
    """sha256 (first 16 hex digits) of a file, or of a folder's weight/config files."""
    digest = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    )
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _unavailable(what: str, error: BaseException, hint: str) -> WeightsUnavailableError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return WeightsUnavailableError(
        f"cannot load {what}: not in the local cache and not downloadable (offline, e.g. "
        f"HF_HUB_OFFLINE=1, or no network: {first}); {hint}"
    )


def clip_frames(frame: int, *, length: int, stride: int) -> list[int]:
    """The 1-based frames of the clip ending at ``frame``: ``frame - (length-1)*stride, ...,
    frame``, frames before 1 replaced by frame 1 (the first frame is repeated)."""
    return [max(1, frame - j * stride) for j in range(length - 1, -1, -1)]


class ClipBuffer:
    """The recent frames of one video, by 1-based frame number, giving causal clips.

    Frames are pushed in increasing order (gaps allowed); :meth:`clip` assembles the clip
    ending at a pushed frame from the frames kept, each clip frame being the latest pushed frame
    at or before its number (before the first pushed frame: the first one). Only the frames
    within ``(length-1)*stride`` of the latest are kept (a ring buffer)."""

    def __init__(self, *, length: int, stride: int) -> None:
        self.length, self.stride = length, stride
        self.span = (length - 1) * stride
        self.reset()

    def reset(self) -> None:
        self._frames: list[int] = []
        self._images: list[torch.Tensor] = []
        self._first: torch.Tensor | None = None

    def push(self, frame: int, image: torch.Tensor) -> None:
        """``image``: (H, W, 3) uint8 of ``frame``."""
        if self._frames and frame <= self._frames[-1]:
            raise ValueError(f"clip buffer: frame {frame} pushed after {self._frames[-1]}")
        if self._first is None:
            self._first = image
        self._frames.append(frame)
        self._images.append(image)
        while len(self._frames) > 1 and self._frames[1] <= frame - self.span:
            self._frames.pop(0)
            self._images.pop(0)

    def clip(self, frame: int) -> torch.Tensor:
        """(T, H, W, 3) uint8: the clip ending at ``frame`` (the last pushed frame or one
        still kept)."""
        assert self._first is not None, "clip buffer: no frame pushed"
        images = []
        for number in clip_frames(frame, length=self.length, stride=self.stride):
            index = int(np.searchsorted(self._frames, number, side="right")) - 1
            images.append(self._images[index] if index >= 0 else self._first)
        return torch.stack(images)  # T x (H, W, 3) -> (T, H, W, 3)


def clip_context(frames: Sequence[int], *, length: int, stride: int) -> np.ndarray:
    """The frames the clips ending at ``frames`` read (sorted, unique, 1-based)."""
    needed = {n for f in frames for n in clip_frames(int(f), length=length, stride=stride)}
    return np.array(sorted(needed), dtype=np.int64)


@dataclass
class _Parts:
    model: nn.Module
    preprocess: Callable[[Sequence[np.ndarray]], dict[str, torch.Tensor]]
    pool: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    dim: int
    record: dict[str, Any]
    clip_length: int = 1
    clip_stride: int = 1


class FoundationBackbone(nn.Module):
    """Decoded frames in, one feature vector per frame out (library preprocessing + model).

    ``forward`` takes uint8 RGB frames (K, H, W, 3) for image models, or clips
    (K, T, H, W, 3) (oldest first) for video models (``clip_length > 1``), and returns
    (K, feature_dim) float32. Preprocessing runs on the CPU (the libraries' transforms); the
    model runs on the device of its parameters.
    """

    #: The computer passes decoded frames channels-last (no permute), clips for video models.
    takes_frames = True

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
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self._preprocess, self._pool = preprocess, pool
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
        arrays = list(frames.cpu().numpy())  # K x (H, W, 3) or K x (T, H, W, 3)
        inputs = self._preprocess(arrays)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        return self._pool(self.model, inputs).float().flatten(1)  # (K, D)


# --------------------------------------------------------------------------------------- timm


def _timm(architecture: str, weights: str | None, seed: int) -> _Parts:
    timm = require("timm")
    from PIL import Image

    kwargs: dict[str, Any] = {"num_classes": 0}
    name, source, revision = architecture, "none (random, seeded)", None
    pretrained = not is_random(weights)
    if pretrained:
        assert weights is not None
        path = Path(weights).expanduser()
        if path.exists():
            if path.is_dir():
                found = [path / n for n in ("model.safetensors", "pytorch_model.bin")]
                found = [f for f in found if f.is_file()]
                if not found:
                    raise FileNotFoundError(
                        f"{path}: no model.safetensors or pytorch_model.bin (weights of timm "
                        f"model {architecture})"
                    )
                path = found[0]
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
            source, revision = str(path), f"sha256:{file_hash(path)}"
        elif weights.lower() in {"pretrained", "default", "true"}:
            source = f"timm default tag of {architecture}"
        elif "/" in weights:
            if weights.startswith((".", "/", "~")) or Path(weights).suffix in _WEIGHT_SUFFIXES:
                raise FileNotFoundError(f"checkpoint not found: {path} (weights of {architecture})")
            kwargs["pretrained_cfg_overlay"] = {"hf_hub_id": weights}
            source = weights.split("@")[0]
            revision = weights.split("@")[1] if "@" in weights else None
        else:
            name = f"{architecture}.{weights}"
            source = f"timm tag {name}"
    try:
        with seeded(seed):
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error) or "Invalid pretrained tag" in str(error):
            raise ValueError(f"timm: {error}") from None
        raise
    except OSError as error:
        raise _unavailable(
            f"the timm weights {weights!r} of {architecture}",
            error,
            "download them where there is internet (the hub cache, or the model.safetensors "
            "file) and pass the file or folder as --rgb.weights PATH",
        ) from None
    config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**config)

    def preprocess(frames: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        return {"x": torch.stack([transform(Image.fromarray(f)) for f in frames])}

    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    record = {
        "preprocessing": "timm create_transform(resolve_model_data_config(model)): "
        + json.dumps({k: v for k, v in config.items()}, default=str),
        "pooling": "timm pooled pre-logits (num_classes=0)",
        "weights": source,
        "revision": revision,
        "library": {"timm": _version("timm")},
    }
    return _Parts(model, preprocess, lambda m, x: m(x["x"]), dim, record)


# ---------------------------------------------------------------------------------- open_clip


def _open_clip(architecture: str, weights: str | None, seed: int, projection: bool) -> _Parts:
    open_clip = require("open_clip")
    from PIL import Image

    name = architecture
    config_file = Path(architecture).expanduser()
    if architecture.endswith(".json"):
        if not config_file.is_file():
            raise FileNotFoundError(f"OpenCLIP model config not found: {config_file}")
        open_clip.add_model_config(config_file)  # registered under the file's stem
        name = config_file.stem
    elif open_clip.get_model_config(architecture) is None and not architecture.startswith(
        ("hf-hub:", "local-dir:")
    ):
        raise ValueError(
            f"unknown OpenCLIP architecture {architecture!r}; see open_clip.list_models(), or "
            "give a model config JSON file"
        )
    pretrained: str | None = None
    source, revision = "none (random, seeded)", None
    if not is_random(weights):
        assert weights is not None
        path = Path(weights).expanduser()
        if path.is_dir():
            name, source = f"local-dir:{path}", str(path)
            revision = f"sha256:{file_hash(path)}"
        elif path.is_file():
            pretrained, source, revision = str(path), str(path), f"sha256:{file_hash(path)}"
        elif weights.startswith("hf-hub:") or "/" in weights:
            if weights.startswith((".", "/", "~")) or path.suffix in _WEIGHT_SUFFIXES:
                raise FileNotFoundError(f"checkpoint not found: {path} (weights of {architecture})")
            hub = weights.removeprefix("hf-hub:")
            name, source = f"hf-hub:{hub}", hub
        else:
            pretrained, source = weights, f"open_clip tag {weights}"
    try:
        with seeded(seed):
            model, _, transform = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, load_weights=pretrained is not None
            )
    except (RuntimeError, OSError) as error:
        if isinstance(error, RuntimeError) and "download" not in str(error).lower():
            raise ValueError(f"OpenCLIP {architecture}: {error}") from None
        raise _unavailable(
            f"the OpenCLIP weights {weights!r} of {architecture}",
            error,
            "download the checkpoint where there is internet and pass the file (or the "
            "open_clip folder) as --rgb.weights PATH",
        ) from None
    visual = model.visual
    dim = int(getattr(visual, "output_dim", 0) or getattr(model, "embed_dim", 0))
    pooling = "OpenCLIP encode_image (projected image embedding, not normalised)"
    if not projection:
        if not isinstance(getattr(visual, "proj", None), torch.Tensor):
            raise ValueError(
                f"rgb.projection: false needs a ViT image tower with a projection matrix; "
                f"{architecture} has {type(visual).__name__}"
            )
        dim = int(visual.proj.shape[0])  # (width, embed_dim)
        visual.proj = None
        pooling = "OpenCLIP image tower pooled output before the projection"

    def preprocess(frames: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        return {"x": torch.stack([transform(Image.fromarray(f)) for f in frames])}

    record = {
        "preprocessing": f"OpenCLIP preprocess: {transform}".replace("\n", " "),
        "pooling": pooling,
        "weights": source,
        "revision": revision,
        "library": {"open_clip_torch": _version("open_clip_torch")},
    }
    return _Parts(model, preprocess, lambda m, x: m.encode_image(x["x"]), dim, record)


# ----------------------------------------------------------------------------- transformers


def _hf_processor(transformers: Any, model_type: str, sources: Sequence[str], video: bool) -> Any:
    """The processor saved with the model (first source holding one), else the model type's
    default processor class with its default settings."""
    auto = transformers.AutoVideoProcessor if video else transformers.AutoImageProcessor
    for source in sources:
        try:
            return auto.from_pretrained(source)
        except (OSError, ValueError, KeyError):
            continue
    from transformers.models.auto import image_processing_auto, video_processing_auto

    mapping = (
        video_processing_auto.VIDEO_PROCESSOR_MAPPING_NAMES
        if video
        else image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES
    )
    names = mapping.get(model_type)
    if isinstance(names, dict):
        names = names.get("torchvision") or next(iter(names.values()))
    elif isinstance(names, tuple | list):
        names = next((n for n in names if n), None)
    if not names:
        raise ValueError(
            f"transformers has no {'video' if video else 'image'} processor for "
            f"model type {model_type!r}; save one next to the model"
        )
    return getattr(transformers, names)()


def _hf(
    architecture: str,
    weights: str | None,
    seed: int,
    clip_length: int | None,
    clip_stride: int,
) -> _Parts:
    transformers = require("hf")
    folder = Path(architecture).expanduser()
    arch_is_folder = folder.is_dir()
    if not arch_is_folder and ("/" in architecture or architecture.startswith(".")):
        raise FileNotFoundError(f"hf backbone folder not found: {folder}")
    source, revision, hub_id = "none (random, seeded)", None, None
    if is_random(weights):
        if arch_is_folder:
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder}: no config.json (hf backbone)")
            config = transformers.AutoConfig.from_pretrained(folder)
        else:
            try:
                config = transformers.AutoConfig.for_model(architecture)
            except ValueError:
                raise ValueError(
                    f"unknown transformers model type {architecture!r} (e.g. dinov2, videomae, "
                    "vjepa2), or give a folder holding config.json"
                ) from None
        with seeded(seed):
            model = transformers.AutoModel.from_config(config)
        processor_sources = [str(folder)] if arch_is_folder else []
    else:
        assert weights is not None
        path = Path(weights).expanduser()
        if path.is_dir():
            load, source, revision = str(path), str(path), f"sha256:{file_hash(path)}"
        elif weights.startswith((".", "/", "~")) or path.suffix in _WEIGHT_SUFFIXES:
            raise FileNotFoundError(f"model folder not found: {path} (weights of {architecture})")
        else:
            load, _, rev = weights.partition("@")
            source, revision, hub_id = load, rev or None, load
        try:
            with seeded(seed):
                model = transformers.AutoModel.from_pretrained(
                    load, revision=revision if hub_id else None, dtype=torch.float32
                )
        except OSError as error:
            raise _unavailable(
                f"the Hugging Face model {weights!r}",
                error,
                f"download it where there is internet (hf download {hub_id or weights}) and "
                "pass its folder as --rgb.weights PATH",
            ) from None
        if hub_id:
            revision = getattr(model.config, "_commit_hash", None) or revision
        processor_sources = [load] + ([str(folder)] if arch_is_folder else [])
        config = model.config
    model_type = config.model_type
    if not arch_is_folder and architecture != model_type:
        raise ValueError(
            f"rgb.backbone hf:{architecture} but the weights {weights!r} are a {model_type!r} "
            f"model: use hf:{model_type}"
        )
    video = model_type in VIDEO_MODEL_TYPES
    processor = _hf_processor(transformers, model_type, processor_sources, video)
    dim = int(config.hidden_size)
    stride = 1
    length = 1
    if video:
        native = int(getattr(config, VIDEO_MODEL_TYPES[model_type]))
        length = clip_length or native
        stride = clip_stride
        tubelet = int(getattr(config, "tubelet_size", 1))
        if model_type == "videomae" and length != native:
            raise ValueError(
                f"VideoMAE's position table fixes the clip length to {native} frames "
                f"(config num_frames); rgb.clip_length {length} does not fit"
            )
        if length % tubelet:
            raise ValueError(
                f"{model_type} needs a clip length that is a multiple of its tubelet size "
                f"{tubelet}; rgb.clip_length is {length}"
            )

    if video:

        def preprocess(clips: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
            out = processor(videos=[list(c) for c in clips], return_tensors="pt")
            key = "pixel_values_videos" if "pixel_values_videos" in out else "pixel_values"
            return {key: out[key]}

    else:

        def preprocess(frames: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
            return {
                "pixel_values": processor(images=list(frames), return_tensors="pt")["pixel_values"]
            }

    if model_type == "vjepa2":
        pooling = "mean of the V-JEPA 2 encoder's last hidden state (predictor skipped)"

        def pool(m: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
            return m(**x, skip_predictor=True).last_hidden_state.mean(1)  # (K, N, D) -> (K, D)

    elif video:
        pooling = f"mean of the {model_type} tokens (last_hidden_state)"

        def pool(m: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
            return m(**x).last_hidden_state.mean(1)  # (K, N, D) -> (K, D)

    else:
        pooling = "pooler_output, else mean of last_hidden_state tokens"

        def pool(m: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
            out = m(**x)
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state.mean(1)

    record = {
        "preprocessing": f"{type(processor).__name__}: "
        + json.dumps(processor.to_dict(), sort_keys=True, default=str),
        "pooling": pooling,
        "weights": source,
        "revision": revision,
        "model_type": model_type,
        "library": {"transformers": _version("transformers")},
    }
    return _Parts(model, preprocess, pool, dim, record, length, stride)


def build_foundation_backbone(
    *,
    name: str,
    weights: str | None,
    seed: int = 0,
    projection: bool = True,
    clip_length: int | None = None,
    clip_stride: int = 4,
) -> FoundationBackbone:
    """The ``family:architecture`` backbone ``name`` (see the module docstring).

    Raises ImportError (the extra is missing), WeightsUnavailableError (hub weights neither
    cached nor downloadable), FileNotFoundError / ValueError (bad names or paths)."""
    parsed = split_backbone(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a family:architecture backbone ({', '.join(FAMILIES)})")
    family, architecture = parsed
    if clip_stride < 1 or (clip_length is not None and clip_length < 1):
        raise ValueError("rgb.clip_length and rgb.clip_stride must be >= 1")
    if family == "timm":
        parts = _timm(architecture, weights, seed)
    elif family == "open_clip":
        parts = _open_clip(architecture, weights, seed, projection)
    else:
        parts = _hf(architecture, weights, seed, clip_length, clip_stride)
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
    return FoundationBackbone(
        model=parts.model,
        preprocess=parts.preprocess,
        pool=parts.pool,
        feature_dim=parts.dim,
        record=record,
        clip_length=parts.clip_length,
        clip_stride=parts.clip_stride,
    )
