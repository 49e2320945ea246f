"""The contract between the extraction side (``feature_extraction``) and the training side
(``rulstm``): annotation formats, the sampling protocol and the HDF5 feature layout.

Neither side imports the other; both import this package.
"""

from epic_protocol.annotations import (
    ActionVocabulary,
    AnnotationError,
    Segment,
    convert_frame,
    frame_timestamp,
    open_text,
    read_actions_csv,
    read_annotations,
    read_class_ids,
    read_class_names,
    read_epic_csv,
    read_id_list,
    read_many_shot_actions,
    read_rulstm_split,
    read_video_info,
    timestamp_to_frame,
    with_actions,
    write_actions_csv,
    write_class_names,
    write_epic_100_csv,
    write_id_list,
    write_rulstm_split,
    write_video_info,
)
from epic_protocol.errors import UserError, cli_main
from epic_protocol.features import (
    BeyondEndWarning,
    FeatureFileError,
    FeatureFileInfo,
    FeatureFileWriter,
    FeatureStore,
    MissingFeaturesError,
    read_file_info,
)
from epic_protocol.sampling import (
    anticipation_frames,
    anticipation_times,
    early_recognition_frames,
)

__all__ = [
    "ActionVocabulary",
    "AnnotationError",
    "BeyondEndWarning",
    "FeatureFileError",
    "FeatureFileInfo",
    "FeatureFileWriter",
    "FeatureStore",
    "MissingFeaturesError",
    "Segment",
    "UserError",
    "anticipation_frames",
    "anticipation_times",
    "cli_main",
    "convert_frame",
    "frame_timestamp",
    "early_recognition_frames",
    "open_text",
    "read_actions_csv",
    "read_annotations",
    "read_class_ids",
    "read_class_names",
    "read_epic_csv",
    "read_file_info",
    "read_id_list",
    "read_many_shot_actions",
    "read_rulstm_split",
    "read_video_info",
    "timestamp_to_frame",
    "with_actions",
    "write_actions_csv",
    "write_class_names",
    "write_epic_100_csv",
    "write_id_list",
    "write_rulstm_split",
    "write_video_info",
]
