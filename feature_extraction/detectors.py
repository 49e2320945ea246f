"""Object detectors behind one interface, and the per-frame object feature.

The object feature of a frame is a vector with one entry per detector class: the sum of the
confidences of that class's detections scoring at least ``threshold`` (RU-LSTM's "Obj"
modality). Detectors implement :class:`ObjectDetector`:

* :class:`TorchvisionDetector`: a torchvision detection model (Faster R-CNN by default) with
  COCO weights, a checkpoint with custom classes (e.g. the 352 EPIC-55 nouns), or random
  weights for tests;
* :class:`ColorBlobDetector`: finds flat-coloured objects by colour thresholding and
  connected components, from a palette file (used by the quickstart's procedural kitchen).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
import torchvision
from torch import nn

from epic_protocol.annotations import open_text
from epic_protocol.errors import WeightsUnavailableError
from feature_extraction.backbones import load_state_dict, resolve_weights
from feature_extraction.weights import seeded


@dataclass(frozen=True)
class Detections:
    """Detections in one frame: ``boxes`` (M, 4) float32 ``x1, y1, x2, y2`` in pixels of the
    frame given to the detector, ``labels`` (M,) int64 class indices into
    ``ObjectDetector.class_names`` (0-based, no background), ``scores`` (M,) float32."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))


@runtime_checkable
class ObjectDetector(Protocol):
    """What the extractor needs from a detector.

    ``detect`` takes a batch of RGB uint8 frames, (B, H, W, 3) as a numpy array or a tensor
    (possibly on the model's device), and returns one :class:`Detections` per frame.
    """

    @property
    def num_classes(self) -> int: ...

    @property
    def class_names(self) -> Sequence[str]: ...

    def detect(self, frames: np.ndarray | torch.Tensor) -> list[Detections]: ...


def class_confidences(detections: Detections, *, num_classes: int, threshold: float) -> np.ndarray:
    """(num_classes,) float32: per class, the summed scores of detections >= threshold."""
    confident = detections.scores >= threshold
    return np.bincount(
        detections.labels[confident], weights=detections.scores[confident], minlength=num_classes
    ).astype(np.float32)[:num_classes]


# ----------------------------------------------------------------------------- colour blobs


@dataclass(frozen=True)
class PaletteEntry:
    """One object class of a :class:`ColorBlobDetector`: its colour and how far pixels may
    be from it (max absolute difference per RGB channel; for HSV, hue in OpenCV's 0..179
    units and saturation/value in 0..255)."""

    name: str
    rgb: tuple[int, int, int]
    tolerance: float | None = None


def _entry(raw: Any, source: str, index: int) -> PaletteEntry:
    if isinstance(raw, PaletteEntry):
        return raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: palette entry {index} must be a mapping, got {raw!r}")
    color = raw.get("rgb", raw.get("color", raw.get("colour")))
    if "name" not in raw or color is None:
        raise ValueError(f"{source}: palette entry {index} needs 'name' and 'rgb' ([r, g, b])")
    if isinstance(color, str):
        text = color.lstrip("#")
        color = [int(text[i : i + 2], 16) for i in (0, 2, 4)]
    values = [float(v) for v in color]
    if len(values) != 3:
        raise ValueError(f"{source}: palette entry {raw['name']!r}: rgb needs 3 values")
    if max(values) <= 1.0 and any(v % 1 for v in values):  # floats in [0, 1]
        values = [v * 255.0 for v in values]
    if not all(0 <= v <= 255 for v in values):
        raise ValueError(f"{source}: palette entry {raw['name']!r}: rgb values must be 0..255")
    tolerance = raw.get("tolerance")
    return PaletteEntry(
        name=str(raw["name"]),
        rgb=(round(values[0]), round(values[1]), round(values[2])),
        tolerance=None if tolerance is None else float(tolerance),
    )


def read_palette(source: str | Path | Sequence[Any] | Mapping[str, Any]) -> list[PaletteEntry]:
    """A palette from a YAML/JSON file or an in-memory list.

    Accepted shapes: a list of ``{name, rgb: [r, g, b], tolerance?}`` (``rgb`` may also be
    ``color``/``colour``, a ``"#rrggbb"`` string, or floats in [0, 1]); a mapping holding such
    a list under ``palette``, ``objects`` or ``classes``; or a mapping ``name -> [r, g, b]``
    (or ``name -> {rgb, tolerance}``).
    """
    name = "palette"
    data: Any = source
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"palette file not found: {path}")
        with open_text(path) as handle:  # with or without a byte-order mark
            text = handle.read()
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    if isinstance(data, Mapping):
        for key in ("palette", "objects", "classes"):
            if key in data and isinstance(data[key], (list, tuple)):
                data = data[key]
                break
        else:
            data = [
                {"name": key, **value}
                if isinstance(value, Mapping)
                else {"name": key, "rgb": value}
                for key, value in data.items()
            ]
    if not isinstance(data, (list, tuple)) or not data:
        raise ValueError(f"{name}: a palette is a non-empty list of {{name, rgb}} entries")
    entries = [_entry(raw, name, index) for index, raw in enumerate(data)]
    names = [entry.name for entry in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{name}: duplicate class names {duplicates}")
    return entries


BASIC_PALETTE = (
    PaletteEntry("red", (220, 40, 40)),
    PaletteEntry("green", (40, 180, 60)),
    PaletteEntry("blue", (40, 70, 220)),
    PaletteEntry("yellow", (235, 220, 50)),
    PaletteEntry("orange", (240, 140, 30)),
    PaletteEntry("purple", (140, 60, 190)),
    PaletteEntry("cyan", (40, 200, 210)),
    PaletteEntry("pink", (240, 120, 190)),
)


class ColorBlobDetector:
    """Detects objects drawn in known flat colours.

    A pixel belongs to a palette colour when, in ``color_space="rgb"``, every channel is
    within ``tolerance`` of it; in ``"hsv"`` (robust to shading), when its hue is within
    ``hue_tolerance`` (OpenCV units, 0..179) and its saturation and value are at least
    ``min_saturation`` and ``min_value`` (0..255). A palette entry's own ``tolerance``
    replaces the default (RGB tolerance, or hue tolerance in HSV).

    Matching pixels are connected into blobs (8-connectivity); each blob of at least
    ``min_area`` pixels is a detection with its bounding box. The score combines how well the
    blob matches the colour and how big it is:
    ``(1 - mean_distance / (tolerance + 1)) * (1 - exp(-area / area_scale))`` (distance: max
    channel difference in RGB, hue difference in HSV), so small or off-colour blobs score low.
    """

    def __init__(
        self,
        *,
        palette: Sequence[PaletteEntry] = BASIC_PALETTE,
        color_space: Literal["rgb", "hsv"] = "rgb",
        tolerance: float = 30.0,
        hue_tolerance: float = 8.0,
        min_saturation: int = 100,
        min_value: int = 50,
        min_area: int = 12,
        area_scale: float = 200.0,
    ) -> None:
        if not palette:
            raise ValueError("ColorBlobDetector needs at least one palette entry")
        if color_space not in ("rgb", "hsv"):
            raise ValueError(f"color_space must be 'rgb' or 'hsv', got {color_space!r}")
        self.palette = list(palette)
        self.color_space = color_space
        self.min_saturation, self.min_value = min_saturation, min_value
        self.min_area = min_area
        self.area_scale = area_scale
        self._names = tuple(entry.name for entry in self.palette)
        colors = np.array([entry.rgb for entry in self.palette], np.uint8)  # (P, 3)
        default = tolerance
        if color_space == "hsv":
            colors = cv2.cvtColor(colors[None], cv2.COLOR_RGB2HSV)[0]  # (1, P, 3) -> (P, 3)
            default = hue_tolerance
        self._colors = colors.astype(np.int16)
        self._tolerances = np.array(
            [entry.tolerance if entry.tolerance is not None else default for entry in self.palette],
            np.float32,
        )

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> ColorBlobDetector:
        return cls(palette=read_palette(path), **options)

    @property
    def num_classes(self) -> int:
        return len(self.palette)

    @property
    def class_names(self) -> Sequence[str]:
        return self._names

    def _distance(self, pixels: np.ndarray, color: np.ndarray) -> np.ndarray:
        """Per-pixel distance to a colour: max channel difference (RGB) or circular hue
        difference (HSV). (..., 3) -> (...)."""
        if self.color_space == "hsv":
            hue = np.abs(pixels[..., 0].astype(np.int16) - color[0])
            return np.minimum(hue, 180 - hue)
        return np.abs(pixels.astype(np.int16) - color).max(axis=-1)

    def _mask(self, image: np.ndarray, color: np.ndarray, tolerance: float) -> np.ndarray:
        """(H, W) uint8 mask of the pixels of this colour (OpenCV, in C++)."""
        if self.color_space == "rgb":
            low = np.clip(color - int(tolerance), 0, 255).astype(np.uint8)
            high = np.clip(color + int(tolerance), 0, 255).astype(np.uint8)
            return cv2.inRange(image, low, high)
        hue, tol = int(color[0]), int(tolerance)
        floor = (self.min_saturation, self.min_value)
        ranges = [(hue - tol, hue + tol)]
        if hue - tol < 0:  # hue wraps around 180
            ranges = [(0, hue + tol), (hue - tol + 180, 179)]
        elif hue + tol > 179:
            ranges = [(hue - tol, 179), (0, hue + tol - 180)]
        mask = None
        for low_hue, high_hue in ranges:
            part = cv2.inRange(
                image,
                np.array([low_hue, *floor], np.uint8),
                np.array([high_hue, 255, 255], np.uint8),
            )
            mask = part if mask is None else cv2.bitwise_or(mask, part)
        return mask

    def detect_one(self, frame: np.ndarray) -> Detections:
        image = np.ascontiguousarray(frame[..., :3])
        if self.color_space == "hsv":
            image = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        boxes, labels, scores = [], [], []
        for label, (color, tolerance) in enumerate(zip(self._colors, self._tolerances)):
            mask = self._mask(image, color, tolerance)
            if cv2.countNonZero(mask) < self.min_area:
                continue
            count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for component in range(1, count):  # 0 is the background
                x, y, w, h, area = stats[component]
                if area < self.min_area:
                    continue
                window = components[y : y + h, x : x + w] == component  # (h, w) blob pixels
                pixels = image[y : y + h, x : x + w][window]  # (area, 3)
                match = 1.0 - float(self._distance(pixels, color).mean()) / (tolerance + 1.0)
                size = 1.0 - float(np.exp(-area / self.area_scale))
                boxes.append((x, y, x + w, y + h))
                labels.append(label)
                scores.append(match * size)
        if not boxes:
            return Detections.empty()
        return Detections(
            np.asarray(boxes, np.float32),
            np.asarray(labels, np.int64),
            np.asarray(scores, np.float32),
        )

    def detect(self, frames: np.ndarray | torch.Tensor) -> list[Detections]:
        if isinstance(frames, torch.Tensor):
            frames = frames.cpu().numpy()
        return [self.detect_one(frame) for frame in frames]


# ------------------------------------------------------------------------------ torchvision


class TorchvisionDetector(nn.Module):
    """A torchvision detection model (e.g. ``fasterrcnn_resnet50_fpn``) as an
    :class:`ObjectDetector`. Its label 0 is the background; the classes reported are labels
    ``1 .. num_classes-1``, shifted to ``0 .. num_classes-2``."""

    def __init__(self, *, model: nn.Module, class_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model.eval()
        self._names = tuple(class_names)

    @property
    def num_classes(self) -> int:
        return len(self._names)

    @property
    def class_names(self) -> Sequence[str]:
        return self._names

    @torch.no_grad()
    def detect(self, frames: np.ndarray | torch.Tensor) -> list[Detections]:
        device = next(self.model.parameters()).device
        batch = torch.as_tensor(frames, device=device)  # (B, H, W, 3) uint8
        images = list(batch.permute(0, 3, 1, 2).float().div(255.0))  # -> B x (3, H, W)
        outputs = self.model(images)
        results = []
        for output in outputs:
            labels = output["labels"].long() - 1  # drop the background class
            keep = (labels >= 0) & (labels < self.num_classes)
            results.append(
                Detections(
                    output["boxes"][keep].float().cpu().numpy(),
                    labels[keep].cpu().numpy(),
                    output["scores"][keep].float().cpu().numpy(),
                )
            )
        return results


def _class_names_from_file(path: Path) -> list[str]:
    """One name per line, or a CSV whose second column is the name (EPIC class files)."""
    with open_text(path) as handle:  # with or without a byte-order mark
        lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
    if lines and "," in lines[0]:
        header, *rows = lines
        if not header.split(",")[0].strip().isdigit():
            lines = rows
        return [line.split(",")[1].strip() for line in lines]
    return lines


def build_torchvision_detector(
    *,
    model: str = "fasterrcnn_resnet50_fpn",
    weights: str | None = "DEFAULT",
    num_classes: int | None = None,
    class_names: str | Path | None = None,
    score_threshold: float = 0.05,
    min_size: int = 800,
    max_size: int = 1333,
    seed: int = 0,
) -> TorchvisionDetector:
    """Build a detector. ``num_classes`` counts the background (COCO: 91, EPIC-55 nouns: 353);
    it is read from the weights or the checkpoint when not given. ``class_names`` is a file
    (one per line, or an EPIC ``*_classes.csv``) without the background."""
    resolved = resolve_weights(model, weights)
    state = load_state_dict(resolved) if isinstance(resolved, Path) else None
    if num_classes is None:
        if state is not None and "roi_heads.box_predictor.cls_score.weight" in state:
            num_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
        elif resolved is not None and not isinstance(resolved, Path):
            num_classes = len(resolved.meta["categories"])
        else:
            num_classes = 91  # COCO
    options: dict[str, Any] = {
        "box_score_thresh": score_threshold,
        "min_size": min_size,
        "max_size": max_size,
    }
    if resolved is None or isinstance(resolved, Path):
        options.update(weights_backbone=None, num_classes=num_classes)
    with seeded(seed):
        try:
            network = torchvision.models.get_model(
                model, weights=None if isinstance(resolved, Path) else resolved, **options
            )
        except OSError as error:
            raise WeightsUnavailableError(
                f"cannot download the {weights} weights of {model} ({error}); pass a local "
                "checkpoint or weights: none"
            ) from error
    if state is not None:
        result = network.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"checkpoint {resolved} does not fit {model} with {num_classes} classes: "
                f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
    if class_names is not None:
        names = _class_names_from_file(Path(class_names))
    elif resolved is not None and not isinstance(resolved, Path):
        names = list(resolved.meta["categories"])[1:]
    else:
        names = [f"class_{index}" for index in range(1, num_classes)]
    if len(names) != num_classes - 1:
        raise ValueError(
            f"{len(names)} class names for a detector of {num_classes} classes (with background); "
            f"expected {num_classes - 1}"
        )
    return TorchvisionDetector(model=network, class_names=names)
