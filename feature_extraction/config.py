"""Typed configuration of an extraction, shared by the CLI, the streaming extractor and the
benchmark. YAML files in ``configs/extract/`` hold these fields; every field is also a
command-line option (``--rgb.backbone resnet18``, ``--obj.palette PATH``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from feature_extraction.flow import FlowMethod
from feature_extraction.foundation_tensor import RGBPreprocessing
from feature_extraction.memory_format import ChannelsLast
from feature_extraction.tsn import Preprocessing
from feature_extraction.video import DecoderBackend

Modality = Literal["rgb", "flow", "obj"]
MODALITIES: tuple[Modality, ...] = ("rgb", "flow", "obj")


@dataclass
class DecodeConfig:
    """Decoding.

    Args:
        backend: 'auto' (decord, with PyAV when decord is missing or fails on a file),
            'decord' or 'pyav'.
        width: Decoded frame width in pixels; with height null the aspect ratio is kept.
            Both null keeps the video's size. The reference used 456x256.
        height: Decoded frame height in pixels (see width).
    """

    backend: DecoderBackend = "auto"
    width: int | None = 456
    height: int | None = 256


@dataclass
class RGBConfig:
    """RGB features: a torchvision classifier without its last layer, BN-Inception, or a
    frozen foundation model (timm, OpenCLIP, Hugging Face; see feature_extraction.foundation).

    Args:
        backbone: Any torchvision classification model name (torchvision.models.get_model),
            'bninception' (the TSN backbone of the RU-LSTM features, 1024-d), or
            'family:architecture' with family timm, open_clip or hf
            ('timm:vit_base_patch14_dinov2', 'open_clip:ViT-B-16', 'hf:vjepa2'; extra
            [backbones]).
        weights: 'DEFAULT' or a torchvision weights name (downloaded once), a local checkpoint
            path (for bninception: a TSN checkpoint such as TSN-rgb.pth.tar), or null/'none'
            for a random initialisation seeded with seed. For family backbones: a pretrained
            tag, a hub id (org/repo[@revision]), a local file or folder, or none.
        seed: Seed of the random initialisation.
        input_size: (height, width) the frames are resized to before the backbone; null keeps
            the decoded size.
        preprocessing: 'torchvision' (ImageNet-style: [0, 1], mean/std of the weights) or 'tsn'
            (the RU-LSTM authors' exact preprocessing: PIL bilinear resize, BGR, x255, minus
            104/117/128). Family backbones use their library's own preprocessing (timm data
            config transform, OpenCLIP preprocess, HF processor) at the default, or with
            'tensor' the same steps, their parameters read from the library, as batched torch
            ops on the model's device (faster; pixels within 2/255, so in the config
            hash; feature_extraction.foundation_tensor).
        projection: open_clip: the projected image embedding (true) or the pooled output
            before the projection (false, ViT towers).
        clip_length: hf video models: frames per clip (null: the model's own, VideoMAE 16,
            V-JEPA 2 64); the clip of frame f ends at f (causal).
        clip_stride: hf video models: output frames between clip frames.
        channels_last: Run the backbone in channels-last memory format (faster convolutions;
            the same features up to float rounding, so not in the config hash): auto (on for
            convolutional image models, off for ViTs, video models and bninception with tsn
            preprocessing), true or false (feature_extraction.memory_format).
    """

    backbone: str = "resnet50"
    weights: str | None = "DEFAULT"
    seed: int = 0
    input_size: tuple[int, int] | None = None
    preprocessing: RGBPreprocessing = "torchvision"
    projection: bool = True
    clip_length: int | None = None
    clip_stride: int = 4
    channels_last: ChannelsLast = "auto"


@dataclass
class FlowConfig:
    """Optical-flow features: flow fields, stacked, through a 10-channel backbone.

    Args:
        method: 'auto' (raft_small on CUDA, dis on CPU), 'raft_small', 'raft_large', 'tvl1'
            (OpenCV dual TV-L1, the reference's method, slow) or 'dis' (OpenCV DIS, fast).
        raft_weights: RAFT weights: 'DEFAULT', a checkpoint path, or null (random, tests).
        raft_iterations: RAFT refinement iterations (fewer is faster).
        dis_preset: DIS preset.
        stack: Number of (u, v) fields stacked per frame (5, as TSN).
        bound: Flow is clipped to [-bound, bound] pixels before scaling to [0, 1].
        quantize: Quantise flow images to uint8 like TSN's JPEG flow.
        backbone: torchvision classifier whose first convolution is adapted to 2*stack
            channels by cross-modality initialisation, or 'bninception' (TSN flow network).
        weights: Backbone weights (as for rgb.weights); RGB weights are converted, except for
            bninception, which takes a TSN flow checkpoint (TSN-flow.pth.tar).
        seed: Seed of the random initialisation.
        input_size: (height, width) of the backbone input; null keeps the decoded size.
        preprocessing: 'torchvision' (flow images in [0, 1], normalised) or 'tsn' (the RU-LSTM
            authors': PIL bilinear resize of each u/v image, x255, minus 128; needs quantize).
        channels_last: As rgb.channels_last, for the flow backbone.
    """

    method: FlowMethod = "auto"
    raft_weights: str | None = "DEFAULT"
    raft_iterations: int = 12
    dis_preset: Literal["ultrafast", "fast", "medium"] = "medium"
    stack: int = 5
    bound: float = 20.0
    quantize: bool = True
    backbone: str = "resnet50"
    weights: str | None = "DEFAULT"
    seed: int = 0
    input_size: tuple[int, int] | None = None
    preprocessing: Preprocessing = "torchvision"
    channels_last: ChannelsLast = "auto"

    def __post_init__(self) -> None:
        if self.preprocessing == "tsn" and not self.quantize:
            raise ValueError("flow.preprocessing: tsn works on 8-bit flow images: set quantize")


@dataclass
class ObjConfig:
    """Object features: per class, the summed confidences of the detections.

    Args:
        detector: 'faster_rcnn' (any torchvision detection model), 'color_blob' (flat-colour
            objects from a palette), or 'package.module:Class' for another ObjectDetector,
            built with options.
        threshold: Detections scoring below this are ignored in the feature.
        keep_detections: Also store every detection (boxes, labels, scores) in obj.h5, under
            each video's 'detections' group.
        model: torchvision detection model name (faster_rcnn).
        weights: 'DEFAULT' (COCO), a checkpoint path (e.g. trained on the EPIC nouns), or null.
        num_classes: Detector classes including the background (COCO 91, EPIC-55 353); read
            from the weights or the checkpoint when null.
        class_names: File with the class names (one per line, or an EPIC *_classes.csv).
        min_size: Detector input's shorter side (torchvision default 800; smaller is faster).
        max_size: Detector input's longer side limit.
        seed: Seed of a random initialisation.
        palette: Palette file (YAML/JSON list of {name, rgb, tolerance?}) for color_blob; null
            uses 8 basic colours.
        color_space: 'rgb' (each channel within tolerance) or 'hsv' (hue within hue_tolerance,
            saturation and value above minimums; robust to shading) thresholding (color_blob).
        tolerance: RGB tolerance of palette entries (max channel difference, color_blob).
        hue_tolerance: HSV hue tolerance (OpenCV units 0..179, color_blob).
        min_saturation: HSV minimum saturation 0..255 (color_blob).
        min_value: HSV minimum value 0..255 (color_blob).
        min_area: Smallest blob, in pixels, that counts as a detection (color_blob).
        options: Keyword arguments of a custom detector class.
    """

    detector: str = "faster_rcnn"
    threshold: float = 0.05
    keep_detections: bool = False
    model: str = "fasterrcnn_resnet50_fpn"
    weights: str | None = "DEFAULT"
    num_classes: int | None = None
    class_names: Path | None = None
    min_size: int = 800
    max_size: int = 1333
    seed: int = 0
    palette: Path | None = None
    color_space: Literal["rgb", "hsv"] = "rgb"
    tolerance: float = 30.0
    hue_tolerance: float = 8.0
    min_saturation: int = 100
    min_value: int = 50
    min_area: int = 12
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SparseConfig:
    """Which frames --only-needed extracts: those the RU-LSTM sampling reads.

    Args:
        alpha: Seconds between anticipation steps.
        steps: Anticipation steps (observed frames) per segment.
        early_recognition: Also extract the early-recognition frames inside each segment.
        early_steps: Early-recognition steps.
    """

    alpha: float = 0.25
    steps: int = 14
    early_recognition: bool = False
    early_steps: int = 8


@dataclass
class ExtractConfig:
    """Feature extraction.

    Args:
        modalities: Which feature files to write: rgb, flow, obj.
        fps: Frames per second of the output numbering (RU-LSTM: 30).
        device: 'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'.
        precision: 'auto' (bf16-mixed where the device computes bf16 natively: a GPU with
            bf16, a CPU with AVX-512 BF16 or AMX; else 32), '32', '16-mixed', 'bf16-mixed'.
            Any precision but 32 is part of the feature files' config hash.
        batch_size: Frames per model forward pass (clips, for a video RGB backbone).
        dtype: Storage dtype of the feature files: 'float32', or 'float16' (half the disk
            size; readers convert back to float32).
        num_workers: DataLoader workers decoding videos and computing CPU flow; null picks
            min(8, cpus - 1); 0 decodes in the main process.
        threads: CPU threads of the models in the main process; null picks
            max(1, cpus - workers), so that workers and models do not oversubscribe the CPU.
        decode: Decoding options.
        rgb: RGB options.
        flow: Flow options.
        obj: Object options.
        sparse: Sampling options of --only-needed.
    """

    modalities: list[Modality] = field(default_factory=lambda: list(MODALITIES))
    fps: float = 30.0
    device: str = "auto"
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = "auto"
    batch_size: int = 32
    dtype: Literal["float32", "float16"] = "float32"
    num_workers: int | None = None
    threads: int | None = None
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    rgb: RGBConfig = field(default_factory=RGBConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    obj: ObjConfig = field(default_factory=ObjConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be among {MODALITIES}, got {self.modalities}")
        self.modalities = [m for m in MODALITIES if m in self.modalities]
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def resolved_workers(self) -> int:
        if self.num_workers is not None:
            return max(0, self.num_workers)
        return min(8, max(1, _cpu_count() - 1))

    def resolved_threads(self) -> int:
        if self.threads is not None:
            return max(1, self.threads)
        return max(1, _cpu_count() - self.resolved_workers())


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


def add_config_arguments(parser: Any) -> None:
    """Add ExtractConfig's fields to a jsonargparse parser at the top level, with
    ``--modalities`` taking space-separated values (``--modalities rgb flow``)."""
    parser.add_argument(
        "--modalities",
        type=Modality,
        nargs="+",
        default=list(MODALITIES),
        help="Which feature files to write: rgb, flow, obj (space separated).",
    )
    parser.add_class_arguments(ExtractConfig, None, skip={"modalities"})


def config_from_namespace(parser: Any, namespace: Any) -> ExtractConfig:
    """The ExtractConfig of a parsed namespace (nested groups become dataclasses)."""
    instantiated = parser.instantiate(namespace)
    values = {f.name: instantiated[f.name] for f in fields(ExtractConfig)}
    return ExtractConfig(**values)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExtractConfig:
    """An ExtractConfig from a YAML file and command-line style overrides, exactly as
    ``rulstm-extract`` would build it, e.g.
    ``load_config("configs/extract/quickstart.yaml", ["--obj.palette", "palette.yaml"])``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="extract-config", exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile)
    add_config_arguments(parser)
    arguments = (["--config", str(path)] if path is not None else []) + list(overrides)
    return config_from_namespace(parser, parser.parse_args(arguments))
