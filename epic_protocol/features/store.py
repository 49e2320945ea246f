"""Reading a feature file: :class:`FeatureStore` (the lookup rule of the layout).

The reader never holds an open HDF5 handle across a fork: it opens its file lazily, on first
use, in whichever process uses it (each DataLoader worker gets its own handle).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from epic_protocol.features.checks import open_for_reading, read_file_info
from epic_protocol.features.layout import (
    COMPLETE,
    FEATURES,
    FINITE,
    FRAMES,
    NUM_FRAMES,
    BeyondEndWarning,
    FeatureFileError,
    FeatureFileInfo,
    MissingFeaturesError,
    NonFiniteFeatureError,
    describe_non_finite,
    first_non_finite_row,
)

BeyondEnd = Literal["error", "clamp"]
BEYOND_END_CHOICES: tuple[str, ...] = ("error", "clamp")


class FeatureStore:
    """Per-frame features of one modality.

    ``lookup(video, frames)`` returns, for each requested frame, the features of the latest
    stored frame at or before it, so sparsely extracted files work; frames past the end of
    the video (``num_frames``, else the last stored frame) raise :class:`MissingFeaturesError`,
    or with ``beyond_end="clamp"`` read the last stored frame (one warning per video and
    process). ``lookup_batch`` does many lookups with one read per video. Features are always
    returned as float32, whatever the storage dtype. ``in_memory=True`` loads every complete
    video into RAM on first use (per process, in the storage dtype), which makes lookups a
    pure numpy gather.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        in_memory: bool = False,
        expected_dim: int | None = None,
        expected_fps: float | None = None,
        beyond_end: BeyondEnd = "error",
    ) -> None:
        if beyond_end not in BEYOND_END_CHOICES:
            raise ValueError(f"beyond_end must be one of {BEYOND_END_CHOICES}, got {beyond_end!r}")
        self.beyond_end = beyond_end
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
        # Read through gaps of up to this many unneeded rows rather than split a read.
        self.max_gap_rows = 128
        self._handle: h5py.File | None = None
        self._owner_pid: int | None = None
        self._frames: dict[str, np.ndarray] = {}
        self._features: dict[str, np.ndarray] = {}
        self._ends: dict[str, tuple[int, int]] = {}
        self._warned: set[str] = set()

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def modality(self) -> str:
        return self.info.modality

    def __getstate__(self) -> dict:
        # Pickled into DataLoader workers (spawn) without the handle or the RAM cache.
        state = self.__dict__.copy()
        state.update(_handle=None, _owner_pid=None, _frames={}, _features={}, _ends={})
        return state

    def _file(self) -> h5py.File:
        if self._handle is None or self._owner_pid != os.getpid():
            # A handle inherited through fork must not be used: open our own.
            # A larger chunk cache than the 1 MiB default keeps neighbouring samples cheap.
            self._handle = open_for_reading(self.path, rdcc_nbytes=32 * 1024**2)
            self._owner_pid = os.getpid()
            self._frames, self._features, self._ends = {}, {}, {}
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

    def video_end(self, video: str) -> tuple[int, int]:
        """``(num_frames, last_stored_frame)`` of a video: where it ends, and its last row.

        ``num_frames`` is the recorded decoded frame count, or the last stored frame for files
        written without it. Reads two numbers, not the frame index, so checking every video
        of a split up front is cheap.
        """
        ends = self._ends.get(video)
        if ends is None:
            group = self._video(video)
            stored = group[FRAMES]
            last = int(stored[-1]) if len(stored) else 0
            recorded = group.attrs.get(NUM_FRAMES)
            ends = (int(recorded) if recorded is not None else last, last)
            self._ends[video] = ends
        return ends

    def check_finite(self, video: str, *, rows_per_read: int | None = None) -> None:
        """Raise :class:`NonFiniteFeatureError` naming the file, video and frame of the first
        feature vector of ``video`` holding NaN or inf.

        Videos written by this project's writers carry the ``finite`` attribute (every row was
        checked when it was written) and cost one attribute read; others (files made
        elsewhere, or before the writers checked) are read in blocks of ``rows_per_read`` rows
        (default: about 16 MiB), never whole.
        """
        group = self._video(video)
        if bool(group.attrs.get(FINITE, False)):
            return
        dataset = group[FEATURES]
        step = rows_per_read or max(1, 2**24 // max(1, self.dim * dataset.dtype.itemsize))
        for start in range(0, dataset.shape[0], step):
            bad = first_non_finite_row(dataset[start : start + step])
            if bad is not None:
                row = start + bad
                frame = int(group[FRAMES][row])
                raise NonFiniteFeatureError(
                    f"{self.path}: video {video!r}: frame {frame}: the {self.modality} feature "
                    f"vector is not finite ({describe_non_finite(dataset[row])}); training on "
                    "it gives NaN scores: re-extract or re-import the video, or drop its "
                    "segments",
                    video=video,
                    frame=frame,
                )

    def check_frames(self, video: str, frames: np.ndarray) -> bool:
        """Apply the end-of-video rule to requested frames.

        Returns True when some frame lies past the end and ``beyond_end="clamp"`` lets it
        read the last stored frame (warning once per video); raises
        :class:`MissingFeaturesError` naming the file, video, frame and last stored frame
        otherwise.
        """
        frames = np.asarray(frames, dtype=np.int64)
        if frames.size == 0:
            return False
        num_frames, last = self.video_end(video)
        highest = int(frames.max())
        if highest <= num_frames:
            return False
        if self.beyond_end == "error":
            raise MissingFeaturesError(
                f"{self.path}: frame {highest} of video {video!r} is past the end of its "
                f"{self.modality} features (last stored frame {last}, video length "
                f"{num_frames} frames at {self.info.fps:g} fps); extract the whole video, fix "
                "the annotations, or set beyond_end: clamp to read the last stored frame"
            )
        if video not in self._warned:
            self._warned.add(video)
            warnings.warn(
                f"{self.path}: frame {highest} of video {video!r} is past the end of its "
                f"{self.modality} features (last stored frame {last}); reading frame {last} "
                "instead (beyond_end: clamp)",
                BeyondEndWarning,
                stacklevel=2,
            )
        return True

    def rows_for(self, video: str, frames: np.ndarray) -> np.ndarray:
        """Row index of the latest stored frame at or before each requested frame (see the
        module docstring for frames before the first or after the last one)."""
        stored = self.stored_frames(video)
        frames = np.asarray(frames, dtype=np.int64)
        rows = np.searchsorted(stored, frames, side="right") - 1
        if len(stored) == 0 or rows.min() < 0:
            first = int(stored[0]) if len(stored) else None
            bad = int(frames[rows < 0][0]) if len(stored) else int(frames[0])
            raise MissingFeaturesError(
                f"frame {bad} of video {video!r} has no stored frame at or before it in "
                f"{self.path} (first stored frame: {first})"
            )
        self.check_frames(video, frames)
        return rows

    def lookup(self, video: str, frames: np.ndarray) -> np.ndarray:
        """Features ``(len(frames), dim)`` float32 for 1-based ``frames`` of ``video``."""
        return self.lookup_batch([(video, frames)])[0]

    def lookup_batch(self, requests: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """:meth:`lookup` for many ``(video, frames)`` requests (e.g. a DataLoader batch).

        The rows every request of one video needs are read together, as few runs of
        consecutive rows (one HDF5 read each) as the gaps between them allow, instead of one
        read per request. Returns one float32 ``(len(frames), dim)`` array per request, in
        order. Raises :class:`MissingFeaturesError` naming the video and frame.
        """
        rows = [
            self.rows_for(video, np.asarray(frames, dtype=np.int64)) for video, frames in requests
        ]
        by_video: dict[str, list[int]] = {}
        for index, (video, _) in enumerate(requests):
            by_video.setdefault(video, []).append(index)
        out: list[np.ndarray] = [np.empty(0)] * len(requests)
        for video, indices in by_video.items():
            if self.in_memory:
                stored = self._features[video]
                for index in indices:
                    out[index] = stored[rows[index]].astype(np.float32, copy=False)
                continue
            wanted = np.unique(np.concatenate([rows[index] for index in indices]))
            block = self._read_rows(video, wanted)  # (len(wanted), dim) float32
            for index in indices:
                out[index] = block[np.searchsorted(wanted, rows[index])]
        return out

    def _read_rows(self, video: str, wanted: np.ndarray) -> np.ndarray:
        """Rows ``wanted`` (sorted, unique) of a video as float32, reading runs of rows.

        A gap of up to ``max_gap_rows`` unneeded rows is read through (a contiguous slice is
        >10x faster per row than h5py's point selection); larger gaps split the read."""
        dataset = self._video(video)[FEATURES]
        breaks = np.flatnonzero(np.diff(wanted) > self.max_gap_rows) + 1
        parts = []
        for run in np.split(wanted, breaks):
            low, high = int(run[0]), int(run[-1]) + 1
            parts.append(dataset[low:high][run - low])  # (len(run), dim)
        return np.concatenate(parts).astype(np.float32, copy=False)
