"""The RU-LSTM split CSVs (``training.csv``, ``validation.csv``, ``test_*.csv``): no header;
EK55 values are zero-padded with leading spaces (``00330, P01_02, 0000000152, ...``); EK100
uids are narration ids (``P01_01_0``); frames are 1-based at 30 fps. The EGTEA Gaze+ splits of
the same authors (``training{1,2,3}.csv``) share the format."""

from __future__ import annotations

from collections.abc import Iterable

from epic_protocol.annotations.io import check_span, csv_rows, parse_int, write_csv_rows
from epic_protocol.annotations.records import AnnotationError, PathLike, Segment

SPLIT_LABELLED = ("uid", "video_id", "start_frame", "end_frame", "verb", "noun", "action")
SPLIT_UNLABELLED = SPLIT_LABELLED[:4]


def read_rulstm_split(path: PathLike) -> list[Segment]:
    """Read a RU-LSTM split CSV (no header; 7 labelled or 4 unlabelled columns).

    EK55 files are zero-padded with leading spaces; uids are kept as written but without the
    padding (``"00330"`` becomes ``"330"``) so that they match the EPIC ``uid`` column and
    the challenge JSON keys. EK100 narration ids are kept verbatim.
    """
    segments: list[Segment] = []
    width: int | None = None
    for line, cells in csv_rows(path):
        if width is None:
            width = len(cells)
            if width not in (len(SPLIT_LABELLED), len(SPLIT_UNLABELLED)):
                raise AnnotationError(
                    f"{path}:{line}: a RU-LSTM split row has 7 columns "
                    f"({', '.join(SPLIT_LABELLED)}) or 4 (test), got {len(cells)}: {cells}"
                )
        elif len(cells) != width:
            raise AnnotationError(
                f"{path}:{line}: expected {width} columns like the first row, got {len(cells)}"
            )
        uid = (cells[0].lstrip("0") or "0") if cells[0].isdigit() else cells[0]
        start = parse_int(path, line, "start_frame", cells[2])
        end = parse_int(path, line, "end_frame", cells[3])
        check_span(path, line, start, end)
        labels: dict[str, int] = {}
        if width == len(SPLIT_LABELLED):
            labels = {
                name: parse_int(path, line, name, value)
                for name, value in zip(SPLIT_LABELLED[4:], cells[4:])
            }
        if not cells[1]:
            raise AnnotationError(f"{path}:{line}: empty video_id")
        segments.append(Segment(uid, cells[1], start, end, **labels))
    return segments


def write_rulstm_split(path: PathLike, segments: Iterable[Segment]) -> None:
    """RU-LSTM split CSV (no header): ``uid, video_id, start_frame, end_frame, verb, noun,
    action`` for labelled segments, ``uid, video_id, start_frame, end_frame`` otherwise."""
    rows = []
    for s in segments:
        labels = [s.verb, s.noun, s.action] if s.verb is not None else []
        rows.append([s.uid, s.video_id, s.start_frame, s.end_frame, *labels])
    write_csv_rows(path, rows)
