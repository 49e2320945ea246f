"""Opening feature files and checking them against what a reader or writer expects: the
locked-file message, root attributes, complete videos, compatibility with an extraction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from epic_protocol.features.layout import (
    COMPLETE,
    FRAMES,
    LAYOUT_NAME,
    LAYOUT_VERSION,
    SPARSE,
    STORAGE_DTYPE,
    FeatureFileAccessError,
    FeatureFileError,
    FeatureFileInfo,
)


def is_lock_error(error: OSError) -> bool:
    # HDF5 >= 1.10 locks files (flock); h5py reports "unable to lock file, errno = 11". Match
    # the message, not the path, which may hold "lock" too.
    return "unable to lock file" in str(error).lower()


def lock_message(path: Path, error: OSError) -> str:
    return (
        f"{path}: locked by another process (an extraction or training still has it open "
        f"for writing?) ({error}); if nothing writes it, e.g. on a read-only or network "
        "filesystem that does not support locks, set HDF5_USE_FILE_LOCKING=FALSE"
    )


def open_for_reading(path: str | Path, **kwargs: Any) -> h5py.File:
    """``h5py.File(path, "r", **kwargs)`` with errors that name the file: a file that is not
    HDF5 is a :class:`FeatureFileError`; a file locked by another process is a
    :class:`FeatureFileAccessError` (the environment's) mentioning ``HDF5_USE_FILE_LOCKING``."""
    path = Path(path)
    try:
        return h5py.File(path, "r", **kwargs)
    except OSError as error:
        if is_lock_error(error):
            raise FeatureFileAccessError(lock_message(path, error)) from error
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({error})") from error


def open_for_writing(path: str | Path, mode: str = "a") -> h5py.File:
    """``h5py.File(path, mode)`` (creating the folder) with errors that name the file; a file
    locked by another process gets the message of :func:`open_for_reading`.

    Raises:
        FeatureFileAccessError: the file cannot be opened for writing (locked, not HDF5,
            unwritable folder).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return h5py.File(path, mode)
    except OSError as error:
        if is_lock_error(error):
            raise FeatureFileAccessError(lock_message(path, error)) from error
        raise FeatureFileAccessError(f"cannot open {path} for writing: {error}") from error


def read_file_info(path: str | Path) -> FeatureFileInfo:
    """Read the root attributes of a feature file (opening and closing it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"feature file not found: {path}; create it with rulstm-extract "
            "(docs/extraction.md) or convert the released features with rulstm-import features"
        )
    with open_for_reading(path) as handle:
        return info_from_attrs(path, handle.attrs)


def info_from_attrs(path: Path, attrs: Mapping[str, Any]) -> FeatureFileInfo:
    if attrs.get("layout") != LAYOUT_NAME:
        raise FeatureFileError(
            f"{path}: not a {LAYOUT_NAME} file (root attribute 'layout' is "
            f"{attrs.get('layout')!r}); see docs/hdf5_layout.md"
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


def attribute_mismatches(
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


def complete_in(handle: h5py.Group) -> set[str]:
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
        FeatureFileError: the file exists but is not a readable HDF5 file.
        FeatureFileAccessError: it is locked by another process.
    """
    path = Path(path)
    if not path.is_file():
        return set()
    with open_for_reading(path) as handle:
        return complete_in(handle)


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
        FeatureFileError: the file exists but is not a readable HDF5 file, or its layout is
            newer than this code.
        FeatureFileAccessError: it is locked by another process.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    with open_for_reading(path) as handle:
        if "layout" not in handle.attrs:
            return [], 0
        info = info_from_attrs(path, handle.attrs)
        mismatches = attribute_mismatches(info, modality=modality, dim=dim, fps=fps, dtype=dtype)
        return mismatches, (len(complete_in(handle)) if mismatches else 0)


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


def stored_videos(path: str | Path) -> dict[str, StoredVideo]:
    """The complete videos of a feature file with their stored frames, read-only; empty if it
    is absent.

    Raises:
        FeatureFileError: the file exists but is not a readable HDF5 file.
        FeatureFileAccessError: it is locked by another process.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    with open_for_reading(path) as handle:
        return {
            name: StoredVideo(handle[name][FRAMES][()], bool(handle[name].attrs.get(SPARSE, False)))
            for name in sorted(complete_in(handle))
        }


def provenance_of(path: str | Path) -> dict[str, Any]:
    """The ``provenance`` root attribute of a feature file (``{}`` if absent or not JSON).

    Raises:
        FeatureFileError: the file is not a readable HDF5 file.
        FeatureFileAccessError: it is locked by another process.
    """
    with open_for_reading(path) as handle:
        text = handle.attrs.get("provenance", "{}")
    try:
        provenance = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return provenance if isinstance(provenance, dict) else {}


def compatibility_problems(
    path: str | Path, *, dim: int, fps: float, config_hash: str | None = None
) -> list[str]:
    """Why an existing feature file cannot take more videos of ``dim``-d features at ``fps``
    (and, given ``config_hash``, extracted with the same settings: provenance
    ``config_hash``); empty when it can, or when the file does not exist.

    Each problem is a phrase about the file, e.g. ``"its features are 20-d, not 352-d"`` or
    ``"it is not a rulstm-features file"``.

    Raises:
        FeatureFileError: the file exists but is not a readable HDF5 file.
        FeatureFileAccessError: it is locked by another process.
    """
    path = Path(path)
    if not path.exists():
        return []
    with open_for_reading(path) as handle:
        attrs = dict(handle.attrs)
    if attrs.get("layout") != LAYOUT_NAME:
        return [f"it is not a {LAYOUT_NAME} file"]
    problems = []
    stored_dim = int(attrs.get("dim", -1))
    if stored_dim != dim:
        problems.append(f"its features are {stored_dim}-d, not {dim}-d")
    stored_fps = float(attrs.get("fps", -1))
    if abs(stored_fps - fps) > 1e-9:
        problems.append(f"it is at {stored_fps} fps, not {fps}")
    if config_hash is not None and provenance_of(path).get("config_hash") != config_hash:
        problems.append("it was extracted with different settings (provenance config_hash)")
    return problems
