"""Reading a segment file of either format: an EPIC CSV or a RU-LSTM split."""

from __future__ import annotations

from collections.abc import Mapping

from epic_protocol.annotations.epic_csv import read_epic_csv
from epic_protocol.annotations.io import csv_rows
from epic_protocol.annotations.records import ActionVocabulary, AnnotationError, PathLike, Segment
from epic_protocol.annotations.rulstm_csv import read_rulstm_split


def read_annotations(
    path: PathLike,
    *,
    video_fps: Mapping[str, float] | PathLike | None = None,
    fps: float = 30.0,
    vocabulary: ActionVocabulary | None = None,
) -> list[Segment]:
    """Read either format: an EPIC CSV (its header names ``video_id``) or a RU-LSTM split
    (no header). See :func:`read_epic_csv` for when ``video_fps`` is needed."""
    first = next(csv_rows(path), (1, []))[1]
    if "video_id" in first:
        return read_epic_csv(path, video_fps=video_fps, fps=fps, vocabulary=vocabulary)
    segments = read_rulstm_split(path)
    if vocabulary is not None:
        for segment in segments:
            # -1: a labelled pair that is not an action of the vocabulary (as EPIC CSVs get).
            if segment.action is not None and not -1 <= segment.action < vocabulary.num_actions:
                raise AnnotationError(
                    f"{path}: segment {segment.uid} has action {segment.action}, outside the "
                    f"vocabulary of {vocabulary.num_actions} actions"
                )
    return segments
