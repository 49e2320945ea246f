"""The HDF5 feature layout: the only thing the extraction and training sides share.

The whole file contract lives in this package, one module per role:

- :mod:`~epic_protocol.features.layout`: names of attributes and datasets, the records and
  errors of the format (the layout itself is described there);
- :mod:`~epic_protocol.features.checks`: opening files (the locked-file message), reading and
  comparing root attributes, listing complete videos, compatibility with an extraction;
- :mod:`~epic_protocol.features.writer`: :class:`FeatureFileWriter`;
- :mod:`~epic_protocol.features.store`: :class:`FeatureStore`, the reader and its lookup rule;
- :mod:`~epic_protocol.features.detections`: the ``detections`` subgroup of ``obj.h5``;
- :mod:`~epic_protocol.features.merge`: one file from the complete videos of several;
- :mod:`~epic_protocol.features.failures`: writes the operating system refuses (disk full).

Every public name is importable from ``epic_protocol.features``.
"""

from epic_protocol.features.checks import (
    StoredVideo,
    attribute_mismatches,
    compatibility_problems,
    complete_in,
    complete_videos,
    feature_file_mismatches,
    info_from_attrs,
    is_lock_error,
    lock_message,
    open_for_reading,
    open_for_writing,
    provenance_of,
    read_file_info,
    stored_videos,
)
from epic_protocol.features.detections import (
    DETECTION_FIELDS,
    DETECTIONS,
    DetectionsWriter,
    copy_detections,
)
from epic_protocol.features.failures import (
    FeatureWriteError,
    abandon_hdf5,
    reporting_write_failures,
    write_failure,
)
from epic_protocol.features.layout import (
    BEYOND_END_CHOICES,
    COMPLETE,
    FEATURE_FILE_ERRORS,
    FEATURES,
    FINITE,
    FRAMES,
    LAYOUT_NAME,
    LAYOUT_VERSION,
    NUM_FRAMES,
    SPARSE,
    STORAGE_DTYPE,
    STORAGE_DTYPES,
    BeyondEnd,
    BeyondEndWarning,
    FeatureFileAccessError,
    FeatureFileError,
    FeatureFileInfo,
    FeatureFileMismatchError,
    FeaturesReplacedWarning,
    MissingFeaturesError,
    NonFiniteFeatureError,
    StorageDtype,
    check_video_id,
    count_videos,
    describe_non_finite,
    first_non_finite_row,
)
from epic_protocol.features.merge import merge_feature_files
from epic_protocol.features.store import FeatureStore
from epic_protocol.features.writer import FeatureFileWriter

__all__ = [
    "BEYOND_END_CHOICES",
    "FEATURE_FILE_ERRORS",
    "COMPLETE",
    "DETECTIONS",
    "DETECTION_FIELDS",
    "FEATURES",
    "FINITE",
    "FRAMES",
    "LAYOUT_NAME",
    "LAYOUT_VERSION",
    "NUM_FRAMES",
    "SPARSE",
    "STORAGE_DTYPE",
    "STORAGE_DTYPES",
    "BeyondEnd",
    "BeyondEndWarning",
    "DetectionsWriter",
    "FeatureFileAccessError",
    "FeatureFileError",
    "FeatureFileInfo",
    "FeatureFileMismatchError",
    "FeatureFileWriter",
    "FeatureStore",
    "FeatureWriteError",
    "FeaturesReplacedWarning",
    "MissingFeaturesError",
    "NonFiniteFeatureError",
    "StorageDtype",
    "StoredVideo",
    "abandon_hdf5",
    "attribute_mismatches",
    "check_video_id",
    "compatibility_problems",
    "complete_in",
    "complete_videos",
    "copy_detections",
    "count_videos",
    "describe_non_finite",
    "feature_file_mismatches",
    "first_non_finite_row",
    "info_from_attrs",
    "is_lock_error",
    "lock_message",
    "merge_feature_files",
    "open_for_reading",
    "open_for_writing",
    "provenance_of",
    "read_file_info",
    "reporting_write_failures",
    "stored_videos",
    "write_failure",
]
