"""EPIC-KITCHENS (and EGTEA Gaze+) annotations as typed records, one module per format:

- :mod:`~epic_protocol.annotations.records`: :class:`Segment`, :class:`ActionVocabulary`,
  :class:`AnnotationError`;
- :mod:`~epic_protocol.annotations.io`: :func:`open_text` (UTF-8 with or without BOM) and the
  CSV row reading/writing every format uses;
- :mod:`~epic_protocol.annotations.rulstm_csv`: the RU-LSTM split CSVs (no header, 1-based
  frames at 30 fps; the EGTEA Gaze+ splits share the format);
- :mod:`~epic_protocol.annotations.epic_csv`: the original EPIC CSVs (``uid`` or
  ``narration_id`` rows, native-fps frames converted to the target fps) and the video-info CSV;
- :mod:`~epic_protocol.annotations.actions`: action vocabularies (``actions.csv``);
- :mod:`~epic_protocol.annotations.egtea`: the headerless EGTEA Gaze+ action vocabulary;
- :mod:`~epic_protocol.annotations.classes`: class names, class-id and id lists;
- :mod:`~epic_protocol.annotations.detect`: :func:`read_annotations`, either segment format.

Every reader fails with :class:`AnnotationError` naming the file and the 1-based line. Each
format's writers (used by the synthetic kitchen) sit next to its reader and are its inverse.
Every public name is importable from ``epic_protocol.annotations``.
"""

from epic_protocol.annotations.actions import read_actions_csv, write_actions_csv
from epic_protocol.annotations.classes import (
    read_class_ids,
    read_class_names,
    read_id_list,
    read_many_shot_actions,
    write_class_names,
    write_id_list,
)
from epic_protocol.annotations.detect import read_annotations
from epic_protocol.annotations.egtea import read_egtea_actions
from epic_protocol.annotations.epic_csv import (
    EPIC_100_HEADER,
    convert_frame,
    frame_timestamp,
    read_epic_csv,
    read_video_info,
    timestamp_to_frame,
    with_actions,
    write_epic_100_csv,
    write_video_info,
)
from epic_protocol.annotations.io import (
    check_span,
    csv_rows,
    open_text,
    parse_float,
    parse_int,
    write_csv_rows,
)
from epic_protocol.annotations.records import (
    ActionVocabulary,
    AnnotationError,
    PathLike,
    Segment,
    vocabulary_from_columns,
)
from epic_protocol.annotations.rulstm_csv import (
    SPLIT_LABELLED,
    SPLIT_UNLABELLED,
    read_rulstm_split,
    write_rulstm_split,
)

__all__ = [
    "EPIC_100_HEADER",
    "SPLIT_LABELLED",
    "SPLIT_UNLABELLED",
    "ActionVocabulary",
    "AnnotationError",
    "PathLike",
    "Segment",
    "check_span",
    "convert_frame",
    "csv_rows",
    "frame_timestamp",
    "open_text",
    "parse_float",
    "parse_int",
    "read_actions_csv",
    "read_annotations",
    "read_class_ids",
    "read_class_names",
    "read_egtea_actions",
    "read_epic_csv",
    "read_id_list",
    "read_many_shot_actions",
    "read_rulstm_split",
    "read_video_info",
    "timestamp_to_frame",
    "vocabulary_from_columns",
    "with_actions",
    "write_actions_csv",
    "write_class_names",
    "write_csv_rows",
    "write_epic_100_csv",
    "write_id_list",
    "write_rulstm_split",
    "write_video_info",
]
