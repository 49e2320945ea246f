"""Training-side data: annotations (re-exported from :mod:`epic_protocol`), the sampling
protocol, HDF5 feature stores and the DataModule."""

from epic_protocol.annotations import (
    ActionVocabulary,
    AnnotationError,
    Segment,
    convert_frame,
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
)
from epic_protocol.features import (
    FeatureFileError,
    FeatureFileWriter,
    FeatureStore,
    MissingFeaturesError,
)
from epic_protocol.sampling import (
    anticipation_frames,
    anticipation_times,
    early_recognition_frames,
)
from rulstm.data.datamodule import (
    AnticipationBatch,
    AnticipationDataModule,
    AnticipationDataset,
    Sample,
)

__all__ = [
    "ActionVocabulary",
    "AnnotationError",
    "AnticipationBatch",
    "AnticipationDataModule",
    "AnticipationDataset",
    "FeatureFileError",
    "FeatureFileWriter",
    "FeatureStore",
    "MissingFeaturesError",
    "Sample",
    "Segment",
    "anticipation_frames",
    "anticipation_times",
    "convert_frame",
    "early_recognition_frames",
    "read_actions_csv",
    "read_annotations",
    "read_class_ids",
    "read_class_names",
    "read_epic_csv",
    "read_id_list",
    "read_many_shot_actions",
    "read_rulstm_split",
    "read_video_info",
    "timestamp_to_frame",
    "with_actions",
]
