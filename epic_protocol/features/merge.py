"""Merging feature files: one new file from the complete videos of several others.

Used to fold per-video files (an extraction's staging files) into one modality file: the
caller writes the result to a temporary path and renames it over the old file, so a reader
never sees a half-merged file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from epic_protocol.features.checks import complete_in, open_for_reading, open_for_writing
from epic_protocol.features.detections import copy_detections
from epic_protocol.features.failures import reporting_write_failures
from epic_protocol.features.layout import StorageDtype
from epic_protocol.features.writer import FeatureFileWriter


def merge_feature_files(
    destination: Path,
    *,
    modality: str,
    dim: int,
    fps: float,
    provenance: Mapping[str, Any],
    videos: Mapping[str, Path],
    old: Path | None = None,
    detections: Mapping[str, Path] | None = None,
    dtype: StorageDtype = "float32",
) -> None:
    """Write a new feature file ``destination`` (replacing it) holding, for each entry
    ``video -> path`` of ``videos``, the group ``video`` of the feature file ``path`` (which
    must be complete there), plus the complete videos of ``old`` (a feature file, if given)
    that ``videos`` does not replace. ``detections`` maps videos to :class:`DetectionsWriter`
    files whose complete detections become the video's ``detections`` subgroup.

    The root attributes are those of a new :class:`FeatureFileWriter` with these arguments.
    On an error ``destination`` is left as it is (to be deleted by the caller); a write the OS
    refuses abandons it (see :func:`abandon_hdf5`).

    Raises:
        FeatureWriteError: the operating system refused a write (disk full, file-size limit).
        FeatureFileError: a file that cannot be opened.
    """
    destination = Path(destination)
    destination.unlink(missing_ok=True)
    # The writer creates the file with the layout's root attributes.
    FeatureFileWriter(
        destination, modality=modality, dim=dim, fps=fps, provenance=provenance, dtype=dtype
    ).close()
    merged = open_for_writing(destination, "a")
    with reporting_write_failures(destination, merged):
        if old is not None and Path(old).exists():
            with open_for_reading(old) as source:
                for video in sorted(complete_in(source) - set(videos)):
                    source.copy(source[video], merged, name=video)
        for video, path in videos.items():
            with open_for_reading(path) as source:
                source.copy(source[video], merged, name=video)
            found = (detections or {}).get(video)
            if found is not None:
                copy_detections(found, merged[video])
        merged.flush()
        merged.close()
