"""The HDF5 feature layout: the only thing the extraction and training sides share.

One file per modality (``rgb.h5``, ``flow.h5``, ``obj.h5``)::

    /                                   attrs: layout="rulstm-features", layout_version=1,
    |                                          modality, dim, fps, provenance (JSON string),
    |                                          storage_dtype ("float32" if absent, or "float16")
    +-- <video_id>/                     attrs: complete (bool), num_frames (int, optional),
        |                                          finite (bool, optional: the writer checked
        |                                          every row for NaN/inf), plus free-form
        |                                          extractor notes
        +-- features   float32 [N, dim] one row per stored frame (float16 if storage_dtype says
        |                               so; readers always return float32)
        +-- frames     int64   [N]      1-based frame numbers at ``fps``, strictly increasing

``features`` is chunked by rows (whole rows per chunk, about 256 KiB per chunk: 64 rows of
1024 float32), matching the reads: one sample reads a run of consecutive rows (14 steps
spread over ~105 frames of a dense file, or 14 neighbouring rows of a sparse one).

Frames may be sparse (only those a sampling protocol reads). The lookup rule: a requested
frame ``f`` of a video reads the latest stored frame at or before ``f``, provided
``1 <= f <= num_frames``, where ``num_frames`` is the number of frames (at ``fps``) the video
decoded to, recorded by the writer (the extraction, ``rulstm-import features``); files
without it use the last stored frame. A frame before the first stored one, or after the end
of the video, raises :class:`MissingFeaturesError` naming the file, video, frame and last
stored frame (``beyond_end="clamp"`` reads the last stored frame instead, with a warning).
A video whose ``complete`` attribute is not true is an interrupted write; writers discard it
and readers refuse it.

Video groups may also be HDF5 external links into per-rank shard files (distributed
extraction); h5py follows them transparently.
"""

from __future__ import annotations

import atexit
import contextlib
import errno as errno_codes
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

LAYOUT_NAME = "rulstm-features"
LAYOUT_VERSION = 1
FEATURES = "features"
FRAMES = "frames"
COMPLETE = "complete"
#: Video attribute: frames (at ``fps``) the video decoded to; lookups past it are errors.
NUM_FRAMES = "num_frames"
#: Root attribute naming the on-disk dtype of ``features`` (absent: float32).
STORAGE_DTYPE = "storage_dtype"
StorageDtype = Literal["float32", "float16"]
STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
#: Video attribute: only the frames a sampling protocol reads were stored (sparse extraction).
SPARSE = "sparse"
#: Video attribute: every row was checked finite when written (see FeatureStore.check_finite).
FINITE = "finite"

log = logging.getLogger(__name__)


class FeatureFileError(ValueError):
    """A feature file that does not follow the layout, or does not match what was asked."""


class FeatureFileMismatchError(FeatureFileError):
    """An existing feature file holds complete videos of other features (modality, dim, fps
    or storage dtype) than a writer was asked for.

    ``path``, ``mismatches`` (e.g. ``["dim is 20, not 352"]``) and ``videos`` (its number of
    complete videos) let a command line say what to do in its own terms.
    """

    def __init__(self, path: Path, mismatches: Sequence[str], videos: int) -> None:
        self.path, self.mismatches, self.videos = Path(path), list(mismatches), int(videos)
        super().__init__(
            f"{self.path} already holds {_videos(self.videos)} of different features: "
            f"{'; '.join(self.mismatches)}. Delete it, write to another file, or replace it "
            "(replace_mismatched=True)"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the custom signature
        return type(self), (self.path, self.mismatches, self.videos)


class NonFiniteFeatureError(FeatureFileError):
    """A feature vector holding NaN or an infinity, refused by the writers (and found by
    :func:`find_non_finite` in files made elsewhere); ``video`` and ``frame`` (1-based) say
    where. Training on it would stop later with NaN scores that name no file."""

    def __init__(self, message: str, *, video: str, frame: int) -> None:
        super().__init__(message)
        self.video, self.frame = video, int(frame)

    def __reduce__(self) -> tuple[Any, ...]:
        return _non_finite_error, (str(self), self.video, self.frame)


def _non_finite_error(message: str, video: str, frame: int) -> NonFiniteFeatureError:
    return NonFiniteFeatureError(message, video=video, frame=frame)


def describe_non_finite(vector: np.ndarray) -> str:
    """``'NaN in 3 of 512 values'`` / ``'inf in 1 of 512 values'`` for a (D,) vector."""
    vector = np.asarray(vector)
    kinds = [
        name
        for name, hit in (("NaN", np.isnan(vector).any()), ("inf", np.isinf(vector).any()))
        if hit
    ]
    bad = int((~np.isfinite(vector)).sum())
    return f"{' and '.join(kinds)} in {bad} of {vector.size} values"


def first_non_finite_row(features: np.ndarray) -> int | None:
    """Index of the first row of ``features`` (N, D) holding NaN or inf, or ``None``."""
    finite = np.isfinite(features).all(axis=tuple(range(1, np.ndim(features))))
    if finite.all():
        return None
    return int(np.argmin(finite))


class FeatureWriteError(FeatureFileError):
    """The operating system refused a write to a feature file (disk full, ``File too large``
    under a file-size limit, quota, I/O error). ``path``, ``errno`` and ``strerror`` say which
    file and why; the message is one line: ``<path>: cannot write: <strerror>``.

    The file is abandoned (see :func:`abandon_hdf5`): the process ends with status 1 once the
    error is reported, and the file is left as it is, to be discarded by the next run."""

    def __init__(self, path: Path, errno: int | None, strerror: str) -> None:
        self.path, self.errno, self.strerror = Path(path), errno, strerror
        super().__init__(f"{self.path}: cannot write: {strerror}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.errno, self.strerror)


# HDF5 reports a failed write(2) as "file write failed: ..., errno = 28, error message = 'No
# space left on device', ..." in a RuntimeError or OSError of h5py.
_HDF5_WRITE_FAILED = re.compile(r"errno = (\d+), error message = '([^']*)'")
_WRITE_ERRNOS = frozenset(
    getattr(errno_codes, name)
    for name in ("ENOSPC", "EFBIG", "EDQUOT", "EIO", "EROFS")
    if hasattr(errno_codes, name)
)


def write_failure(path: str | Path, error: BaseException) -> FeatureWriteError | None:
    """The :class:`FeatureWriteError` for ``error`` when it is the operating system refusing a
    write to ``path`` (an h5py error carrying HDF5's "file write failed" errno, or an
    ``OSError`` with a disk-full-like errno); ``None`` for any other error."""
    if isinstance(error, FeatureWriteError):
        return error
    text = str(error)
    match = _HDF5_WRITE_FAILED.search(text)
    if match and ("write" in text or "extend file" in text):  # not a failed read
        number = int(match[1])
        return FeatureWriteError(Path(path), number, os.strerror(number) or match[2])
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
        return FeatureWriteError(Path(path), error.errno, os.strerror(error.errno))
    return None


_ABANDONED: list[Any] = []


def _end_without_hdf5_cleanup() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def abandon_hdf5(*objects: Any) -> None:
    """Keep the h5py objects of a file HDF5 failed to write alive until the process ends, and
    end it with ``os._exit(1)`` (after flushing stdout and stderr) instead of a normal exit.

    Why: once a write failed (disk full, file-size limit), closing the file or its datasets
    fails again, each failure printing a traceback from a destructor, and HDF5's own clean-up
    at exit then crashes the process with a segmentation fault (h5py/h5py#914; seen with
    HDF5 2.0). So such a file is never closed: nothing of it is worth saving (writers only
    write files that a failed run discards: staging files, temporary files, videos not yet
    marked complete), and every other file was closed by the code that wrote it. Python's
    ``atexit`` callbacks run before the C library's, so the process ends with status 1
    right after the command has printed its error line.
    """
    if not _ABANDONED:
        atexit.register(_end_without_hdf5_cleanup)
    _ABANDONED.append(objects)


@contextlib.contextmanager
def reporting_write_failures(path: str | Path, *objects: Any) -> Iterator[None]:
    """Run a block of writes to the HDF5 file ``path``: an error of the operating system
    refusing a write becomes a :class:`FeatureWriteError`, and ``objects`` (the open file and
    the datasets the block uses) are abandoned (:func:`abandon_hdf5`); other errors pass."""
    try:
        yield
    except Exception as error:
        failure = write_failure(path, error)
        if failure is None:
            raise
        abandon_hdf5(*objects)
        raise failure from None


class FeaturesReplacedWarning(UserWarning):
    """A writer replaced a feature file holding complete videos of other features
    (``replace_mismatched``, e.g. ``--overwrite``)."""


class BeyondEndWarning(UserWarning):
    """Frames past a video's end were clamped to its last stored frame (``beyond_end: clamp``)."""


@dataclass(frozen=True)
class FeatureFileInfo:
    path: Path
    modality: str
    dim: int
    fps: float
    provenance: dict[str, Any] = field(default_factory=dict)
    storage_dtype: str = "float32"


def _is_lock_error(error: OSError) -> bool:
    # HDF5 >= 1.10 locks files (flock); h5py reports "unable to lock file, errno = 11".
    return "lock" in str(error).lower()


def _lock_message(path: Path, error: OSError) -> str:
    return (
        f"{path}: locked by another process (an extraction or training still has it open "
        f"for writing?) ({error}); if nothing writes it, e.g. on a read-only or network "
        "filesystem that does not support locks, set HDF5_USE_FILE_LOCKING=FALSE"
    )


def open_for_reading(path: str | Path, **kwargs: Any) -> h5py.File:
    """``h5py.File(path, "r", **kwargs)`` with errors that name the file; a file locked by
    another process gets a :class:`FeatureFileError` mentioning ``HDF5_USE_FILE_LOCKING``."""
    path = Path(path)
    try:
        return h5py.File(path, "r", **kwargs)
    except OSError as error:
        if _is_lock_error(error):
            raise FeatureFileError(_lock_message(path, error)) from error
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({error})") from error


def read_file_info(path: str | Path) -> FeatureFileInfo:
    """Read the root attributes of a feature file (opening and closing it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"feature file not found: {path}; create it with rulstm-extract (README: 'Feature "
            "extraction') or convert the released features with rulstm-import features"
        )
    with open_for_reading(path) as handle:
        return _info_from_attrs(path, handle.attrs)


def _info_from_attrs(path: Path, attrs: Mapping[str, Any]) -> FeatureFileInfo:
    if attrs.get("layout") != LAYOUT_NAME:
        raise FeatureFileError(
            f"{path}: not a {LAYOUT_NAME} file (root attribute 'layout' is "
            f"{attrs.get('layout')!r}); see the README's 'HDF5 feature layout'"
        )
    version = int(attrs.get("layout_version", -1))
    if version > LAYOUT_VERSION:
        raise FeatureFileError(
            f"{path}: layout_version {version} is newer than this code ({LAYOUT_VERSION})"
        )
    provenance = attrs.get("provenance", "{}")
    return FeatureFileInfo(
        path=path,
        modality=str(attrs["modality"]),
        dim=int(attrs["dim"]),
        fps=float(attrs["fps"]),
        provenance=json.loads(provenance) if provenance else {},
        storage_dtype=str(attrs.get(STORAGE_DTYPE, "float32")),
    )


def check_video_id(video: str) -> None:
    """Raise :class:`FeatureFileError` for a video id that cannot name an HDF5 group."""
    if not video or "/" in video or video.startswith("."):
        raise FeatureFileError(f"invalid video id {video!r}: it names an HDF5 group")


def _videos(count: int) -> str:
    return f"{count} complete video{'' if count == 1 else 's'}"


def _mismatches(
    info: FeatureFileInfo, *, modality: str, dim: int, fps: float, dtype: str
) -> list[str]:
    """What differs between a file's root attributes and what a writer was asked for."""
    return [
        f"{name} is {have!r}, not {want!r}"
        for name, have, want in (
            ("modality", info.modality, modality),
            ("dim", info.dim, int(dim)),
            ("fps", info.fps, float(fps)),
            ("storage dtype", info.storage_dtype, dtype),
        )
        if have != want
    ]


def _complete_in(handle: h5py.Group) -> set[str]:
    """Videos of an open feature file marked complete (a dangling external link is not)."""
    return {
        name
        for name in handle
        if isinstance(group := handle.get(name), h5py.Group)
        and bool(group.attrs.get(COMPLETE, False))
    }


def complete_videos(path: str | Path) -> set[str]:
    """Videos marked complete in a feature file, read-only; empty if it is absent.

    Raises:
        FeatureFileError: the file exists but is not a readable HDF5 file (or is locked).
    """
    path = Path(path)
    if not path.is_file():
        return set()
    with open_for_reading(path) as handle:
        return _complete_in(handle)


def feature_file_mismatches(
    path: str | Path, *, modality: str, dim: int, fps: float, dtype: str = "float32"
) -> tuple[list[str], int]:
    """What a :class:`FeatureFileWriter` opening ``path`` would find, read-only.

    Returns ``(mismatches, complete_videos)``: how the file's modality, dim, fps and storage
    dtype differ from those asked for (empty when they agree) and how many complete videos
    it holds; ``([], 0)`` when the file does not exist or has no layout attributes yet. A
    writer refuses the file when both are non-zero (unless ``replace_mismatched``), so a
    command can check before doing any work.

    Raises:
        FeatureFileError: the file exists but is not a readable HDF5 file (or is locked), or
            its layout is newer than this code.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    with open_for_reading(path) as handle:
        if "layout" not in handle.attrs:
            return [], 0
        info = _info_from_attrs(path, handle.attrs)
        mismatches = _mismatches(info, modality=modality, dim=dim, fps=fps, dtype=dtype)
        return mismatches, (len(_complete_in(handle)) if mismatches else 0)


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
        FeatureFileError: a bad ``dtype`` or ``chunk_rows``, or a file that cannot be opened
            for writing (locked, not HDF5, unwritable folder).
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
                info = _info_from_attrs(self.path, attrs)
            except FeatureFileError:
                self._file.close()
                raise
            mismatches = _mismatches(info, modality=modality, dim=dim, fps=fps, dtype=dtype)
            if mismatches:
                videos = len(_complete_in(self._file))
                self._file.close()
                if videos and not replace_mismatched:
                    raise FeatureFileMismatchError(self.path, mismatches, videos)
                if videos:
                    warnings.warn(
                        f"{self.path}: replacing it and its {_videos(videos)}: it holds "
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return h5py.File(self.path, mode)
        except OSError as error:
            if _is_lock_error(error):
                raise FeatureFileError(_lock_message(self.path, error)) from error
            raise FeatureFileError(f"cannot open {self.path} for writing: {error}") from error

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


# --------------------------------------------------------------------------- reader
# The reader never holds an open HDF5 handle across a fork: it opens its file lazily, on first
# use, in whichever process uses it (each DataLoader worker gets its own handle).


class MissingFeaturesError(KeyError):
    """A video or frame the sampling asks for is not in the feature file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


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
