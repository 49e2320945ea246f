"""Object features from the RU-LSTM authors' per-frame detection files.

The authors publish, for every EPIC-KITCHENS-100 video, ``<video>.npy``: a pickled numpy
object array with one entry per frame (entry ``i`` is frame ``i + 1`` at 30 fps), each a float
array of shape ``[N, 6]`` with one row per detection: ``class, x1, y1, x2, y2, score`` (class =
EK55 noun id, boxes in pixels of the original video). An empty frame may be stored as an
array of shape ``(0,)`` or ``(0, 6)``.

The Obj feature of a frame is, per class, the sum of the scores of its detections
(``num_classes`` values, 352 for the released models). It reproduces the authors'
extraction bit for bit: a float32 vector of zeros to which each detection's score is added
in the order the detections are listed, each addition rounded to float32 (their
``feat[int(c)] += score`` on a float32 array with float64 scores). Float32 sums depend on
the order, so the order is kept. No score threshold is applied unless asked.

The import is resumable like ``rulstm-import features``: videos already complete in the
output are skipped, an interrupted video is redone, and the stored row counts are checked
against the number of frame entries at the end. The arguments, the input files' names and the
first file to import are checked before the output is created or changed, so a wrong
``--num-classes`` leaves nothing behind. An output holding no complete video is recreated
when its attributes differ (e.g. another ``--num-classes``); one holding complete videos of
other features is refused unless ``overwrite`` replaces it (with a warning).
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from epic_protocol.errors import DataError
from epic_protocol.features import (
    FRAMES,
    FeatureFileError,
    FeatureFileMismatchError,
    FeatureFileWriter,
    check_video_id,
    complete_videos,
    describe_non_finite,
    feature_file_mismatches,
    first_non_finite_row,
)
from epic_protocol.pickles import RefusedPickleError, load_npy

#: Classes of the released Obj features (EK55 nouns).
RELEASED_OBJ_CLASSES = 352
#: Columns of a detection row.
DETECTION_COLUMNS = ("class", "x1", "y1", "x2", "y2", "score")
#: EPIC-KITCHENS video ids: ``P01_01`` (EK55), ``P01_101`` (EK100 extension).
EPIC_VIDEO_ID = re.compile(r"P\d{2}_\d{2,3}")
#: Written videos the summary line names (more are only counted).
NAMED_VIDEOS = 3


class DetectionImportError(DataError, ValueError):
    """A detection file that cannot be imported; the message names the file (and frame)."""


class VideoIdWarning(UserWarning):
    """A single detection file stored under its file name, which is not an EPIC-KITCHENS
    video id (pass ``--video``)."""


@dataclass
class DetectionImportSummary:
    """What :func:`import_detections` did."""

    output: Path
    num_classes: int
    frames: int = 0  # frame entries of the imported and skipped files
    rows: int = 0  # rows stored for those videos
    detections: int = 0  # detections summed (this run)
    videos_written: list[str] = field(default_factory=list)
    videos_skipped: list[str] = field(default_factory=list)
    #: What differed in an existing output that was recreated or replaced (else empty).
    replaced: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        written = self.videos_written
        names = f"{', '.join(written)}; " if 0 < len(written) <= NAMED_VIDEOS else ""
        text = (
            f"{self.output}: obj {self.num_classes}-d, {self.rows} rows for {self.frames} frame "
            f"entries; {len(written)} video{'' if len(written) == 1 else 's'} written "
            f"({names}{self.detections} detections), {len(self.videos_skipped)} already complete"
        )
        if self.replaced:
            text += f"; recreated the file, which held other features ({'; '.join(self.replaced)})"
        return text


def load_detection_file(path: str | Path) -> list[np.ndarray]:
    """The per-frame detections of one authors' ``.npy`` file, each ``(N, 6)`` float64.

    The file is a pickled object array, read with a numpy-only unpickler
    (:func:`epic_protocol.pickles.load_npy`): numpy arrays, scalars and dtypes are
    reconstructed, a file naming anything else is refused without calling it.

    Raises:
        FileNotFoundError: no such file.
        DetectionImportError: unreadable file, not a 1-D array of frames, or a frame whose
            detections are not ``[N, 6]`` finite numbers (names the file and the 1-based frame).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detection file not found: {path}")
    entries = _read_npy(path)
    if not isinstance(entries, np.ndarray) or entries.ndim != 1:
        shape = getattr(entries, "shape", type(entries).__name__)
        raise DetectionImportError(
            f"{path}: expected a 1-D array with one entry per frame, got {shape}"
        )
    frames = []
    for index, entry in enumerate(entries):
        try:
            rows = np.asarray(entry, dtype=np.float64)
        except (TypeError, ValueError):
            raise DetectionImportError(
                f"{path}: frame {index + 1}: detections are not numbers ({type(entry).__name__})"
            ) from None
        if rows.size == 0:
            rows = rows.reshape(0, len(DETECTION_COLUMNS))  # (0,) -> (0, 6): no detection
        if rows.ndim != 2 or rows.shape[1] != len(DETECTION_COLUMNS):
            raise DetectionImportError(
                f"{path}: frame {index + 1}: expected rows of [class, x1, y1, x2, y2, score] "
                f"(shape [N, 6]), got shape {list(rows.shape)}"
            )
        if not np.isfinite(rows[:, [0, 5]]).all():
            raise DetectionImportError(f"{path}: frame {index + 1}: non-finite class or score")
        frames.append(rows)
    return frames


def detection_features(
    frames: Sequence[np.ndarray],
    *,
    num_classes: int,
    threshold: float | None = None,
    source: str = "detections",
) -> np.ndarray:
    """Per-frame, per-class sums of detection scores: float32 ``(len(frames), num_classes)``.

    Each score is added to its class's float32 accumulator in the order the detections are
    listed, each addition rounded to float32: bit-identical to the sequential loop
    ``feat[int(c)] += score`` of the authors' extraction. ``threshold`` (``None``: none)
    drops detections scoring below it. ``source`` names the file in errors.

    Raises:
        DetectionImportError: a class id that is not an integer in ``[0, num_classes)``
            (names the source and the 1-based frame).
    """
    features = np.zeros((len(frames), num_classes), np.float32)  # (F, C)
    counts = np.array([len(rows) for rows in frames], np.int64)
    if counts.sum() == 0:
        return features
    rows = np.concatenate([np.asarray(r, np.float64).reshape(-1, 6) for r in frames])  # (D, 6)
    frame_of = np.repeat(np.arange(len(frames)), counts)  # (D,) 0-based frame of each row
    classes, scores = rows[:, 0], rows[:, 5]
    bad = (classes != np.round(classes)) | (classes < 0) | (classes >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DetectionImportError(
            f"{source}: frame {frame_of[first] + 1}: class {classes[first]:g} is not an "
            f"integer in [0, {num_classes}) (--num-classes {num_classes})"
        )
    if threshold is not None:
        keep = scores >= threshold
        frame_of, classes, scores = frame_of[keep], classes[keep], scores[keep]
    # One accumulator per (frame, class). Additions to one accumulator must happen in list
    # order; additions to different ones are independent. So: rank each detection among the
    # earlier ones of its accumulator, and do all rank-r additions at once (no accumulator
    # appears twice in one rank), rank after rank.
    flat = features.reshape(-1)  # (F * C,) view
    cell = frame_of * num_classes + classes.astype(np.int64)  # (D,)
    order = np.argsort(cell, kind="stable")  # list order kept inside each cell
    sorted_cells = cell[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_cells)) + 1]  # first row of each cell
    run_lengths = np.diff(np.r_[starts, len(sorted_cells)])
    rank = np.empty(len(cell), np.int64)
    rank[order] = np.arange(len(cell)) - np.repeat(starts, run_lengths)
    for r in range(int(rank.max(initial=-1)) + 1):
        chosen = rank == r
        targets = cell[chosen]
        # float32 + float64 score in float64, rounded to float32: as numpy's scalar `+=`.
        flat[targets] = (flat[targets].astype(np.float64) + scores[chosen]).astype(np.float32)
    return features


def _detection_files(npy: Path, video: str | None) -> list[tuple[str, Path]]:
    """``(video id, file)`` pairs to import, their ids checked (see :func:`import_detections`)."""
    if npy.is_dir():
        if video is not None:
            raise ValueError(f"--video names a single file's video; {npy} is a folder")
        files = sorted(npy.rglob("*.npy"))
        if not files:
            raise DetectionImportError(f"{npy}: no .npy detection file in this folder")
        seen: dict[str, Path] = {}
        for path in files:
            if path.stem in seen:
                raise DetectionImportError(
                    f"{path} and {seen[path.stem]} are both detections of video {path.stem!r}"
                )
            seen[path.stem] = path
        pairs = [(path.stem, path) for path in files]
    elif not npy.is_file():
        raise FileNotFoundError(f"detection file or folder not found: {npy}")
    else:
        if video is None and not EPIC_VIDEO_ID.fullmatch(npy.stem):
            warnings.warn(
                f"{npy}: storing its detections as video {npy.stem!r} (the file name), which "
                "does not look like an EPIC-KITCHENS video id (P01_01, P01_101); pass "
                "--video ID to store them under the video's id",
                VideoIdWarning,
                stacklevel=3,
            )
        pairs = [(video or npy.stem, npy)]
    for video_id, path in pairs:
        try:
            check_video_id(video_id)
        except FeatureFileError as error:
            raise DetectionImportError(f"{path}: {error}") from None
    return pairs


def _convert(path: Path, num_classes: int, threshold: float | None) -> tuple[np.ndarray, int]:
    """Features ``(frame entries, num_classes)`` of one detection file, and its detections."""
    frames = load_detection_file(path)
    features = detection_features(
        frames, num_classes=num_classes, threshold=threshold, source=str(path)
    )
    bad = first_non_finite_row(features)  # scores summing past float32's range
    if bad is not None:
        raise DetectionImportError(
            f"{path}: frame {bad + 1}: the Obj feature vector is not finite "
            f"({describe_non_finite(features[bad])}); its detection scores are too large"
        )
    return features, sum(len(rows) for rows in frames)


def _refusal(output: Path, mismatches: Sequence[str], videos: int) -> DetectionImportError:
    return DetectionImportError(
        f"{output} already holds {videos} complete video{'' if videos == 1 else 's'} of "
        f"different features: {'; '.join(mismatches)}. Delete the file, choose another --out "
        "path, or pass --overwrite to replace it"
    )


def import_detections(
    npy: str | Path,
    output: str | Path,
    *,
    num_classes: int = RELEASED_OBJ_CLASSES,
    video: str | None = None,
    threshold: float | None = None,
    fps: float = 30.0,
    overwrite: bool = False,
    progress: bool = True,
) -> DetectionImportSummary:
    """Write the Obj features of the authors' detection files into an HDF5 feature file.

    Before the output is created or changed, the arguments, the video ids, the output's
    attributes and the first file to import are checked, so that such errors leave no file
    behind. A single file whose name is not an EPIC-KITCHENS video id (and no ``video``)
    gives a :class:`VideoIdWarning`.

    Args:
        npy: one ``<video>.npy`` file, or a folder searched recursively for them.
        output: the ``obj.h5`` to create or complete (``epic_protocol`` layout, modality
            ``obj``, ``dim = num_classes``). If it exists with other attributes (dim, fps,
            ...) but holds no complete video, it is recreated.
        num_classes: feature size (352: the EK55 nouns of the released models).
        video: the video id of a single file (default: its file name without ``.npy``).
        threshold: drop detections scoring below it (default: none, as the authors).
        fps: rate of the frame numbering (30 for the authors' files).
        overwrite: redo videos already complete in ``output``, and replace an ``output``
            whose complete videos are other features (a
            :class:`~epic_protocol.features.FeaturesReplacedWarning` says what differed).

    Raises:
        DetectionImportError: a malformed file (names file and frame), a video id that
            cannot be stored, an output that is a folder, holds complete videos of other
            features (without ``overwrite``), or does not hold what was written.
        FileNotFoundError: ``npy`` does not exist.
        ValueError: ``num_classes`` below 1, ``fps`` not positive, ``threshold`` not finite,
            or ``video`` with a folder.
    """
    npy, output = Path(npy), Path(output)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if output.is_dir():
        raise DetectionImportError(
            f"{output} is a folder; --out names the .h5 file to write (e.g. {output / 'obj.h5'})"
        )
    files = _detection_files(npy, video)
    try:
        mismatches, videos = feature_file_mismatches(
            output, modality="obj", dim=num_classes, fps=fps
        )
        completed = set() if mismatches else complete_videos(output)
    except FeatureFileError as error:
        raise DetectionImportError(str(error)) from None
    if mismatches and videos and not overwrite:
        raise _refusal(output, mismatches, videos)
    # Convert the first file to write now: its errors (a wrong --num-classes) leave no output.
    converted: dict[str, tuple[np.ndarray, int]] = {}
    first = next(((v, p) for v, p in files if overwrite or v not in completed), None)
    if first is not None:
        converted[first[0]] = _convert(first[1], num_classes, threshold)
    summary = DetectionImportSummary(output=output, num_classes=num_classes)
    provenance = {
        "source": "rulstm-detections",
        "detections": str(npy.resolve()),
        "threshold": threshold,
    }
    expected: dict[str, int] = {}
    try:
        with (
            FeatureFileWriter(
                output,
                modality="obj",
                dim=num_classes,
                fps=fps,
                provenance=provenance,
                replace_mismatched=overwrite,
            ) as writer,
            tqdm(files, desc="detections -> obj.h5", unit="video", disable=not progress) as bar,
        ):
            summary.replaced = list(writer.replaced)
            for video_id, path in bar:
                bar.set_postfix_str(video_id, refresh=False)
                if writer.is_complete(video_id) and not overwrite:
                    expected[video_id] = _entries(path)
                    summary.videos_skipped.append(video_id)
                    continue
                features, detections = converted.pop(video_id, None) or _convert(
                    path, num_classes, threshold
                )
                writer.write_video(
                    video_id,
                    np.arange(1, len(features) + 1),
                    features,
                    overwrite=True,
                    attrs={"source_file": path.name},
                )
                expected[video_id] = len(features)
                summary.detections += detections
                summary.videos_written.append(video_id)
    except FeatureFileMismatchError as error:  # written by another process meanwhile
        raise _refusal(output, error.mismatches, error.videos) from None
    except FeatureFileError as error:
        raise DetectionImportError(str(error)) from None
    summary.frames = sum(expected.values())
    with h5py.File(output, "r") as handle:
        for video_id, entries in expected.items():
            rows = int(handle[video_id][FRAMES].shape[0])
            if rows != entries:
                raise DetectionImportError(
                    f"{output}: video {video_id!r} holds {rows} rows but its detection file "
                    f"has {entries} frames; delete the video (or pass --overwrite) and import "
                    "again"
                )
            summary.rows += rows
    return summary


def _entries(path: Path) -> int:
    """Frame entries of a detection file (for the row check of a skipped video)."""
    try:
        return len(_read_npy(path))
    except TypeError as error:  # a 0-d array
        raise DetectionImportError(f"{path}: not a readable .npy file ({error})") from None


def _read_npy(path: Path) -> np.ndarray:
    """A detection file's array, through the numpy-only unpickler; errors name the file."""
    try:
        return load_npy(path, encoding="bytes")
    except RefusedPickleError as error:
        raise DetectionImportError(
            f"{path}: refused: {error}; detection files are object arrays of float arrays"
        ) from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise DetectionImportError(f"{path}: not a readable .npy file ({error})") from None
