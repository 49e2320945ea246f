"""Compatibility with the RU-LSTM authors' released files: LMDB features and ``.pth.tar``
checkpoints (``rulstm-import features`` / ``rulstm-import checkpoint``)."""

from rulstm.compat.checkpoints import (
    CheckpointImportError,
    ConvertedNetwork,
    ReferenceCheckpoint,
    convert_reference_state_dict,
    import_checkpoint,
    lightning_checkpoint,
    load_reference_checkpoint,
    read_reference_checkpoint,
)
from rulstm.compat.lmdb_features import ConversionSummary, LMDBConversionError, convert_lmdb

__all__ = [
    "CheckpointImportError",
    "ConversionSummary",
    "ConvertedNetwork",
    "LMDBConversionError",
    "ReferenceCheckpoint",
    "convert_lmdb",
    "convert_reference_state_dict",
    "import_checkpoint",
    "lightning_checkpoint",
    "load_reference_checkpoint",
    "read_reference_checkpoint",
]
