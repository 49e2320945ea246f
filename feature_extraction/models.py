"""Building the models of an :class:`~feature_extraction.config.ExtractConfig`, and the
per-batch feature computation shared by the batch pipeline and the streaming extractor."""

from __future__ import annotations

import hashlib
import importlib
import json
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
)
from feature_extraction.clips import ClipBuffer
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
    FLOW_FROM_IMAGES,
    RAFT_METHODS,
    FlowEstimator,
    FlowSource,
    FlowStream,
    RaftFlow,
    make_cpu_flow,
    resolve_flow_method,
)
from feature_extraction.foundation import FoundationBackbone
from feature_extraction.memory_format import configure_channels_last
from feature_extraction.weights import file_hash, seeded


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
    rgb: Backbone | None
    flow: Backbone | None
    flow_source: FlowSource | None  # where the flow comes from (None: no flow modality)
    detector: ObjectDetector | None

    @property
    def flow_method(self) -> str | None:
        return self.flow_source.method if self.flow_source is not None else None

    @property
    def raft(self) -> RaftFlow | None:
        return self.flow_source.raft if self.flow_source is not None else None

    @property
    def cpu_flow(self) -> FlowEstimator | None:
        return self.flow_source.estimator if self.flow_source is not None else None

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


def build_models(
    config: ExtractConfig,
    *,
    device: torch.device | None = None,
    flow_from_images: bool = False,
) -> ExtractionModels:
    """The models of ``config``. ``flow_from_images``: flow comes from stored flow images
    (frame folders), so no flow estimator is built. The flow's :class:`FlowSource` (CPU
    estimator, RAFT or stored images) is chosen here, once."""
    device = device if device is not None else resolve_device(config.device)
    rgb = flow = raft = cpu_flow = detector = None
    flow_method = None
    flow_source = None
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
        flow_source = FlowSource(
            method=flow_method,
            length=config.flow.stack,
            bound=config.flow.bound,
            quantize=config.flow.quantize,
            estimator=cpu_flow,
            raft=raft,
        )
    if rgb is not None:
        configure_channels_last(rgb, config.rgb.channels_last)
    if flow is not None:
        configure_channels_last(flow, config.flow.channels_last)
    if "obj" in config.modalities:
        detector = build_detector(config.obj)
    return ExtractionModels(config, device, rgb, flow, flow_source, detector)


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
    options existed keep their config hash (and stay resumable). ``channels_last`` is never
    hashed: it changes the features only by float rounding (it is in the backbone record)."""
    values = asdict(settings)
    values.pop("channels_last", None)
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
        record["backbone"] = backbone_record(models, modality, precision=run_precision)
    return record


def backbone_record(
    models: ExtractionModels, modality: Modality, *, precision: str | None = None
) -> dict[str, Any]:
    """What computed a modality's features (stored in the file's provenance as ``backbone``):
    the backbone name, weights source and revision or file hash, library versions,
    preprocessing, clip length and stride, pooling, precision and dimension.

    ``precision``: the Lightning precision the models run at (default: the config's, ``auto``
    resolved for the config's device, as in the config hash); the configured value is kept as
    ``precision_setting``."""
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
    if precision is None:
        precision = resolve_precision(config.precision, resolve_device(config.device))
    record["precision"] = precision
    record["precision_setting"] = config.precision
    record["channels_last"] = bool(getattr(backbone, "channels_last", False))
    # The frames the backbone saw: the decode size (a flow field or a processor's resize of
    # 228x128 frames is not that of 456x256 ones) and, for flow, the optical-flow method.
    record["decode_size"] = [config.decode.width, config.decode.height]
    if modality == "flow":
        record["flow_method"] = models.flow_method
    return record


class FeatureComputer(nn.Module):
    """The models of one extraction as one module (so Lightning moves them to the device),
    with the per-batch computations of each modality."""

    def __init__(
        self,
        *,
        rgb: Backbone | None,
        flow: Backbone | None,
        flow_source: FlowSource | None,
        detector: ObjectDetector | None,
        threshold: float,
    ) -> None:
        super().__init__()
        self.rgb, self.flow, self.flow_source = rgb, flow, flow_source
        # RAFT is a submodule (moved to the device with the others; its streams share it).
        self.raft = flow_source.raft if flow_source is not None else None
        # An nn.Module detector becomes a submodule (moved to the device); others stay plain.
        self.detector = detector
        self.threshold = threshold

    @property
    def flow_on_device(self) -> bool:
        """The flow fields are estimated here, beside the models (RAFT), from the images of
        every decoded row; otherwise they come with the batches (CPU flow, stored images)."""
        return self.flow_source is not None and self.flow_source.on_device

    @classmethod
    def from_models(cls, models: ExtractionModels) -> FeatureComputer:
        config = models.config
        return cls(
            rgb=models.rgb,
            flow=models.flow,
            flow_source=models.flow_source,
            detector=models.detector,
            threshold=config.obj.threshold,
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

    def new_flow_stream(self) -> FlowStream:
        """A fresh :class:`~feature_extraction.flow.FlowStream` for one video (see
        :meth:`FlowSource.new_stream`)."""
        assert self.flow_source is not None
        return self.flow_source.new_stream()
