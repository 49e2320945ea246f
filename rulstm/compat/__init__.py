"""Compatibility with the RU-LSTM authors' released files: LMDB features, ``.pth.tar``
checkpoints and per-frame object detections (``rulstm-import features`` / ``checkpoint`` /
``detections``)."""

from rulstm.compat.checkpoints import (
    CheckpointImportError,
    ConvertedNetwork,
    ReferenceCheckpoint,
    convert_reference_state_dict,
    export_reference_state_dict,
    import_checkpoint,
    lightning_checkpoint,
    load_reference_checkpoint,
    read_reference_checkpoint,
    write_reference_checkpoint,
)
from rulstm.compat.detections import (
    DetectionImportError,
    DetectionImportSummary,
    detection_features,
    import_detections,
    load_detection_file,
)
from rulstm.compat.lmdb_features import ConversionSummary, LMDBConversionError, convert_lmdb

__all__ = [
    "CheckpointImportError",
    "ConversionSummary",
    "ConvertedNetwork",
    "DetectionImportError",
    "DetectionImportSummary",
    "LMDBConversionError",
    "ReferenceCheckpoint",
    "convert_lmdb",
    "convert_reference_state_dict",
    "detection_features",
    "export_reference_state_dict",
    "import_checkpoint",
    "import_detections",
    "lightning_checkpoint",
    "load_detection_file",
    "load_reference_checkpoint",
    "read_reference_checkpoint",
    "write_reference_checkpoint",
]
