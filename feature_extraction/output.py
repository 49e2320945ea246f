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

``obj.h5`` video groups may hold the raw detections (``keep_detections``), staged per video
next to the features and merged into the video's ``detections`` subgroup (layout:
:mod:`epic_protocol.features.detections`).

The file format, the compatibility check, the listing of stored videos and the merge itself
live in :mod:`epic_protocol.features`; this module owns only where staging files go and when
a merged file replaces the output file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from epic_protocol.backbones import backbone_of, combine_records
from epic_protocol.errors import DataError, SetupError
from epic_protocol.features import (
    DETECTIONS,
    FEATURE_FILE_ERRORS,
    FeatureFileError,
    FeatureWriteError,
    StorageDtype,
    StoredVideo,
    compatibility_problems,
    complete_videos,
    merge_feature_files,
    provenance_of,
    stored_videos,
)

WORK_DIR = ".rulstm-extract"


class OutputError(DataError, RuntimeError):
    """The output folder holds features that cannot be added to (incompatible or unreadable)."""


class UnwritableOutputError(SetupError, RuntimeError):
    """The output folder or a file in it cannot be written (permissions, a full disk, a file
    locked by another process): an environment error, so not an :class:`OutputError`."""


def check_writable(out: Path) -> None:
    """Create ``out`` and check that a file can be written in it, with a clear error."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UnwritableOutputError(
            f"cannot write to the output folder {out}: {error.strerror or error}"
        ) from error


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

    def complete(
        self, modality: str, *, config_hash: str, revision: str | None = None
    ) -> dict[str, StoredVideo]:
        """Videos complete in the staging area with this configuration (and weights
        ``revision``: see :func:`weights_problem`); unreadable, incomplete or differently
        configured staging files are deleted."""
        done = {}
        for path in self.staged_files(modality):
            video = path.stem
            try:
                stored = stored_videos(path).get(video)
                found = provenance_of(path)
                ok = (
                    stored is not None
                    and found.get("config_hash") == config_hash
                    and not weights_problem(found, revision)
                )
            except (*FEATURE_FILE_ERRORS, OSError, RuntimeError):  # h5py: "addr overflow"
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


def weights_problem(provenance: Mapping[str, Any], revision: str | None) -> str:
    """Why rows written under ``provenance`` cannot join rows computed with weights of
    ``revision`` (the backbone record's sha256 of the local weights, or the hub commit), or
    ''. The config hash holds the weights' path or hub name, not their content: a file
    replaced, or a hub model updated, between two runs gives other features under the same
    hash. Where either side records no revision (older files, random or named weights) there
    is nothing to compare."""
    record = backbone_of(provenance)
    found = record.get("revision") if record is not None else None
    if revision is None or found is None or found == revision:
        return ""
    return f"its weights differ (revision {found} in the file, {revision} now)"


def check_output_file(
    path: Path,
    *,
    dim: int,
    fps: float,
    config_hash: str,
    overwrite: bool,
    revision: str | None = None,
) -> dict[str, StoredVideo]:
    """The complete videos of an existing output file, after checking that it holds the same
    kind of features (and, given ``revision``, of the same weights: :func:`weights_problem`);
    with ``overwrite`` a mismatching file is replaced instead.

    Raises:
        OutputError: the file is not a readable feature file, or (without ``overwrite``)
            holds other features.
        FeatureFileAccessError: the file is locked by another process (the environment's).
    """
    try:
        problems = compatibility_problems(path, dim=dim, fps=fps, config_hash=config_hash)
        if not problems and path.exists():
            problem = weights_problem(provenance_of(path), revision)
            problems = [problem] if problem else []
    except FeatureFileError as error:
        raise OutputError(f"{error}; move it away") from error
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
    dtype: StorageDtype = "float32",
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
        except (OSError, RuntimeError, *FEATURE_FILE_ERRORS):
            continue
    if not staged:
        return []
    temporary = out / f"{modality}.h5.tmp"
    detections = {video: staging.detections_path(video) for video in staged}
    try:
        # The staging files and the old file's kept videos may come from earlier runs that
        # differed in settings outside the config hash (channels_last, ...): the record says so.
        sources = sorted(staged.values(), key=lambda path: path.stat().st_mtime)  # oldest first
        if not replace_old and complete_videos(target) - staged.keys():
            sources.insert(0, target)
        provenance = merged_provenance(provenance, [provenance_of(path) for path in sources])
        merge_feature_files(
            temporary,
            modality=modality,
            dim=dim,
            fps=fps,
            provenance=provenance,
            videos=staged,
            old=None if replace_old else target,
            detections=detections if modality == "obj" else None,
            dtype=dtype,
        )
        os.replace(temporary, target)
    except (OSError, *FEATURE_FILE_ERRORS) as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, FeatureWriteError):  # the old output file is untouched
            raise UnwritableOutputError(
                f"cannot write {target}: {error.path}: {error.strerror}"
            ) from None
        # An old output file that cannot be read is a data error; the rest the environment's.
        kind = UnwritableOutputError if isinstance(error, (OSError, SetupError)) else OutputError
        raise kind(f"cannot write {target}: {error}") from error
    for video in staged:
        staging.discard(modality, video)
    return sorted(staged)


def merged_provenance(current: Mapping[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """``current`` (this run's provenance) for a file that also holds rows written under the
    ``earlier`` provenances (same config hash): its ``backbone`` record combined with theirs
    (:func:`epic_protocol.backbones.combine_records`: a setting outside the hash that differed
    between the runs is recorded as ``mixed``, with every value)."""
    record = backbone_of(current)
    if record is None:
        return dict(current)
    return {**current, "backbone": combine_records(record, [backbone_of(p) for p in earlier])}


def clean_work_dir(out: Path) -> None:
    """Remove the staging folder once nothing is left in it."""
    root = out / WORK_DIR
    staging = root / "staging"
    if staging.is_dir() and not any(p.is_file() for p in staging.rglob("*")):
        shutil.rmtree(root, ignore_errors=True)
