"""Writing features crash-safely: per-video staging files, merged into ``OUT/<modality>.h5``.

An HDF5 file that is open for writing when its process is killed can be left unreadable as a
whole. So the output files are never written in place:

1. each video is written, as it is extracted, to its own staging file
   ``OUT/.rulstm-extract/staging/<modality>/<video>.h5`` with
   :class:`epic_protocol.FeatureFileWriter` (marked complete only after its last row). A
   kill can only damage the staging file of a video in progress, which the next run deletes
   and redoes;
2. at the end of a run (after every rank finished, in distributed runs), rank 0 builds a new
   ``OUT/<modality>.h5.tmp`` from the complete videos of the old output file and of the
   staging files, and atomically renames it over ``OUT/<modality>.h5``; then it deletes the
   merged staging files. A kill during the merge leaves the old file and the staging files,
   and the next run merges again.

So at any time ``OUT/<modality>.h5`` is a complete, readable file (or absent), and a rerun
skips every video that is complete in it or in the staging area and holds the frames the run
needs (video attribute ``sparse``: only the frames a sampling protocol reads were stored; a
dense run redoes such videos, and a sparse run for other segments adds the missing frames).

``obj.h5`` video groups may hold the raw detections (``keep_detections``) as extra datasets
in a ``detections`` subgroup: ``frame`` int64 (M,) the 1-based frame of each detection,
``boxes`` float32 (M, 4) ``x1, y1, x2, y2`` in pixels of the decoded frame, ``labels`` int64
(M,) 0-based class indices into the root provenance's ``class_names``, and ``scores`` float32
(M,). Rows are sorted by frame; a frame's detections are ``np.searchsorted`` away.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from epic_protocol.features import (
    COMPLETE,
    FRAMES,
    SPARSE,
    FeatureFileError,
    FeatureFileWriter,
    FeatureWriteError,
    complete_videos,
    reporting_write_failures,
)

WORK_DIR = ".rulstm-extract"
DETECTIONS = "detections"
DETECTION_FIELDS = {
    "frame": (np.int64, ()),
    "boxes": (np.float32, (4,)),
    "labels": (np.int64, ()),
    "scores": (np.float32, ()),
}


class OutputError(RuntimeError):
    """The output folder cannot be used (unwritable, or holds incompatible features)."""


def check_writable(out: Path) -> None:
    """Create ``out`` and check that a file can be written in it, with a clear error."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(
            f"cannot write to the output folder {out}: {error.strerror or error}"
        ) from error


@dataclass(frozen=True)
class StoredVideo:
    """A complete video of a feature file: its stored frame numbers, and whether it was a
    sparse extraction (a dense one stores every frame)."""

    frames: np.ndarray
    sparse: bool

    def covers(self, wanted: np.ndarray | None) -> bool:
        """Whether a run asking for ``wanted`` frames (``None``: all) can reuse this video.
        A dense video covers any frame (frames past its end are served by its last frame)."""
        if wanted is None:
            return not self.sparse
        if not self.sparse:
            return True
        return bool(np.isin(wanted, self.frames).all())


def stored_videos(path: Path) -> dict[str, StoredVideo]:
    """The complete videos of a feature file, read-only; empty if it is absent."""
    if not path.is_file():
        return {}
    with h5py.File(path, "r") as handle:
        return {
            name: StoredVideo(group[FRAMES][()], bool(group.attrs.get(SPARSE, False)))
            for name, group in handle.items()
            if bool(group.attrs.get(COMPLETE, False))
        }


def _config_hash(path: Path) -> str | None:
    with h5py.File(path, "r") as handle:
        provenance = handle.attrs.get("provenance", "{}")
    try:
        return json.loads(provenance).get("config_hash")
    except (TypeError, ValueError):
        return None


class StagingArea:
    """Per-video staging files of one output folder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.root = self.out / WORK_DIR / "staging"

    def path(self, modality: str, video: str) -> Path:
        return self.root / modality / f"{video}.h5"

    def detections_path(self, video: str) -> Path:
        return self.root / "obj" / f"{video}.{DETECTIONS}.h5"

    def staged_files(self, modality: str) -> list[Path]:
        folder = self.root / modality
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.h5") if not p.name.endswith(f".{DETECTIONS}.h5"))

    def complete(self, modality: str, *, config_hash: str) -> dict[str, StoredVideo]:
        """Videos complete in the staging area with this configuration; unreadable,
        incomplete or differently configured staging files are deleted."""
        done = {}
        for path in self.staged_files(modality):
            video = path.stem
            try:
                stored = stored_videos(path).get(video)
                ok = stored is not None and _config_hash(path) == config_hash
            except (OSError, RuntimeError):  # h5py: "addr overflow" in a file cut short
                stored, ok = None, False  # killed while writing it, or the disk was full
            if ok and stored is not None:
                done[video] = stored
            else:
                self.discard(modality, video)
        return done

    def discard(self, modality: str, video: str) -> None:
        self.path(modality, video).unlink(missing_ok=True)
        if modality == "obj":
            self.detections_path(video).unlink(missing_ok=True)


class DetectionsWriter:
    """Appends one video's raw detections to a staging file (see the module docstring).

    A write the OS refuses raises :class:`epic_protocol.features.FeatureWriteError` naming
    the file and abandons it (as :class:`FeatureFileWriter` does); :meth:`close` then returns
    quietly."""

    def __init__(self, path: Path, *, class_names: Iterable[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.path = path
        self._failed = False
        self._file = h5py.File(path, "w")
        self._datasets: dict[str, h5py.Dataset] = {}
        with self._writing():
            self._file.attrs[COMPLETE] = False
            self._file.attrs["class_names"] = json.dumps(list(class_names))
            for name, (dtype, shape) in DETECTION_FIELDS.items():
                self._datasets[name] = self._file.create_dataset(
                    name,
                    shape=(0, *shape),
                    maxshape=(None, *shape),
                    dtype=dtype,
                    chunks=(1024, *shape),
                )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        if self._failed:
            raise OutputError(f"{self.path}: an earlier write failed")
        try:
            with reporting_write_failures(self.path, self._file, self._datasets):
                yield
        except FeatureWriteError:
            self._failed = True
            raise

    def append(self, frame: int, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        count = len(scores)
        if count == 0:
            return
        values = {
            "frame": np.full(count, frame, np.int64),
            "boxes": np.asarray(boxes, np.float32).reshape(count, 4),
            "labels": np.asarray(labels, np.int64),
            "scores": np.asarray(scores, np.float32),
        }
        with self._writing():
            for name, value in values.items():
                dataset = self._datasets[name]
                start = dataset.shape[0]
                dataset.resize(start + count, axis=0)
                dataset[start:] = value

    def finish(self) -> None:
        with self._writing():
            self._file.attrs[COMPLETE] = True
        self.close()

    def close(self) -> None:
        if self._failed or not self._file.id.valid:
            return
        with self._writing():
            self._file.flush()  # a dataset closed by its destructor would hide a failed write
            self._datasets.clear()
            self._file.close()


def check_output_file(
    path: Path, *, dim: int, fps: float, config_hash: str, overwrite: bool
) -> dict[str, StoredVideo]:
    """The complete videos of an existing output file, after checking that it holds the same
    kind of features; with ``overwrite`` a mismatching file is replaced instead."""
    if not path.exists():
        return {}
    try:
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
    except OSError as error:
        raise OutputError(
            f"{path} exists but is not a readable HDF5 file ({error}); move it away"
        ) from error
    try:
        provenance = json.loads(attrs.get("provenance", "{}"))
    except ValueError:
        provenance = {}
    problems = []
    if attrs.get("layout") != "rulstm-features":
        problems.append("it is not a rulstm-features file")
    else:
        if int(attrs.get("dim", -1)) != dim:
            problems.append(f"its features are {int(attrs.get('dim', -1))}-d, not {dim}-d")
        if abs(float(attrs.get("fps", -1)) - fps) > 1e-9:
            problems.append(f"it is at {float(attrs.get('fps', -1))} fps, not {fps}")
        if provenance.get("config_hash") != config_hash:
            problems.append("it was extracted with different settings (provenance config_hash)")
    if problems and not overwrite:
        raise OutputError(
            f"{path} holds different features: {'; '.join(problems)}. Use another --out, or "
            "--overwrite to re-extract every video"
        )
    return {} if problems else stored_videos(path)


def merge_staging(
    out: Path,
    modality: str,
    *,
    dim: int,
    fps: float,
    provenance: Mapping[str, Any],
    replace_old: bool = False,
    dtype: str = "float32",
) -> list[str]:
    """Merge complete staging files into ``OUT/<modality>.h5`` atomically (see the module
    docstring). ``replace_old`` drops the old file's videos (an --overwrite with changed
    settings). Returns the merged video ids."""
    staging = StagingArea(out)
    target = out / f"{modality}.h5"
    staged = {}
    for path in staging.staged_files(modality):
        video = path.stem
        try:
            if video in complete_videos(path):
                staged[video] = path
        except (OSError, RuntimeError, FeatureFileError):
            continue
    if not staged:
        return []
    temporary = out / f"{modality}.h5.tmp"
    temporary.unlink(missing_ok=True)
    try:
        # The writer creates the file with the layout's root attributes.
        FeatureFileWriter(
            temporary, modality=modality, dim=dim, fps=fps, provenance=provenance, dtype=dtype
        ).close()
        destination = h5py.File(temporary, "a")
        # A write the OS refuses (disk full) abandons the temporary file: closing it would
        # fail again and crash the process at exit (see epic_protocol.abandon_hdf5).
        with reporting_write_failures(temporary, destination):
            if target.exists() and not replace_old:
                with h5py.File(target, "r") as old:
                    for video in old:
                        if video not in staged and bool(old[video].attrs.get(COMPLETE, False)):
                            old.copy(old[video], destination, name=video)
            for video, path in staged.items():
                with h5py.File(path, "r") as source:
                    source.copy(source[video], destination, name=video)
                detections = staging.detections_path(video)
                if modality == "obj" and detections.is_file():
                    with h5py.File(detections, "r") as source:
                        if bool(source.attrs.get(COMPLETE, False)):
                            group = destination[video].create_group(DETECTIONS)
                            for name in DETECTION_FIELDS:
                                source.copy(source[name], group, name=name)
            destination.flush()
            destination.close()
        os.replace(temporary, target)
    except (OSError, FeatureFileError) as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, FeatureWriteError):  # the old output file is untouched
            raise OutputError(f"cannot write {target}: {error.path}: {error.strerror}") from None
        raise OutputError(f"cannot write {target}: {error}") from error
    for video in staged:
        staging.discard(modality, video)
    return sorted(staged)


def clean_work_dir(out: Path) -> None:
    """Remove the staging folder once nothing is left in it."""
    root = out / WORK_DIR
    staging = root / "staging"
    if staging.is_dir() and not any(p.is_file() for p in staging.rglob("*")):
        shutil.rmtree(root, ignore_errors=True)
