"""Reading per-frame features from the HDF5 layout (``epic_protocol.features``).

The reader never holds an open HDF5 handle across a fork: it opens its file lazily, on first
use, in whichever process uses it (each DataLoader worker gets its own handle).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from epic_protocol.features import (
    COMPLETE,
    FEATURES,
    FRAMES,
    FeatureFileError,
    FeatureFileInfo,
    read_file_info,
)


class MissingFeaturesError(KeyError):
    """A video or frame the sampling asks for is not in the feature file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class FeatureStore:
    """Per-frame features of one modality.

    ``lookup(video, frames)`` returns, for each requested frame, the features of the latest
    stored frame at or before it, so sparsely extracted files work. ``in_memory=True`` loads
    every complete video into RAM on first use (per process), which makes lookups a pure
    numpy gather.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        in_memory: bool = False,
        expected_dim: int | None = None,
        expected_fps: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.info: FeatureFileInfo = read_file_info(self.path)  # opens and closes
        if expected_dim is not None and self.info.dim != expected_dim:
            raise FeatureFileError(
                f"{self.path}: features are {self.info.dim}-d but the model expects "
                f"{expected_dim}-d ({self.info.modality})"
            )
        if expected_fps is not None and abs(self.info.fps - expected_fps) > 1e-6:
            raise FeatureFileError(
                f"{self.path}: features are numbered at {self.info.fps} fps but sampling uses "
                f"{expected_fps} fps"
            )
        self.in_memory = in_memory
        self.max_block_rows = 1024
        self._handle: h5py.File | None = None
        self._owner_pid: int | None = None
        self._frames: dict[str, np.ndarray] = {}
        self._features: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def modality(self) -> str:
        return self.info.modality

    def __getstate__(self) -> dict:
        # Pickled into DataLoader workers (spawn) without the handle or the RAM cache.
        state = self.__dict__.copy()
        state.update(_handle=None, _owner_pid=None, _frames={}, _features={})
        return state

    def _file(self) -> h5py.File:
        if self._handle is None or self._owner_pid != os.getpid():
            # A handle inherited through fork must not be used: open our own.
            # A larger chunk cache than the 1 MiB default keeps neighbouring samples cheap.
            self._handle = h5py.File(self.path, "r", rdcc_nbytes=32 * 1024**2)
            self._owner_pid = os.getpid()
            self._frames, self._features = {}, {}
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._owner_pid == os.getpid():
            self._handle.close()
        self._handle = None

    def videos(self, *, complete_only: bool = True) -> list[str]:
        handle = self._file()
        return [
            name
            for name in handle
            if not complete_only or bool(handle[name].attrs.get(COMPLETE, False))
        ]

    def _video(self, video: str) -> h5py.Group:
        handle = self._file()
        group = handle.get(video)
        if group is None:
            raise MissingFeaturesError(
                f"video {video!r} is not in {self.path} ({self.modality} features); "
                f"extract it or remove its segments from the annotations"
            )
        if not bool(group.attrs.get(COMPLETE, False)):
            raise MissingFeaturesError(
                f"video {video!r} in {self.path} is incomplete (an interrupted extraction); "
                "rerun the extraction to finish it"
            )
        return group

    def stored_frames(self, video: str) -> np.ndarray:
        frames = self._frames.get(video)
        if frames is None:
            group = self._video(video)
            frames = group[FRAMES][()]
            self._frames[video] = frames
            if self.in_memory:
                self._features[video] = group[FEATURES][()]
        return frames

    def rows_for(self, video: str, frames: np.ndarray) -> np.ndarray:
        """Row index of the latest stored frame at or before each requested frame."""
        stored = self.stored_frames(video)
        rows = np.searchsorted(stored, frames, side="right") - 1
        if len(stored) == 0 or rows.min() < 0:
            first = int(stored[0]) if len(stored) else None
            bad = int(np.asarray(frames)[rows < 0][0]) if len(stored) else int(frames[0])
            raise MissingFeaturesError(
                f"frame {bad} of video {video!r} has no stored frame at or before it in "
                f"{self.path} (first stored frame: {first})"
            )
        return rows

    def lookup(self, video: str, frames: np.ndarray) -> np.ndarray:
        """Features ``(len(frames), dim)`` float32 for 1-based ``frames`` of ``video``."""
        frames = np.asarray(frames, dtype=np.int64)
        rows = self.rows_for(video, frames)
        if self.in_memory:
            return self._features[video][rows]
        dataset = self._video(video)[FEATURES]
        low, high = int(rows.min()), int(rows.max()) + 1
        if high - low <= self.max_block_rows:
            # One contiguous slice (a sample spans ~105 rows) is >10x faster than h5py's
            # fancy indexing; the gather then happens in numpy.
            return dataset[low:high][rows - low]
        # Sparse files with big gaps: read each needed row once (fancy indexing wants them
        # strictly increasing).
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        return dataset[unique_rows][inverse]
