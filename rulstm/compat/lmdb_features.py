"""Convert the RU-LSTM authors' LMDB feature databases into the HDF5 feature layout.

The released features are one LMDB per modality whose keys are
``{video}_frame_{frame:010d}.jpg`` (frames 1-based at 30 fps) and whose values are raw
float32 vectors (RGB 1024, Flow 1024, Obj 352).

The conversion streams: it walks the keys in the database's (sorted) order, one video at a
time, holding only that video's keys in memory, and writes each video with
:class:`epic_protocol.FeatureFileWriter`. Keys of a video are contiguous in sorted order
because they share the ``{video}_frame_`` prefix; frames inside a video are sorted
numerically (zero padding makes that the key order, but unpadded keys are handled too).
Each video's last key frame is recorded as its length (``num_frames``: the released
databases hold every frame), so training refuses frames past it.
A video already complete in the output is skipped, so an interrupted conversion resumes
where it stopped (the interrupted video is redone). At the end the number of rows in the
file is checked against the number of entries in the database.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from epic_protocol.errors import DataError
from epic_protocol.features import (
    FRAMES,
    FeatureFileError,
    FeatureFileMismatchError,
    FeatureFileWriter,
    describe_non_finite,
)

#: Feature size of each released modality.
RELEASED_DIMS = {"rgb": 1024, "flow": 1024, "obj": 352}
#: Keys of the released databases: ``P01_01_frame_0000000001.jpg``.
DEFAULT_KEY_PATTERN = r"(?P<video>.+)_frame_(?P<frame>\d+)\.\w+"
LMDB_INSTALL_HINT = (
    "reading LMDB features needs the optional 'lmdb' package: "
    'pip install "rulstm-lightning[lmdb]"  (or: pip install lmdb)'
)


class LMDBConversionError(DataError, ValueError):
    """A database entry that cannot be converted; the message names the key."""


class ReleasedSizeWarning(UserWarning):
    """A rgb/flow/obj database whose vectors are not the released size (1024/1024/352)."""


def import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError as error:
        raise ImportError(LMDB_INSTALL_HINT) from error
    return lmdb


@dataclass
class ConversionSummary:
    """What :func:`convert_lmdb` did."""

    output: Path
    modality: str
    dim: int
    entries: int
    rows: int
    videos_written: list[str] = field(default_factory=list)
    videos_skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.output}: {self.modality} {self.dim}-d, {self.rows} rows from "
            f"{self.entries} LMDB entries; {len(self.videos_written)} videos written, "
            f"{len(self.videos_skipped)} already complete"
        )


def _open_environment(path: Path) -> Any:
    lmdb = import_lmdb()
    if not path.exists():
        raise FileNotFoundError(f"LMDB database not found: {path}")
    try:
        return lmdb.open(
            str(path), readonly=True, lock=False, readahead=False, subdir=path.is_dir()
        )
    except lmdb.Error as error:
        raise LMDBConversionError(f"{path}: cannot open as an LMDB database ({error})") from error


def _parse_key(raw: bytes, pattern: re.Pattern[str]) -> tuple[str, int]:
    key = raw.decode("utf-8", errors="replace")
    match = pattern.fullmatch(key)
    if match is None:
        raise LMDBConversionError(
            f"LMDB key {key!r} does not match the expected pattern {pattern.pattern!r} "
            "(e.g. P01_01_frame_0000000001.jpg); pass --key-pattern for other layouts"
        )
    frame = int(match.group("frame"))
    if frame < 1:
        raise LMDBConversionError(f"LMDB key {key!r}: frame numbers are 1-based, got {frame}")
    return match.group("video"), frame


def _video_runs(
    cursor: Any, pattern: re.Pattern[str], progress: tqdm
) -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    """(video, [(frame, key), ...]) for each contiguous run of one video's keys."""
    current: str | None = None
    keys: list[tuple[int, bytes]] = []
    finished: set[str] = set()
    for raw in cursor.iternext(keys=True, values=False):
        raw = bytes(raw)
        video, frame = _parse_key(raw, pattern)
        progress.update(1)
        if video != current:
            if current is not None:
                yield current, keys
                finished.add(current)
            if video in finished:
                raise LMDBConversionError(
                    f"LMDB key {raw.decode(errors='replace')!r}: the keys of video {video!r} "
                    "are not contiguous; with a custom --key-pattern the video id must be a "
                    "prefix of the key"
                )
            current, keys = video, []
        keys.append((frame, raw))
    if current is not None:
        yield current, keys


def _vector(raw_key: bytes, value: bytes | None, dim: int) -> np.ndarray:
    name = raw_key.decode(errors="replace")
    if value is None:
        raise LMDBConversionError(f"LMDB key {name!r} vanished during the conversion")
    if len(value) != 4 * dim:
        raise LMDBConversionError(
            f"LMDB key {name!r}: value has {len(value)} bytes, expected {4 * dim} "
            f"({dim} float32 values); wrong --dim or --modality?"
        )
    vector = np.frombuffer(value, dtype=np.float32)
    if not np.isfinite(vector).all():
        raise LMDBConversionError(
            f"LMDB key {name!r}: the feature vector is not finite "
            f"({describe_non_finite(vector)}); nothing of its video is stored"
        )
    return vector


def _infer_dim(txn: Any, path: Path) -> int:
    cursor = txn.cursor()
    if not cursor.first():
        raise LMDBConversionError(f"{path}: the LMDB database is empty")
    value = cursor.value()
    if len(value) == 0 or len(value) % 4:
        raise LMDBConversionError(
            f"LMDB key {bytes(cursor.key()).decode(errors='replace')!r}: value of "
            f"{len(value)} bytes is not a float32 vector"
        )
    return len(value) // 4


def convert_lmdb(
    lmdb_path: str | Path,
    output: str | Path,
    *,
    modality: str,
    fps: float = 30.0,
    dim: int | None = None,
    key_pattern: str = DEFAULT_KEY_PATTERN,
    chunk_rows: int = 4096,
    progress: bool = True,
    dtype: str = "float32",
) -> ConversionSummary:
    """Convert one modality's LMDB into an HDF5 feature file (resumable; see module doc).

    Args:
        lmdb_path: the LMDB folder (holding ``data.mdb``) or file.
        output: the ``.h5`` file to create or complete; one holding no complete video is
            recreated if its attributes (dim, dtype, ...) differ.
        modality: ``rgb``, ``flow``, ``obj`` (or any name).
        fps: frame rate of the frame numbers in the keys (30 for the released features).
        dim: feature size, any modality; default inferred from the first value. A size
            other than the released one for rgb/flow/obj gives a :class:`ReleasedSizeWarning`.
        key_pattern: regular expression with named groups ``video`` and ``frame``.
        chunk_rows: rows read and written at a time.
        progress: show a progress bar.
        dtype: storage dtype of the HDF5 features, ``float32`` (as released) or ``float16``
            (half the disk size, read back as float32; values must fit float16's range).

    Raises:
        LMDBConversionError: an unusable key or value (named), or an output that holds
            complete videos of different features (modality, dim, fps or dtype) or, at the
            end, other rows than the database.
        FileNotFoundError: no such database.
        ImportError: the optional ``lmdb`` package is missing.
    """
    lmdb_path, output = Path(lmdb_path), Path(output)
    pattern = re.compile(key_pattern)
    if not {"video", "frame"} <= set(pattern.groupindex):
        raise ValueError(f"key_pattern needs named groups 'video' and 'frame': {key_pattern!r}")
    env = _open_environment(lmdb_path)
    try:
        with env.begin(buffers=False) as txn:
            inferred = _infer_dim(txn, lmdb_path)
            dim = dim or inferred
            if inferred != dim:
                raise LMDBConversionError(
                    f"{lmdb_path}: values hold {inferred} float32, but dim={dim} was asked"
                )
            expected = RELEASED_DIMS.get(modality)
            if expected is not None and dim != expected:
                # Other backbones give other sizes: only a hint that --modality may be wrong.
                warnings.warn(
                    f"{lmdb_path}: {modality} features are {expected}-d in the released data, "
                    f"but this database holds {dim}-d vectors; converting them as {dim}-d "
                    "(check --modality if that is unexpected)",
                    ReleasedSizeWarning,
                    stacklevel=2,
                )
            entries = int(txn.stat()["entries"])
            summary = ConversionSummary(
                output=output, modality=modality, dim=dim, entries=entries, rows=0
            )
            provenance = {"source": "rulstm-lmdb", "lmdb": str(lmdb_path.resolve())}
            try:
                writer = FeatureFileWriter(
                    output, modality=modality, dim=dim, fps=fps, provenance=provenance, dtype=dtype
                )
            except FeatureFileMismatchError as error:
                videos = f"{error.videos} complete video{'' if error.videos == 1 else 's'}"
                raise LMDBConversionError(
                    f"{output} already holds {videos} of different features: "
                    f"{'; '.join(error.mismatches)}. Delete the file or choose another --out path"
                ) from None
            with (
                writer,
                tqdm(
                    total=entries, desc=f"{modality} LMDB -> HDF5", unit="key", disable=not progress
                ) as bar,
            ):
                for video, keys in _video_runs(txn.cursor(), pattern, bar):
                    _write_video(txn, writer, video, keys, dim, chunk_rows, summary)
    finally:
        env.close()
    summary.rows = _count_rows(output, summary.videos_written + summary.videos_skipped)
    if summary.rows != summary.entries:
        raise LMDBConversionError(
            f"{output}: {summary.rows} rows written for {summary.entries} LMDB entries; "
            "the output holds different data (delete it and convert again)"
        )
    return summary


def _write_video(
    txn: Any,
    writer: FeatureFileWriter,
    video: str,
    keys: list[tuple[int, bytes]],
    dim: int,
    chunk_rows: int,
    summary: ConversionSummary,
) -> None:
    if writer.is_complete(video):
        summary.videos_skipped.append(video)
        return
    keys.sort(key=lambda item: item[0])  # numeric frame order (a no-op for padded keys)
    frames = np.fromiter((frame for frame, _ in keys), dtype=np.int64, count=len(keys))
    repeated = np.flatnonzero(np.diff(frames) == 0)
    if repeated.size:
        first, second = keys[repeated[0]][1], keys[repeated[0] + 1][1]
        raise LMDBConversionError(
            f"LMDB keys {first.decode(errors='replace')!r} and "
            f"{second.decode(errors='replace')!r} are the same frame of video {video!r}"
        )
    try:
        writer.start_video(video)
        for start in range(0, len(keys), chunk_rows):
            chunk = keys[start : start + chunk_rows]
            block = np.stack([_vector(key, txn.get(key), dim) for _, key in chunk])
            writer.append(video, frames[start : start + len(chunk)], block)
        # The released databases hold every frame: the last key is the video's last frame.
        writer.finish_video(video, num_frames=int(frames[-1]))
    except FeatureFileError as error:
        raise LMDBConversionError(f"video {video!r}: {error}") from error
    summary.videos_written.append(video)


def _count_rows(output: Path, videos: list[str]) -> int:
    """Rows stored in ``output`` for the given videos (written now or by an earlier run)."""
    with h5py.File(output, "r") as handle:
        return sum(int(handle[video][FRAMES].shape[0]) for video in videos)
