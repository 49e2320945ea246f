"""Writing a feature file: :class:`FeatureFileWriter` (append-only, one video at a time)."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from epic_protocol.features.checks import (
    attribute_mismatches,
    complete_in,
    info_from_attrs,
    open_for_writing,
)
from epic_protocol.features.failures import FeatureWriteError, abandon_hdf5, write_failure
from epic_protocol.features.layout import (
    COMPLETE,
    FEATURES,
    FINITE,
    FRAMES,
    LAYOUT_NAME,
    LAYOUT_VERSION,
    NUM_FRAMES,
    STORAGE_DTYPE,
    STORAGE_DTYPES,
    FeatureFileError,
    FeatureFileMismatchError,
    FeaturesReplacedWarning,
    NonFiniteFeatureError,
    StorageDtype,
    check_video_id,
    count_videos,
    describe_non_finite,
    first_non_finite_row,
)

_FLOAT16_MAX = float(np.finfo(np.float16).max)

log = logging.getLogger(__name__)


class FeatureFileWriter:
    """Append-only writer for one modality file.

    A video is written between :meth:`start_video` and :meth:`finish_video`; only the latter
    marks it complete (and flushes), so a crash mid-video leaves an incomplete group that the
    next run discards and redoes. Reopening an existing file checks that modality, dim, fps and
    storage dtype agree. When they differ, a file without any complete video (left by a run
    that failed before finishing one) is recreated with the new attributes (logged at INFO);
    a file with complete videos raises :class:`FeatureFileMismatchError`, or with
    ``replace_mismatched=True`` is replaced by an empty one, with a
    :class:`FeaturesReplacedWarning` naming the file and what differed. ``replaced`` lists
    what differed in the file that was recreated or replaced (empty otherwise).

    ``dtype="float16"`` stores the features at half the disk size (readers convert back to
    float32); values beyond float16's range (65504) raise :class:`FeatureFileError` instead of
    becoming infinite. ``chunk_rows`` overrides the rows per HDF5 chunk (default: about
    256 KiB of whole rows).

    A row holding NaN or inf raises :class:`NonFiniteFeatureError` naming the file, video and
    frame, and nothing of that :meth:`append` is written.

    A write the operating system refuses (disk full, a file-size limit) raises
    :class:`FeatureWriteError` naming the file and the OS error, from the call that wrote
    (:meth:`finish_video` and :meth:`close` flush first, so a failure is never left to a
    destructor); the file is then abandoned, not closed (:func:`abandon_hdf5`), and every
    later call raises the same error (:meth:`close` returns quietly).

    Raises:
        FeatureFileMismatchError: see above.
        FeatureWriteError: see above.
        FeatureFileError: a bad ``dtype`` or ``chunk_rows``.
        FeatureFileAccessError: a file that cannot be opened for writing (locked, not HDF5,
            unwritable folder).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        modality: str,
        dim: int,
        fps: float,
        provenance: Mapping[str, Any] | None = None,
        dtype: StorageDtype = "float32",
        chunk_rows: int | None = None,
        replace_mismatched: bool = False,
    ) -> None:
        if dtype not in STORAGE_DTYPES:
            raise FeatureFileError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
        if chunk_rows is not None and chunk_rows < 1:
            raise FeatureFileError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.path = Path(path)
        #: What differed in an existing file that was recreated or replaced (else empty).
        self.replaced: list[str] = []
        self._failure: FeatureWriteError | None = None
        # (frames, features) datasets of the videos started here and not finished: held open
        # so that their cached chunks are written by an explicit flush (see _writing).
        self._datasets: dict[str, tuple[h5py.Dataset, h5py.Dataset]] = {}
        self._file = self._open("a")
        attrs = self._file.attrs
        if "layout" in attrs:
            try:
                info = info_from_attrs(self.path, attrs)
            except FeatureFileError:
                self._file.close()
                raise
            mismatches = attribute_mismatches(
                info, modality=modality, dim=dim, fps=fps, dtype=dtype
            )
            if mismatches:
                videos = len(complete_in(self._file))
                self._file.close()
                if videos and not replace_mismatched:
                    raise FeatureFileMismatchError(self.path, mismatches, videos)
                if videos:
                    warnings.warn(
                        f"{self.path}: replacing it and its {count_videos(videos)}: it holds "
                        f"different features ({'; '.join(mismatches)})",
                        FeaturesReplacedWarning,
                        stacklevel=2,
                    )
                else:
                    log.info(
                        "%s: holds no complete video; recreating it (%s)",
                        self.path,
                        "; ".join(mismatches),
                    )
                self.replaced = mismatches
                self._file = self._open("w")
                attrs = self._file.attrs
        if "layout" not in attrs:
            with self._writing():
                attrs["layout"] = LAYOUT_NAME
                attrs["layout_version"] = LAYOUT_VERSION
                attrs["modality"] = modality
                attrs["dim"] = int(dim)
                attrs["fps"] = float(fps)
                attrs["provenance"] = json.dumps(dict(provenance or {}), sort_keys=True)
                if dtype != "float32":  # absent means float32: older files stay valid
                    attrs[STORAGE_DTYPE] = dtype
        self.modality, self.dim, self.fps = modality, int(dim), float(fps)
        self.dtype = np.dtype(dtype)
        # Whole rows, ~256 KiB per chunk: 64 rows of 1024 float32 (a dense sample's ~105-row
        # run spans 2-3 chunks), 128 of 1024 float16, 186 of 352 float32.
        self.chunk_rows = chunk_rows or int(
            np.clip(2**18 // (self.dim * self.dtype.itemsize), 16, 4096)
        )

    def _open(self, mode: str) -> h5py.File:
        return open_for_writing(self.path, mode)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Writes to the file: a write the OS refuses abandons the file and raises
        :class:`FeatureWriteError` (see the class docstring)."""
        if self._failure is not None:
            raise self._failure
        try:
            yield
        except Exception as error:
            failure = write_failure(self.path, error)
            if failure is None:
                raise
            self._failure = failure
            abandon_hdf5(self._file, dict(self._datasets))
            raise failure from None

    def __enter__(self) -> FeatureFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the file (a file abandoned after a failed write stays open)."""
        if self._failure is not None or not self._file.id.valid:
            return
        with self._writing():
            # A dataset closed by its destructor would swallow a failed write: flush first.
            self._file.flush()
            self._datasets.clear()
            self._file.close()

    def is_complete(self, video: str) -> bool:
        group = self._file.get(video)
        return group is not None and bool(group.attrs.get(COMPLETE, False))

    def completed_videos(self) -> set[str]:
        return {name for name in self._file if self.is_complete(name)}

    def start_video(
        self, video: str, *, overwrite: bool = False, attrs: Mapping[str, Any] | None = None
    ) -> None:
        """Begin (or restart) a video. A complete video is only replaced with ``overwrite``."""
        check_video_id(video)
        if video in self._file and self.is_complete(video) and not overwrite:
            raise FeatureFileError(
                f"{self.path}: video {video!r} is already complete (pass overwrite)"
            )
        with self._writing():
            self._datasets.pop(video, None)
            if video in self._file:
                del self._file[video]
            group = self._file.create_group(video)
            group.attrs[COMPLETE] = False
            for key, value in (attrs or {}).items():
                group.attrs[key] = value
            features = group.create_dataset(
                FEATURES,
                shape=(0, self.dim),
                maxshape=(None, self.dim),
                dtype=self.dtype,
                chunks=(self.chunk_rows, self.dim),
            )
            frames = group.create_dataset(
                FRAMES, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,)
            )
            self._datasets[video] = (frames, features)

    def append(self, video: str, frames: np.ndarray, features: np.ndarray) -> None:
        """Append rows; frame numbers must be 1-based and continue strictly increasing."""
        group = self._file.get(video)
        if group is None or self.is_complete(video):
            raise FeatureFileError(f"{self.path}: call start_video({video!r}) before append")
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape != (len(frames), self.dim):
            raise FeatureFileError(
                f"{self.path}: video {video!r}: expected features of shape "
                f"({len(frames)}, {self.dim}), got {features.shape}"
            )
        if len(frames) == 0:
            return
        bad = first_non_finite_row(features)
        if bad is not None:
            raise NonFiniteFeatureError(
                f"{self.path}: video {video!r}: frame {frames[bad]}: the feature vector is not "
                f"finite ({describe_non_finite(features[bad])})",
                video=video,
                frame=int(frames[bad]),
            )
        if self.dtype == np.float16 and np.abs(features).max(initial=0.0) > _FLOAT16_MAX:
            raise FeatureFileError(
                f"{self.path}: video {video!r}: features reach {np.abs(features).max():.3g}, "
                "beyond float16's range (65504); store this modality as float32"
            )
        if self._failure is not None:
            raise self._failure
        if video not in self._datasets:  # started by an earlier writer of this file
            self._datasets[video] = (group[FRAMES], group[FEATURES])
        stored_frames, stored_features = self._datasets[video]
        previous = stored_frames[-1] if len(stored_frames) else 0
        if frames[0] <= previous or np.any(np.diff(frames) <= 0):
            raise FeatureFileError(
                f"{self.path}: video {video!r}: frame numbers must be >= 1 and strictly "
                f"increasing (last stored {previous}, got {frames[:5].tolist()}...)"
            )
        n = len(stored_frames)
        with self._writing():
            stored_frames.resize((n + len(frames),))
            stored_features.resize((n + len(frames), self.dim))
            stored_frames[n:] = frames
            stored_features[n:] = features.astype(self.dtype, copy=False)

    def set_video_attrs(self, video: str, attrs: Mapping[str, Any]) -> None:
        """Add free-form attributes (extractor notes) to a started video."""
        if video not in self._file:
            raise FeatureFileError(f"{self.path}: video {video!r} was never started")
        with self._writing():
            for key, value in attrs.items():
                self._file[video].attrs[key] = value

    def finish_video(self, video: str, *, num_frames: int | None = None) -> None:
        """Mark a video complete and flush it to disk.

        ``num_frames``: how many frames (at ``fps``) the video decoded to, recorded as the
        ``num_frames`` attribute so that readers know where the video ends even when only
        some frames were stored. It may not be below the last stored frame.
        """
        group = self._file.get(video)
        if group is None:
            raise FeatureFileError(f"{self.path}: video {video!r} was never started")
        if num_frames is not None:
            stored = self._datasets[video][0] if video in self._datasets else group[FRAMES]
            last = int(stored[-1]) if len(stored) else 0
            if int(num_frames) < last:
                raise FeatureFileError(
                    f"{self.path}: video {video!r}: num_frames={num_frames} is below the "
                    f"last stored frame {last}"
                )
        with self._writing():
            if num_frames is not None:
                group.attrs[NUM_FRAMES] = int(num_frames)
            group.attrs[FINITE] = True  # append refuses NaN and inf
            group.attrs[COMPLETE] = True
            self._file.flush()
            self._datasets.pop(video, None)  # written: closing them writes nothing

    def write_video(
        self,
        video: str,
        frames: np.ndarray,
        features: np.ndarray,
        *,
        overwrite: bool = False,
        attrs: Mapping[str, Any] | None = None,
        num_frames: int | None = None,
    ) -> None:
        """Write a whole video at once and mark it complete (``num_frames``: see
        :meth:`finish_video`)."""
        self.start_video(video, overwrite=overwrite, attrs=attrs)
        self.append(video, frames, features)
        self.finish_video(video, num_frames=num_frames)
