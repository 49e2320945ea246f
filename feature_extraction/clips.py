"""Causal clips for video backbones: the feature of frame ``f`` is computed from the clip of
``T = length`` frames ``f - (T-1)*s, ..., f`` (``s = stride`` output frames apart), frames before
the first being the first frame. Offline extraction reads the clips' frames
(:func:`clip_context`); streaming keeps them in a :class:`ClipBuffer`; both assemble the same
clip (:func:`clip_frames`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


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
