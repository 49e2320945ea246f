"""The family loaders of the foundation backbones (:mod:`feature_extraction.foundation`):
for ``timm``, ``open_clip`` and ``hf`` (``transformers``), each turns an architecture and its
weights into the model, the library's own preprocessing, the pooling of its output into one
vector per frame or clip, the feature size and what the feature file records about them
(:class:`FamilyParts`). The libraries are imported only here, only when a loader runs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epic_protocol.errors import WeightsUnavailableError
from feature_extraction.weights import (
    WEIGHT_SUFFIXES,
    check_no_remote_code,
    check_weights_file,
    file_hash,
    is_random_weights,
    seeded,
)

FAMILIES = ("timm", "open_clip", "hf")
EXTRA = "backbones"
#: transformers model types handled as video models: how each names its clip length.
VIDEO_MODEL_TYPES = {"videomae": "num_frames", "vjepa2": "frames_per_clip"}
_PACKAGES = {"timm": "timm", "open_clip": "open_clip_torch", "hf": "transformers"}
_MODULES = {"timm": "timm", "open_clip": "open_clip", "hf": "transformers"}


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


@contextlib.contextmanager
def no_remote_code() -> Iterator[None]:
    """A block in which ``transformers`` never offers to run a model's own code: where a
    config's ``auto_map`` names code and no ``trust_remote_code`` was given (OpenCLIP's
    Hugging Face text towers pass none), it refuses instead of asking "Do you wish to run the
    custom code? [y/N]" on the terminal. Without ``transformers`` installed, nothing to do."""
    try:
        dynamic = importlib.import_module("transformers.dynamic_module_utils")
    except ImportError:
        yield
        return
    saved = dynamic.TIME_OUT_REMOTE_CODE
    dynamic.TIME_OUT_REMOTE_CODE = 0  # transformers' own switch: refuse, do not prompt
    try:
        yield
    finally:
        dynamic.TIME_OUT_REMOTE_CODE = saved


def _unavailable(what: str, error: BaseException, hint: str) -> WeightsUnavailableError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return WeightsUnavailableError(
        f"cannot load {what}: not in the local cache and not downloadable (offline, e.g. "
        f"HF_HUB_OFFLINE=1, or no network: {first}); {hint}"
    )


def _does_not_fit(family: str, architecture: str, path: Path, error: BaseException) -> ValueError:
    """One line for a local checkpoint that is not the architecture's (the libraries raise a
    screen of size mismatches, or a bare assertion such as OpenCLIP's "text pos_embed width
    changed!")."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    detail = "; ".join(lines[:2]) or type(error).__name__
    if len(detail) > 200:
        detail = detail[:197] + "..."
    return ValueError(
        f"--rgb.weights {path} does not fit --rgb.backbone {family}:{architecture} "
        f"({type(error).__name__}: {detail}); give the checkpoint's own architecture in "
        f"--rgb.backbone {family}:<architecture>"
        + (" (a name or a model config .json)" if family == "open_clip" else "")
    )


@dataclass
class FamilyParts:
    """What a family loader gives :func:`feature_extraction.foundation.build_foundation_backbone`:
    the model, ``preprocess`` (decoded frames, or clips, as numpy arrays -> the model's inputs),
    ``pool`` (model, inputs -> (K, dim) features), the feature size ``dim``, the ``record`` of
    preprocessing, pooling, weights and library versions, the clip rule (1, 1 for image
    models), the library's ``transform`` object (timm/OpenCLIP ``Compose``, the Hugging Face
    processor: what :mod:`feature_extraction.foundation_tensor` reads) and the name of the
    model input ``pool`` reads (``input_key``)."""

    model: nn.Module
    preprocess: Callable[[Sequence[np.ndarray]], dict[str, torch.Tensor]]
    pool: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    dim: int
    record: dict[str, Any]
    clip_length: int = 1
    clip_stride: int = 1
    transform: Any = None
    input_key: str = "x"


# --------------------------------------------------------------------------------------- timm


def load_timm(architecture: str, weights: str | None, seed: int) -> FamilyParts:
    """A timm model: pooled pre-logits (``num_classes=0``), timm's resolved transform."""
    timm = require("timm")
    from PIL import Image

    kwargs: dict[str, Any] = {"num_classes": 0}
    name, source, revision = architecture, "none (random, seeded)", None
    pretrained = not is_random_weights(weights)
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
            check_weights_file(path)
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
            source, revision = str(path), f"sha256:{file_hash(path)}"
        elif weights.lower() in {"pretrained", "default", "true"}:
            source = f"timm default tag of {architecture}"
        elif "/" in weights:
            if weights.startswith((".", "/", "~")) or Path(weights).suffix in WEIGHT_SUFFIXES:
                raise FileNotFoundError(f"checkpoint not found: {path} (weights of {architecture})")
            kwargs["pretrained_cfg_overlay"] = {"hf_hub_id": weights}
            source = weights.split("@")[0]
            revision = weights.split("@")[1] if "@" in weights else None
        else:
            name = f"{architecture}.{weights}"
            source = f"timm tag {name}"
    local = Path(str(kwargs.get("pretrained_cfg_overlay", {}).get("file", "")))
    try:
        with seeded(seed):
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (RuntimeError, AssertionError, KeyError) as error:
        if "Unknown model" in str(error) or "Invalid pretrained tag" in str(error):
            raise ValueError(f"timm: {error}") from None
        if local.is_file():
            raise _does_not_fit("timm", architecture, local, error) from None
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
    return FamilyParts(model, preprocess, lambda m, x: m(x["x"]), dim, record, transform=transform)


# ---------------------------------------------------------------------------------- open_clip


def load_open_clip(
    architecture: str, weights: str | None, seed: int, projection: bool
) -> FamilyParts:
    """An OpenCLIP image tower: ``encode_image`` (or, without ``projection``, the pooled
    output before the projection), OpenCLIP's ``preprocess``."""
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
    if architecture.endswith(".json"):  # a user's model config: read by add_model_config
        _check_open_clip_towers(config_file, json.loads(config_file.read_text()))
    if not is_random_weights(weights):
        assert weights is not None
        path = Path(weights).expanduser()
        if path.is_dir():
            _check_open_clip_folder(path, architecture, open_clip.get_model_config(name))
            name, source = f"local-dir:{path}", str(path)
            revision = f"sha256:{file_hash(path)}"
        elif path.is_file():
            check_weights_file(path)
            pretrained, source, revision = str(path), str(path), f"sha256:{file_hash(path)}"
        elif weights.startswith("hf-hub:") or "/" in weights:
            if weights.startswith((".", "/", "~")) or path.suffix in WEIGHT_SUFFIXES:
                raise FileNotFoundError(f"checkpoint not found: {path} (weights of {architecture})")
            hub = weights.removeprefix("hf-hub:")
            name, source = f"hf-hub:{hub}", hub
        else:
            pretrained, source = weights, f"open_clip tag {weights}"
    load = not is_random_weights(weights)  # a tag, a file, a local-dir: or an hf-hub: name
    try:
        with seeded(seed), no_remote_code():
            model, _, transform = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, load_weights=load, require_pretrained=load
            )
    except (RuntimeError, OSError, ValueError, AssertionError, KeyError) as error:
        local = pretrained is not None and Path(pretrained).expanduser().is_file()
        if local and isinstance(error, RuntimeError | AssertionError | KeyError):
            raise _does_not_fit("open_clip", architecture, Path(pretrained), error) from None
        offline = name.startswith("hf-hub:") or "download" in str(error).lower()
        if isinstance(error, ValueError | AssertionError | KeyError) or (
            isinstance(error, RuntimeError) and not offline
        ):
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(f"OpenCLIP {architecture}: {first or type(error).__name__}") from None
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
    return FamilyParts(
        model, preprocess, lambda m, x: m.encode_image(x["x"]), dim, record, transform=transform
    )


def _check_open_clip_towers(source: Path, config: Any) -> None:
    """An OpenCLIP model config (``source``) whose Hugging Face text tower is a local folder:
    that folder may not name code to import (:func:`check_no_remote_code`)."""
    model_cfg = config.get("model_cfg", config) if isinstance(config, dict) else {}
    text_cfg = model_cfg.get("text_cfg") if isinstance(model_cfg, dict) else None
    for key in ("hf_model_name", "hf_tokenizer_name"):
        tower = (text_cfg or {}).get(key) if isinstance(text_cfg, dict) else None
        if isinstance(tower, str) and Path(tower).expanduser().is_dir():
            check_no_remote_code(Path(tower).expanduser())


def _check_open_clip_folder(folder: Path, architecture: str, expected: Any) -> None:
    """An OpenCLIP ``local-dir`` folder (``open_clip_config.json`` and a checkpoint): its
    checkpoints hold only tensors, its text tower names no code, it has weights at all
    (OpenCLIP would otherwise build the model at random without an error), and its image
    tower is the ``architecture``'s (``expected``: that model config), which the feature
    file records (OpenCLIP builds the folder's own)."""
    config_file = folder / "open_clip_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{folder}: no open_clip_config.json (an OpenCLIP model folder, as "
            "open_clip.push_to_hf_hub saves it); or pass the checkpoint file itself"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{config_file}: not JSON ({error})") from None
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth")]
    if not weights:
        raise FileNotFoundError(
            f"{folder}: no OpenCLIP weights (open_clip_model.safetensors, "
            "open_clip_pytorch_model.bin, ...) next to open_clip_config.json"
        )
    check_weights_file(folder)
    _check_open_clip_towers(config_file, config)
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict):
        raise ValueError(f"{config_file}: no model_cfg (an OpenCLIP model folder's config)")
    keys = ("embed_dim", "vision_cfg", "quick_gelu")
    if isinstance(expected, dict) and any(model_cfg.get(k) != expected.get(k) for k in keys):
        raise ValueError(
            f"{config_file}: its image tower is not {architecture}'s (embed_dim, vision_cfg, "
            f"quick_gelu: {[model_cfg.get(k) for k in keys]} against "
            f"{[expected.get(k) for k in keys]}); give the folder's architecture as "
            "--rgb.backbone open_clip:<name or config JSON>"
        )


# ----------------------------------------------------------------------------- transformers


#: The files a Hugging Face folder saves its processor in.
_PROCESSOR_FILES = (
    "video_preprocessor_config.json",
    "preprocessor_config.json",
    "processor_config.json",
)


def _hf_processor(transformers: Any, model_type: str, sources: Sequence[str], video: bool) -> Any:
    """The processor saved with the model (first source holding one), else the model type's
    default processor class with its default settings. A local folder's saved processor that
    does not load is an error naming its file, never silently the defaults."""
    auto = transformers.AutoVideoProcessor if video else transformers.AutoImageProcessor
    for source in sources:
        try:
            return auto.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as error:
            saved = [Path(source) / n for n in _PROCESSOR_FILES if (Path(source) / n).is_file()]
            if saved:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise ValueError(
                    f"{saved[0]}: the saved processor does not load ({type(error).__name__}: "
                    f"{first}); fix or remove it (then the model type's default processor is "
                    "used)"
                ) from None
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


def _check_hf_folder(transformers: Any, folder: Path) -> None:
    """A user's Hugging Face model folder: no JSON file names code to import (``auto_map``),
    ``config.json`` names a model type this ``transformers`` ships, and every pickle-based
    weights file holds only tensors (:func:`check_weights_file`)."""
    check_no_remote_code(folder)
    config_file = folder / "config.json"
    if config_file.is_file():
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError):
            raise ValueError(f"{config_file}: not a JSON object (a model config)") from None
        if model_type not in transformers.CONFIG_MAPPING:
            raise ValueError(
                f"{config_file}: model_type {model_type!r} is not one transformers "
                f"{_version('transformers')} ships (custom model code is never run); e.g. "
                "dinov2, videomae, vjepa2"
            )
    check_weights_file(folder)


def load_hf(
    architecture: str,
    weights: str | None,
    seed: int,
    clip_length: int | None,
    clip_stride: int,
) -> FamilyParts:
    """A ``transformers`` image or video model with its processor; video models read causal
    clips of ``clip_length`` (default: the model's own) frames ``clip_stride`` apart."""
    transformers = require("hf")
    folder = Path(architecture).expanduser()
    arch_is_folder = folder.is_dir()
    if not arch_is_folder and ("/" in architecture or architecture.startswith(".")):
        raise FileNotFoundError(f"hf backbone folder not found: {folder}")
    source, revision, hub_id = "none (random, seeded)", None, None
    if arch_is_folder:
        _check_hf_folder(transformers, folder)
    if is_random_weights(weights):
        if arch_is_folder:
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder}: no config.json (hf backbone)")
            config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
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
            _check_hf_folder(transformers, path)
            load, source, revision = str(path), str(path), f"sha256:{file_hash(path)}"
        elif weights.startswith((".", "/", "~")) or path.suffix in WEIGHT_SUFFIXES:
            raise FileNotFoundError(f"model folder not found: {path} (weights of {architecture})")
        else:
            load, _, rev = weights.partition("@")
            source, revision, hub_id = load, rev or None, load
        try:
            with seeded(seed), no_remote_code():
                model = transformers.AutoModel.from_pretrained(
                    load,
                    revision=revision if hub_id else None,
                    dtype=torch.float32,
                    trust_remote_code=False,
                )
        except ValueError as error:  # e.g. a hub model that exists only as custom code
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(f"Hugging Face model {weights!r}: {first}") from None
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
    # The processor's output key: V-JEPA 2 reads pixel_values_videos, the others pixel_values.
    forward_inputs = inspect.signature(model.forward).parameters
    key = "pixel_values_videos" if "pixel_values_videos" in forward_inputs else "pixel_values"
    return FamilyParts(
        model, preprocess, pool, dim, record, length, stride, transform=processor, input_key=key
    )
