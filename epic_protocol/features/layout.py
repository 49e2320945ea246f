"""The HDF5 feature layout: names, records and errors of the file format.

The layout is the only thing the extraction and training sides share.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from epic_protocol.errors import DataError, SetupError

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
#: Video attribute: only the frames a sampling protocol reads were stored (sparse extraction).
SPARSE = "sparse"
#: Video attribute: every row was checked finite when written (see FeatureStore.check_finite).
FINITE = "finite"


class FeatureFileError(DataError, ValueError):
    """A feature file that does not follow the layout, or does not match what was asked."""


class FeatureFileAccessError(SetupError, RuntimeError):
    """A feature file the environment keeps from being opened: locked by another process, or
    in a folder that cannot be written. An environment error, so not a
    :class:`FeatureFileError` (a data error): callers that turn a bad file into their own data
    error let it through; :data:`FEATURE_FILE_ERRORS` catches both."""


#: Every error a feature file raises, data (:class:`FeatureFileError`) or environment
#: (:class:`FeatureFileAccessError`, :class:`~epic_protocol.features.FeatureWriteError`).
FEATURE_FILE_ERRORS: tuple[type[Exception], ...] = (FeatureFileError, FeatureFileAccessError)


class FeatureFileMismatchError(FeatureFileError):
    """An existing feature file holds complete videos of other features (modality, dim, fps
    or storage dtype) than a writer was asked for.

    ``path``, ``mismatches`` (e.g. ``["dim is 20, not 352"]``) and ``videos`` (its number of
    complete videos) let a command line say what to do in its own terms.
    """

    def __init__(self, path: Path, mismatches: Sequence[str], videos: int) -> None:
        self.path, self.mismatches, self.videos = Path(path), list(mismatches), int(videos)
        super().__init__(
            f"{self.path} already holds {count_videos(self.videos)} of different features: "
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


def check_video_id(video: str) -> None:
    """Raise :class:`FeatureFileError` for a video id that cannot name an HDF5 group."""
    if not video or "/" in video or video.startswith("."):
        raise FeatureFileError(f"invalid video id {video!r}: it names an HDF5 group")


def count_videos(count: int) -> str:
    return f"{count} complete video{'' if count == 1 else 's'}"


class MissingFeaturesError(DataError, KeyError):
    """A video or frame the sampling asks for is not in the feature file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


BeyondEnd = Literal["error", "clamp"]
BEYOND_END_CHOICES: tuple[str, ...] = ("error", "clamp")
