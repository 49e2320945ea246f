"""Object features: the detector interface, colour blobs and a torchvision Faster R-CNN."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from feature_extraction.config import ObjConfig
from feature_extraction.detectors import (
    ColorBlobDetector,
    Detections,
    ObjectDetector,
    PaletteEntry,
    build_torchvision_detector,
    class_confidences,
    read_palette,
)
from feature_extraction.models import build_detector

PALETTE = [
    PaletteEntry("tomato", (230, 30, 30)),
    PaletteEntry("plate", (30, 60, 230)),
    PaletteEntry("lemon", (240, 230, 40), tolerance=20),
]


def _kitchen_frame() -> np.ndarray:
    """Grey background, a red rectangle, two blue discs, a tiny yellow speck (too small)."""
    frame = np.full((90, 120, 3), 110, np.uint8)
    frame[10:30, 20:60] = (230, 30, 30)
    cv2.circle(frame, (90, 60), 12, (35, 65, 225), -1)
    cv2.circle(frame, (30, 70), 8, (25, 55, 235), -1)
    frame[80:82, 100:102] = (240, 230, 40)
    return frame


def test_color_blobs_are_found_with_their_boxes() -> None:
    detector = ColorBlobDetector(palette=PALETTE, min_area=12)
    assert isinstance(detector, ObjectDetector)
    (found,) = detector.detect(_kitchen_frame()[None])
    order = np.lexsort((found.boxes[:, 0], found.labels))
    boxes, labels, scores = found.boxes[order], found.labels[order], found.scores[order]
    assert labels.tolist() == [0, 1, 1]  # tomato, two plates; the speck is below min_area
    assert boxes[0].tolist() == [20, 10, 60, 30]
    assert boxes[1].tolist() == pytest.approx(
        [22, 62, 39, 79], abs=1
    )  # disc of radius 8 at (30, 70)
    assert boxes[2].tolist() == pytest.approx([78, 48, 103, 73], abs=1)
    assert all(0 < s < 1 for s in scores)
    assert scores[2] > scores[1]  # the bigger plate is more confident
    vector = class_confidences(found, num_classes=3, threshold=0.0)
    assert vector.tolist() == pytest.approx([scores[0], scores[1] + scores[2], 0.0])


def test_hsv_thresholding_finds_the_same_blobs() -> None:
    detector = ColorBlobDetector(palette=PALETTE, color_space="hsv", hue_tolerance=6)
    shaded = _kitchen_frame()
    shaded[10:30, 40:60] = (150, 20, 20)  # the right half of the tomato in shadow
    (found,) = detector.detect(shaded[None])
    assert sorted(found.labels.tolist()) == [0, 1, 1]
    assert found.boxes[found.labels == 0].tolist() == [[20, 10, 60, 30]]  # still one blob


def test_class_confidences_sum_above_the_threshold() -> None:
    detections = Detections(
        np.zeros((4, 4), np.float32),
        np.array([2, 2, 0, 2]),
        np.array([0.9, 0.4, 0.2, 0.05], np.float32),
    )
    vector = class_confidences(detections, num_classes=4, threshold=0.3)
    assert vector.tolist() == pytest.approx([0.0, 0.0, 1.3, 0.0])
    assert class_confidences(Detections.empty(), num_classes=2, threshold=0.0).tolist() == [0, 0]


def test_palette_files_in_several_shapes(tmp_path: Path) -> None:
    listed = tmp_path / "palette.yaml"
    listed.write_text(
        "- {name: knife, rgb: [10, 20, 30], tolerance: 5}\n- name: pan\n  rgb: '#ff8000'\n"
    )
    assert read_palette(listed) == [
        PaletteEntry("knife", (10, 20, 30), 5.0),
        PaletteEntry("pan", (255, 128, 0)),
    ]
    nested = tmp_path / "palette.json"
    nested.write_text(json.dumps({"objects": [{"name": "cup", "color": [0.0, 0.5, 1.0]}]}))
    assert read_palette(nested) == [PaletteEntry("cup", (0, 128, 255))]
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("bowl: [1, 2, 3]\nfork: {rgb: [4, 5, 6], tolerance: 9}\n")
    assert [e.name for e in read_palette(mapping)] == ["bowl", "fork"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x}\n")
    with pytest.raises(ValueError, match="bad.yaml.*entry 0"):
        read_palette(bad)
    detector = build_detector(ObjConfig(detector="color_blob", palette=listed))
    assert list(detector.class_names) == ["knife", "pan"]


def test_class_and_palette_files_with_byte_order_mark(tmp_path) -> None:
    """Files saved as "CSV UTF-8" by a spreadsheet start with a BOM: same names as without."""
    from feature_extraction.detectors import _class_names_from_file

    classes = tmp_path / "EPIC_100_noun_classes.csv"
    classes.write_text("id,key,instances,category\n0,tap,[],x\n1,cup,[],x\n", "utf-8-sig")
    assert _class_names_from_file(classes) == ["tap", "cup"]
    plain = tmp_path / "names.txt"
    plain.write_text("tap\ncup\n", "utf-8-sig")
    assert _class_names_from_file(plain) == ["tap", "cup"]
    palette = tmp_path / "palette.json"
    palette.write_text(json.dumps({"pan": [255, 128, 0]}), "utf-8-sig")
    assert read_palette(palette) == [PaletteEntry("pan", (255, 128, 0))]


def test_faster_rcnn_random_init_gives_one_score_per_class() -> None:
    detector = build_torchvision_detector(
        model="fasterrcnn_mobilenet_v3_large_320_fpn",
        weights=None,
        num_classes=5,
        min_size=64,
        max_size=96,
    )
    assert isinstance(detector, ObjectDetector)
    assert detector.num_classes == 4 and list(detector.class_names) == [
        f"class_{i}" for i in range(1, 5)
    ]
    results = detector.detect(np.zeros((2, 48, 64, 3), np.uint8))
    assert len(results) == 2
    for found in results:
        assert found.boxes.shape[1:] == (4,) and ((found.labels >= 0) & (found.labels < 4)).all()


class _ConstantDetector:
    """A third-party detector plugged in by import path."""

    def __init__(self, *, names: list[str]) -> None:
        self.names = names

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def class_names(self) -> list[str]:
        return self.names

    def detect(self, frames):
        return [
            Detections(np.zeros((1, 4), np.float32), np.array([1]), np.array([0.5], np.float32))
            for _ in frames
        ]


def test_other_detectors_plug_in_by_import_path() -> None:
    config = ObjConfig(detector=f"{__name__}:_ConstantDetector", options={"names": ["a", "b"]})
    detector = build_detector(config)
    assert detector.num_classes == 2
    with pytest.raises(ValueError, match="package.module:Class"):
        build_detector(ObjConfig(detector="yolo"))
