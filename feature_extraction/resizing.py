"""The size frames are decoded at, and resizing to it (OpenCV): one rule for the batch
extraction (:func:`feature_extraction.video.decode_video`) and the streaming extractor."""

from __future__ import annotations

import cv2
import numpy as np


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize an HxWx3 frame to ``size = (width, height)`` (area interpolation when shrinking)."""
    if size is None:
        return frame
    width, height = size
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    shrinking = width * height < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interpolation)


def output_size(
    width: int, height: int, *, target_width: int | None, target_height: int | None
) -> tuple[int, int] | None:
    """The decoded frame size: both given, one given (aspect kept, rounded to even), or none."""
    if target_width is None and target_height is None:
        return None
    if target_width is not None and target_height is not None:
        return int(target_width), int(target_height)
    if target_width is not None:
        return int(target_width), max(2, 2 * round(height * target_width / width / 2))
    assert target_height is not None
    return max(2, 2 * round(width * target_height / height / 2)), int(target_height)


class SizeRule:
    """The decoded size of a picture of ``(width, height)``: see :func:`output_size`."""

    def __init__(self, width: int | None, height: int | None) -> None:
        self.width, self.height = width, height

    def __call__(self, width: int, height: int) -> tuple[int, int] | None:
        return output_size(width, height, target_width=self.width, target_height=self.height)
