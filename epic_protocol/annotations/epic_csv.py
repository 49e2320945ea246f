"""The original EPIC-KITCHENS CSVs (``EPIC_train_action_labels.csv``,
``EPIC_test_s1_timestamps.csv``, ``EPIC_100_*.csv``), whose frames are at each video's native
fps and are converted to the target fps (from the timestamps, or with the video-info CSV)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from epic_protocol.annotations.io import (
    check_span,
    csv_rows,
    parse_float,
    parse_int,
    write_csv_rows,
)
from epic_protocol.annotations.records import (
    ActionVocabulary,
    AnnotationError,
    PathLike,
    Segment,
)


def read_video_info(path: PathLike) -> dict[str, float]:
    """Native fps per video from ``EPIC_video_info.csv`` (``video``) or
    ``EPIC_100_video_info.csv`` (``video_id``)."""
    rows = csv_rows(path)
    line, header = next(rows, (1, []))
    video_column = "video_id" if "video_id" in header else "video"
    if video_column not in header or "fps" not in header:
        raise AnnotationError(f"{path}:{line}: header needs 'video' or 'video_id', and 'fps'")
    video_index, fps_index = header.index(video_column), header.index("fps")
    info: dict[str, float] = {}
    for line, cells in rows:
        if len(cells) != len(header):
            raise AnnotationError(f"{path}:{line}: expected {len(header)} columns, got {cells}")
        fps = parse_float(path, line, "fps", cells[fps_index])
        if not fps > 0:
            raise AnnotationError(f"{path}:{line}: fps must be positive, got {fps}")
        info[cells[video_index]] = fps
    return info


def convert_frame(frame: int, *, native_fps: float, fps: float = 30.0) -> int:
    """Map a 1-based native-fps frame number to 1-based ``fps`` numbering:
    ``max(1, floor(frame * fps / native_fps))``. Used only for EPIC rows without timestamps."""
    return max(1, math.floor(frame * fps / native_fps))


def timestamp_to_frame(timestamp: str, *, fps: float = 30.0) -> int:
    """``HH:MM:SS.ff`` to a 1-based frame at ``fps``: ``max(1, floor(seconds * fps))``.

    This is how the RU-LSTM split files were made from the EPIC CSVs: it reproduces their
    start and end frames on every row of EK55 ``EPIC_train_action_labels.csv`` (28,472 rows),
    the EK55 test CSVs and EK100 ``EPIC_100_validation.csv`` / ``EPIC_100_test_timestamps.csv``
    (converting the native frame numbers instead disagrees on over 90 % of rows).
    """
    parts = timestamp.split(":")
    if len(parts) != 3:
        raise ValueError(f"timestamp {timestamp!r} is not HH:MM:SS.ff")
    hours, minutes, seconds = int(parts[0]), int(parts[1]), float(parts[2])
    return max(1, math.floor((hours * 3600 + minutes * 60 + seconds) * fps))


def read_epic_csv(
    path: PathLike,
    *,
    video_fps: Mapping[str, float] | PathLike | None = None,
    fps: float = 30.0,
    vocabulary: ActionVocabulary | None = None,
    frames_from: Literal["timestamps", "frames"] = "timestamps",
) -> list[Segment]:
    """Read an original EPIC-KITCHENS CSV (EK55 ``uid`` or EK100 ``narration_id`` rows) and
    number its segments in 1-based ``fps`` frames.

    By default the ``start/stop_timestamp`` columns are converted (:func:`timestamp_to_frame`),
    which matches the RU-LSTM split files exactly. ``frames_from="frames"`` converts the
    native-fps ``start/stop_frame`` columns instead, with ``video_fps`` (a mapping or the path
    of the video-info CSV); files without timestamps need it.

    Labelled files get ``action`` from ``vocabulary`` (``-1`` for a pair it lacks); without
    one, ``action`` stays ``None`` so that a vocabulary can be built from the training split
    first (:meth:`ActionVocabulary.from_segments`, then :func:`with_actions`).
    """
    if video_fps is not None and not isinstance(video_fps, Mapping):
        video_fps = read_video_info(video_fps)
    rows = csv_rows(path)
    line, header = next(rows, (1, []))
    uid_column = "narration_id" if "narration_id" in header else "uid"
    has_timestamps = "start_timestamp" in header and "stop_timestamp" in header
    if frames_from == "timestamps" and not has_timestamps:
        frames_from = "frames"
    needed = [uid_column, "video_id"]
    needed += (
        ["start_timestamp", "stop_timestamp"]
        if frames_from == "timestamps"
        else ["start_frame", "stop_frame"]
    )
    missing = [name for name in needed if name not in header]
    if missing:
        raise AnnotationError(
            f"{path}:{line}: header lacks the columns {missing} of an EPIC-KITCHENS CSV (a "
            "RU-LSTM split file has no header: uid, video_id, start_frame, end_frame, verb, "
            "noun, action)"
        )
    if frames_from == "frames" and video_fps is None:
        raise AnnotationError(
            f"{path}: converting native-fps frame numbers needs the video-info CSV (video_fps=...)"
        )
    index = {name: i for i, name in enumerate(header)}
    labelled = "verb_class" in index and "noun_class" in index
    segments: list[Segment] = []
    for line, cells in rows:
        if len(cells) != len(header):
            raise AnnotationError(
                f"{path}:{line}: expected {len(header)} columns, got {len(cells)}"
            )
        video = cells[index["video_id"]]
        if frames_from == "timestamps":
            try:
                start = timestamp_to_frame(cells[index["start_timestamp"]], fps=fps)
                end = timestamp_to_frame(cells[index["stop_timestamp"]], fps=fps)
            except ValueError as error:
                raise AnnotationError(f"{path}:{line}: {error}") from None
        else:
            if video not in video_fps:
                raise AnnotationError(
                    f"{path}:{line}: video {video!r} is not in the video-info CSV"
                )
            native = video_fps[video]
            start = convert_frame(
                parse_int(path, line, "start_frame", cells[index["start_frame"]]),
                native_fps=native,
                fps=fps,
            )
            end = convert_frame(
                parse_int(path, line, "stop_frame", cells[index["stop_frame"]]),
                native_fps=native,
                fps=fps,
            )
        check_span(path, line, start, end)
        verb = noun = action = None
        if labelled:
            verb = parse_int(path, line, "verb_class", cells[index["verb_class"]])
            noun = parse_int(path, line, "noun_class", cells[index["noun_class"]])
            action = vocabulary.action_of(verb, noun) if vocabulary is not None else None
        segments.append(
            Segment(
                uid=cells[index[uid_column]],
                video_id=video,
                start_frame=start,
                end_frame=end,
                verb=verb,
                noun=noun,
                action=action,
            )
        )
    return segments


def with_actions(segments: Sequence[Segment], vocabulary: ActionVocabulary) -> list[Segment]:
    """Fill in ``action`` from (verb, noun) for labelled segments."""
    return [
        Segment(
            s.uid,
            s.video_id,
            s.start_frame,
            s.end_frame,
            s.verb,
            s.noun,
            vocabulary.action_of(s.verb, s.noun),
        )
        if s.labelled
        else s
        for s in segments
    ]


EPIC_100_HEADER = (
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
)


def frame_timestamp(frame: int, *, fps: float = 30.0, decimals: int = 2) -> str:
    """``HH:MM:SS.ff`` in the middle of 1-based ``frame`` (``(frame + 0.5) / fps``), so that
    :func:`timestamp_to_frame` (``floor(seconds * fps)``) gives ``frame`` back despite the
    rounding to ``decimals`` digits."""
    seconds = round((frame + 0.5) / fps, decimals)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    width = 3 + decimals
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:0{width}.{decimals}f}"


def write_epic_100_csv(
    path: PathLike,
    segments: Iterable[Segment],
    *,
    verb_names: Sequence[str],
    noun_names: Sequence[str],
    fps: float = 30.0,
) -> None:
    """``EPIC_100_{train,validation}.csv`` rows for labelled segments whose frames are at
    ``fps`` (timestamps from :func:`frame_timestamp`); the participant is the video id's
    prefix (``P01`` of ``P01_03``)."""
    rows = []
    for s in segments:
        if s.verb is None or s.noun is None:
            raise ValueError(f"segment {s.uid}: EPIC-100 rows need verb and noun labels")
        verb_name, noun_name = verb_names[s.verb], noun_names[s.noun]
        rows.append(
            [
                s.uid,
                s.video_id.split("_", 1)[0],
                s.video_id,
                frame_timestamp(s.start_frame, fps=fps, decimals=3),
                frame_timestamp(s.start_frame, fps=fps),
                frame_timestamp(s.end_frame, fps=fps),
                s.start_frame,
                s.end_frame,
                f"{verb_name} {noun_name}",
                verb_name,
                s.verb,
                noun_name,
                s.noun,
                f"['{noun_name}']",
                f"[{s.noun}]",
            ]
        )
    write_csv_rows(path, rows, EPIC_100_HEADER)


def write_video_info(
    path: PathLike, videos: Mapping[str, int], *, fps: float, resolution: tuple[int, int]
) -> None:
    """``EPIC_100_video_info.csv``: ``video_id, duration, fps, resolution`` for videos given
    as ``{video_id: number of frames}``; ``resolution`` is ``(width, height)``."""
    width, height = resolution
    rows = [
        [v, f"{frames / fps:.6f}", f"{fps:.1f}", f"{width}x{height}"]
        for v, frames in videos.items()
    ]
    write_csv_rows(path, rows, ["video_id", "duration", "fps", "resolution"])
