"""Building the models of an :class:`~feature_extraction.config.ExtractConfig`, and the
per-batch feature computation shared by the batch pipeline and the streaming extractor."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from epic_protocol import precision as bf16_rule
from feature_extraction.backbones import (
    Backbone,
    build_flow_backbone,
    build_rgb_backbone,
    resolve_weights,
    seeded,
)
from feature_extraction.config import ExtractConfig, Modality, ObjConfig
from feature_extraction.detectors import (
    BASIC_PALETTE,
    ColorBlobDetector,
    Detections,
    ObjectDetector,
    build_torchvision_detector,
    class_confidences,
    read_palette,
)
from feature_extraction.flow import (
    FlowEstimator,
    FlowStacker,
    RaftFlow,
    flow_to_unit_tensor,
    make_cpu_flow,
)
from feature_extraction.foundation import ClipBuffer, FoundationBackbone, file_hash

RAFT_METHODS = ("raft_small", "raft_large")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """The Lightning precision an extraction on ``device`` runs at: ``"auto"`` follows the
    precision rule (:func:`epic_protocol.precision.auto_precision`: ``bf16-mixed`` where the
    device computes bf16 natively, a GPU with bf16 or a CPU with AVX-512 BF16 or AMX, else
    ``32-true``); ``"32"`` is ``32-true``; an explicit bf16 on a CPU that emulates it warns
    once (correct but slower)."""
    if precision == "auto":
        return bf16_rule.auto_precision(device)
    if precision == "32":
        return "32-true"
    if precision.startswith("bf16"):
        bf16_rule.warn_if_emulated(device, what=f"extraction precision {precision}")
    return precision


def resolve_flow_method(method: str, device: torch.device) -> str:
    """'auto' is raft_small on CUDA and DIS on the CPU."""
    if method == "auto":
        return "raft_small" if device.type == "cuda" else "dis"
    return method


def build_raft(*, variant: str, weights: str | None, seed: int, iterations: int) -> RaftFlow:
    resolved = resolve_weights(variant, weights)
    with seeded(seed):
        try:
            raft = torchvision.models.get_model(
                variant, weights=None if not hasattr(resolved, "url") else resolved
            )
        except OSError as error:
            raise RuntimeError(
                f"cannot download the {weights} weights of {variant} ({error}); pass a local "
                "checkpoint or flow.raft_weights: none"
            ) from error
    if resolved is not None and not hasattr(resolved, "url"):
        from feature_extraction.backbones import load_state_dict

        raft.load_state_dict(load_state_dict(resolved))
    return RaftFlow(raft=raft.eval(), num_flow_updates=iterations)


def _import_detector(spec: str, options: dict[str, Any]) -> ObjectDetector:
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise ValueError(
            f"obj.detector {spec!r}: use 'faster_rcnn', 'color_blob' or 'package.module:Class'"
        )
    detector = getattr(importlib.import_module(module_name), class_name)(**options)
    if not isinstance(detector, ObjectDetector):
        raise TypeError(
            f"{spec} does not implement ObjectDetector (num_classes, class_names, detect)"
        )
    return detector


def build_detector(config: ObjConfig) -> ObjectDetector:
    if config.detector == "color_blob":
        palette = read_palette(config.palette) if config.palette is not None else BASIC_PALETTE
        return ColorBlobDetector(
            palette=palette,
            color_space=config.color_space,
            tolerance=config.tolerance,
            hue_tolerance=config.hue_tolerance,
            min_saturation=config.min_saturation,
            min_value=config.min_value,
            min_area=config.min_area,
        )
    if config.detector == "faster_rcnn":
        return build_torchvision_detector(
            model=config.model,
            weights=config.weights,
            num_classes=config.num_classes,
            class_names=config.class_names,
            score_threshold=config.threshold,
            min_size=config.min_size,
            max_size=config.max_size,
            seed=config.seed,
        )
    return _import_detector(config.detector, dict(config.options))


@dataclass
class ExtractionModels:
    """Everything an extraction runs, built once per process."""

    config: ExtractConfig
    device: torch.device
    flow_method: str | None
    rgb: Backbone | None
    flow: Backbone | None
    raft: RaftFlow | None
    cpu_flow: FlowEstimator | None
    detector: ObjectDetector | None

    @property
    def dims(self) -> dict[Modality, int]:
        dims: dict[Modality, int] = {}
        if self.rgb is not None:
            dims["rgb"] = self.rgb.feature_dim
        if self.flow is not None:
            dims["flow"] = self.flow.feature_dim
        if self.detector is not None:
            dims["obj"] = self.detector.num_classes
        return dims


FLOW_FROM_IMAGES = "images"  # flow_method of frame-folder input: read, not estimated


def build_models(
    config: ExtractConfig,
    *,
    device: torch.device | None = None,
    flow_from_images: bool = False,
) -> ExtractionModels:
    """The models of ``config``. ``flow_from_images``: flow comes from stored flow images
    (frame folders), so no flow estimator is built."""
    device = device if device is not None else resolve_device(config.device)
    rgb = flow = raft = cpu_flow = detector = None
    flow_method = None
    if "rgb" in config.modalities:
        rgb = build_rgb_backbone(
            name=config.rgb.backbone,
            weights=config.rgb.weights,
            seed=config.rgb.seed,
            input_size=config.rgb.input_size,
            preprocessing=config.rgb.preprocessing,
            projection=config.rgb.projection,
            clip_length=config.rgb.clip_length,
            clip_stride=config.rgb.clip_stride,
        )
    if "flow" in config.modalities:
        flow_method = resolve_flow_method(config.flow.method, device)
        flow = build_flow_backbone(
            name=config.flow.backbone,
            weights=config.flow.weights,
            seed=config.flow.seed,
            input_size=config.flow.input_size,
            stack=config.flow.stack,
            preprocessing=config.flow.preprocessing,
        )
        if flow_from_images:
            flow_method = FLOW_FROM_IMAGES
        elif flow_method in RAFT_METHODS:
            raft = build_raft(
                variant=flow_method,
                weights=config.flow.raft_weights,
                seed=config.flow.seed,
                iterations=config.flow.raft_iterations,
            )
        else:
            cpu_flow = make_cpu_flow(flow_method, dis_preset=config.flow.dis_preset)  # type: ignore[arg-type]
    if "obj" in config.modalities:
        detector = build_detector(config.obj)
    return ExtractionModels(config, device, flow_method, rgb, flow, raft, cpu_flow, detector)


#: Options added after files were written, left out of the hash at their defaults.
_LATER_DEFAULTS = {
    "preprocessing": "torchvision",
    "projection": True,
    "clip_length": None,
    "clip_stride": 4,
}


def _without_default_preprocessing(settings: Any) -> dict[str, Any]:
    """The settings, leaving out options added later when at their defaults (the default
    preprocessing, the foundation-backbone options): feature files written before those
    options existed keep their config hash (and stay resumable)."""
    values = asdict(settings)
    for key, default in _LATER_DEFAULTS.items():
        if key in values and values[key] == default:
            del values[key]
    return values


#: Which source frame target frame k shows (see :mod:`feature_extraction.video`).
FRAME_RULE = "frame k (1-based) = latest source frame presented at or before (k-1)/fps"


def provenance(
    models: ExtractionModels, modality: Modality, *, frames_input: bool = False
) -> dict[str, Any]:
    """What produced a feature file: stored as its root ``provenance`` attribute. The
    ``config_hash`` changes whenever a setting that changes the numbers changes (including
    ``frames_input``: JPEG frame folders instead of videos)."""
    config = models.config
    # The time -> frame rule is hashed too: files written under the earlier rule ("last source
    # frame starting before k/fps") pick other frames for non-30 fps sources.
    common: dict[str, Any] = {
        "fps": config.fps,
        "decode": asdict(config.decode),
        "frame_rule": FRAME_RULE,
    }
    if frames_input:
        common["input"] = "frame folders"
    if config.dtype != "float32":  # only when set, so float32 files keep their old hash
        common["dtype"] = config.dtype
    # The precision the models run at (``auto`` resolved for the device: it differs between
    # machines), so that a resumed run cannot mix float32 and bf16 rows; only when it is not
    # float32, so float32 files keep their old hash.
    run_precision = resolve_precision(config.precision, resolve_device(config.device))
    if run_precision != "32-true":
        common["precision"] = run_precision
    if modality == "rgb":
        settings: dict[str, Any] = {**common, "rgb": _without_default_preprocessing(config.rgb)}
    elif modality == "flow":
        flow = _without_default_preprocessing(config.flow)
        settings = {**common, "flow": flow, "flow_method": models.flow_method}
    else:
        obj = {k: v for k, v in asdict(config.obj).items() if k != "keep_detections"}
        settings = {**common, "obj": obj}
    encoded = json.dumps(settings, sort_keys=True, default=str)
    record: dict[str, Any] = {
        "extractor": "rulstm-extract",
        "settings": json.loads(encoded),
        "config_hash": hashlib.sha256(encoded.encode()).hexdigest()[:16],
        "frame_rule": FRAME_RULE,
    }
    if modality == "obj" and models.detector is not None:
        record["class_names"] = list(models.detector.class_names)
    if modality in ("rgb", "flow"):
        record["backbone"] = backbone_record(models, modality)
    return record


def backbone_record(models: ExtractionModels, modality: Modality) -> dict[str, Any]:
    """What computed a modality's features (stored in the file's provenance as ``backbone``):
    the backbone name, weights source and revision or file hash, library versions,
    preprocessing, clip length and stride, pooling, precision and dimension."""
    config = models.config
    options = config.rgb if modality == "rgb" else config.flow
    backbone = models.rgb if modality == "rgb" else models.flow
    if isinstance(backbone, FoundationBackbone):
        record = dict(backbone.record)
    else:
        weights = options.weights
        revision = None
        if weights is not None and Path(weights).expanduser().is_file():
            revision = f"sha256:{file_hash(Path(weights).expanduser())}"
        record = {
            "backbone": options.backbone,
            "family": "bninception" if options.backbone == "bninception" else "torchvision",
            "weights": weights if weights is not None else "none (random, seeded)",
            "revision": revision,
            "library": {"torch": torch.__version__, "torchvision": torchvision.__version__},
            "preprocessing": options.preprocessing,
            "pooling": "input of the classifier's last nn.Linear",
            "clip_length": 1,
            "clip_stride": 1,
            "clip_rule": "frame f only" if modality == "rgb" else "flow stack ending at f",
            "dim": backbone.feature_dim if backbone is not None else None,
        }
    record["precision"] = config.precision
    return record


class FeatureComputer(nn.Module):
    """The models of one extraction as one module (so Lightning moves them to the device),
    with the per-batch computations of each modality."""

    def __init__(
        self,
        *,
        rgb: Backbone | None,
        flow: Backbone | None,
        raft: RaftFlow | None,
        detector: ObjectDetector | None,
        threshold: float,
        flow_bound: float,
        flow_quantize: bool,
        flow_stack: int,
    ) -> None:
        super().__init__()
        self.rgb, self.flow, self.raft = rgb, flow, raft
        # An nn.Module detector becomes a submodule (moved to the device); others stay plain.
        self.detector = detector
        self.threshold = threshold
        self.flow_bound, self.flow_quantize, self.flow_stack = flow_bound, flow_quantize, flow_stack

    @classmethod
    def from_models(cls, models: ExtractionModels) -> FeatureComputer:
        config = models.config
        return cls(
            rgb=models.rgb,
            flow=models.flow,
            raft=models.raft,
            detector=models.detector,
            threshold=config.obj.threshold,
            flow_bound=config.flow.bound,
            flow_quantize=config.flow.quantize,
            flow_stack=config.flow.stack,
        )

    @property
    def rgb_clip(self) -> tuple[int, int] | None:
        """(clip length T, stride s) of a video RGB backbone, else None."""
        if isinstance(self.rgb, FoundationBackbone) and self.rgb.is_video:
            return self.rgb.clip_length, self.rgb.clip_stride
        return None

    def new_clip_buffer(self) -> ClipBuffer:
        assert self.rgb_clip is not None
        length, stride = self.rgb_clip
        return ClipBuffer(length=length, stride=stride)

    @torch.no_grad()
    def rgb_features(self, images: torch.Tensor) -> torch.Tensor:
        """(K, H, W, 3) uint8 frames, or (K, T, H, W, 3) clips for a video backbone
        (:attr:`rgb_clip`) -> (K, D) float32."""
        assert self.rgb is not None
        if isinstance(self.rgb, FoundationBackbone):
            return self.rgb(images)  # the library's preprocessing takes frames as decoded
        return self.rgb(images.permute(0, 3, 1, 2))  # (K, H, W, 3) -> (K, 3, H, W)

    @torch.no_grad()
    def flow_features(self, stacks: torch.Tensor) -> torch.Tensor:
        """(K, 2*stack, H, W) flow images (uint8 or float in [0, 1]) -> (K, D) float32."""
        assert self.flow is not None
        return self.flow(stacks)

    def object_features(
        self, images: torch.Tensor | np.ndarray
    ) -> tuple[np.ndarray, list[Detections]]:
        """(K, H, W, 3) uint8 -> ((K, num_classes) float32 confidences, detections)."""
        assert self.detector is not None
        detections = self.detector.detect(images)
        vectors = (
            np.stack(
                [
                    class_confidences(
                        d, num_classes=self.detector.num_classes, threshold=self.threshold
                    )
                    for d in detections
                ]
            )
            if detections
            else np.zeros((0, self.detector.num_classes), np.float32)
        )
        return vectors, detections

    def new_raft_stream(self) -> RaftStream:
        assert self.raft is not None
        return RaftStream(
            raft=self.raft,
            length=self.flow_stack,
            bound=self.flow_bound,
            quantize=self.flow_quantize,
        )


class RaftStream:
    """Causal flow stacks of one video with RAFT, fed batches of consecutive decoded frames."""

    def __init__(self, *, raft: RaftFlow, length: int, bound: float, quantize: bool) -> None:
        self.raft, self.bound, self.quantize = raft, bound, quantize
        self.stacker = FlowStacker(length=length)
        self._last: tuple[int, torch.Tensor] | None = None

    def reset(self) -> None:
        self.stacker.reset()
        self._last = None

    @torch.no_grad()
    def push(
        self, frames: Sequence[int], images: torch.Tensor, keep: Sequence[bool]
    ) -> torch.Tensor | None:
        """``images`` (B, H, W, 3) uint8 of ``frames`` -> stacks (K, 2L, H, W) of kept rows."""
        chw = images.permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
        frames = [int(f) for f in frames]
        previous_frames = [self._last[0] if self._last else None, *frames[:-1]]
        pairs = [i for i, f in enumerate(frames) if previous_frames[i] == f - 1]
        fields: dict[int, torch.Tensor] = {}
        if pairs:
            previous_images = torch.cat(
                [self._last[1][None] if self._last else chw[:1], chw[:-1]]
            )  # (B, 3, H, W): row i holds the image before row i
            index = torch.tensor(pairs, device=chw.device)
            raw = self.raft(previous_images[index], chw[index])  # (P, 2, H, W)
            units = flow_to_unit_tensor(raw, bound=self.bound, quantize=self.quantize)
            fields = {row: units[n] for n, row in enumerate(pairs)}
        height, width = chw.shape[-2:]
        zero = flow_to_unit_tensor(
            torch.zeros(2, height, width, device=chw.device),
            bound=self.bound,
            quantize=self.quantize,
        )
        stacks = []
        for row, frame in enumerate(frames):
            self.stacker.push(frame, fields.get(row), zero=zero)
            if keep[row]:
                stacks.append(self.stacker.stack())
        self._last = (frames[-1], chw[-1])
        return torch.stack(stacks) if stacks else None

    def skip(self, frame: int, image: torch.Tensor) -> None:
        """Record a frame without estimating its field: (H, W, 3) uint8."""
        zero = flow_to_unit_tensor(
            torch.zeros(2, *image.shape[:2], device=image.device),
            bound=self.bound,
            quantize=self.quantize,
        )
        self.stacker.push(frame, None, zero=zero)
        self._last = (frame, image.permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
