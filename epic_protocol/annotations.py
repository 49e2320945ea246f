"""EPIC-KITCHENS annotations as typed records.

Readers for the two formats users hold:

* the RU-LSTM split CSVs (``training.csv``, ``validation.csv``, ``test_*.csv``): no header;
  EK55 values are zero-padded with leading spaces (``00330, P01_02, 0000000152, ...``);
  EK100 uids are narration ids (``P01_01_0``); frames are 1-based at 30 fps. The EGTEA
  Gaze+ splits of the same authors (``training{1,2,3}.csv``) share the format;
* the original EPIC CSVs (``EPIC_train_action_labels.csv``, ``EPIC_test_s1_timestamps.csv``,
  ``EPIC_100_*.csv``), whose frames are at each video's native fps and are converted to the
  target fps with the video-info CSV.

Every reader fails with :class:`AnnotationError` naming the file and the 1-based line.

The writers at the end are the readers' inverses (used by the synthetic kitchen): a format is
defined in this one file, which is why it runs a little over 600 lines.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import numpy as np

PathLike = str | Path


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One annotated (or, in test splits, unlabelled) action segment.

    Frame numbers are 1-based at the split's fps (30 for RU-LSTM files). Labels are ``None``
    when the split has none (test) and ``-1`` for an action missing from the vocabulary.
    """

    uid: str
    video_id: str
    start_frame: int
    end_frame: int
    verb: int | None = None
    noun: int | None = None
    action: int | None = None

    @property
    def participant_id(self) -> str:
        """``P01`` for ``P01_02``: EPIC video ids start with the participant id."""
        return self.video_id.split("_", 1)[0]

    @property
    def labelled(self) -> bool:
        return self.verb is not None and self.noun is not None


@dataclass(frozen=True, eq=False)
class ActionVocabulary:
    """Actions as (verb, noun) pairs, indexed by action id.

    ``verbs[a]`` and ``nouns[a]`` give the verb and noun of action ``a``; ``num_verbs`` and
    ``num_nouns`` are the sizes of the verb/noun label spaces (which may contain classes that
    no action uses).
    """

    verbs: np.ndarray
    nouns: np.ndarray
    names: tuple[str, ...]
    num_verbs: int
    num_nouns: int

    def __post_init__(self) -> None:
        if not (len(self.verbs) == len(self.nouns) == len(self.names)):
            raise ValueError("verbs, nouns and names must have one entry per action")

    @property
    def num_actions(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActionVocabulary):
            return NotImplemented
        return (
            self.names == other.names
            and (self.num_verbs, self.num_nouns) == (other.num_verbs, other.num_nouns)
            and np.array_equal(self.verbs, other.verbs)
            and np.array_equal(self.nouns, other.nouns)
        )

    __hash__ = None  # mutable numpy fields

    def action_of(self, verb: int, noun: int) -> int:
        """The action id of a (verb, noun) pair, or -1 when the pair is not an action."""
        return self._pair_to_action.get((int(verb), int(noun)), -1)

    @property
    def _pair_to_action(self) -> dict[tuple[int, int], int]:
        cached = self.__dict__.get("_pairs")
        if cached is None:
            cached = {(int(v), int(n)): a for a, (v, n) in enumerate(zip(self.verbs, self.nouns))}
            object.__setattr__(self, "_pairs", cached)
        return cached

    @classmethod
    def from_segments(
        cls,
        segments: Iterable[Segment],
        *,
        num_verbs: int | None = None,
        num_nouns: int | None = None,
    ) -> ActionVocabulary:
        """Build a vocabulary from labelled segments.

        When every segment carries an action id (RU-LSTM splits), those ids are kept, so the
        labels in the file stay valid; each id must always name the same (verb, noun) and ids
        must cover 0..A-1. Otherwise (EPIC CSVs) the distinct (verb, noun) pairs are numbered
        in sorted order, so the result does not depend on the row order.
        """
        labelled = [s for s in segments if s.labelled]
        if not labelled:
            raise ValueError("cannot build an action vocabulary from unlabelled segments")
        if all(s.action is not None and s.action >= 0 for s in labelled):
            pair_of: dict[int, tuple[int, int]] = {}
            for s in labelled:
                pair = pair_of.setdefault(s.action, (s.verb, s.noun))
                if pair != (s.verb, s.noun):
                    raise ValueError(
                        f"action {s.action} is ({pair[0]}, {pair[1]}) in one row and "
                        f"({s.verb}, {s.noun}) in segment {s.uid}; pass an actions.csv"
                    )
            missing = sorted(set(range(max(pair_of) + 1)) - set(pair_of))
            if missing:
                raise ValueError(
                    f"action ids {missing[:10]} never occur in the training annotations, so "
                    "their (verb, noun) is unknown; pass the actions.csv vocabulary"
                )
            pairs = [pair_of[a] for a in range(len(pair_of))]
        else:
            pairs = sorted({(s.verb, s.noun) for s in labelled})
        verbs = np.array([v for v, _ in pairs], dtype=np.int64)
        nouns = np.array([n for _, n in pairs], dtype=np.int64)
        return cls(
            verbs=verbs,
            nouns=nouns,
            names=tuple(f"{v},{n}" for v, n in pairs),
            num_verbs=num_verbs if num_verbs is not None else int(verbs.max()) + 1,
            num_nouns=num_nouns if num_nouns is not None else int(nouns.max()) + 1,
        )


def open_text(path: PathLike) -> TextIO:
    """Open a text file the user made (CSV annotations, id lists, class files) for reading.

    UTF-8 with or without a byte-order mark: spreadsheet programs (Excel's and Google
    Sheets' "CSV UTF-8") start the file with ``U+FEFF``, which would otherwise stick to the
    first cell (uid ``0`` read as ``U+FEFF 0``, a header cell ``narration_id`` not found).
    Newlines are left to the ``csv`` module (``newline=""``). Every reader of such files
    opens them here.
    """
    return Path(path).open(newline="", encoding="utf-8-sig")


def _rows(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, stripped cells) for every non-blank CSV row.

    Raises ``FileNotFoundError`` for a missing file and :class:`AnnotationError` for one
    that is not UTF-8 text (naming the file and the line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    line_number = 0
    try:
        with open_text(path) as handle:
            for line_number, row in enumerate(csv.reader(handle), start=1):
                cells = [cell.strip() for cell in row]
                if any(cells):
                    yield line_number, cells
    except UnicodeDecodeError as error:
        raise AnnotationError(
            f"{path}:{line_number + 1}: not UTF-8 text ({error.reason}); save it as CSV UTF-8"
        ) from None


def _int(path: PathLike, line: int, column: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AnnotationError(
            f"{path}:{line}: column '{column}' must be an integer, got {value!r}"
        ) from None


def _float(path: PathLike, line: int, column: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise AnnotationError(
            f"{path}:{line}: column '{column}' must be a number, got {value!r}"
        ) from None


def _check_span(path: PathLike, line: int, start: int, end: int) -> None:
    if start < 0 or end < start:
        raise AnnotationError(f"{path}:{line}: invalid frame span start={start} end={end}")


_SPLIT_LABELLED = ("uid", "video_id", "start_frame", "end_frame", "verb", "noun", "action")
_SPLIT_UNLABELLED = _SPLIT_LABELLED[:4]


def read_rulstm_split(path: PathLike) -> list[Segment]:
    """Read a RU-LSTM split CSV (no header; 7 labelled or 4 unlabelled columns).

    EK55 files are zero-padded with leading spaces; uids are kept as written but without the
    padding (``"00330"`` becomes ``"330"``) so that they match the EPIC ``uid`` column and
    the challenge JSON keys. EK100 narration ids are kept verbatim.
    """
    segments: list[Segment] = []
    width: int | None = None
    for line, cells in _rows(path):
        if width is None:
            width = len(cells)
            if width not in (len(_SPLIT_LABELLED), len(_SPLIT_UNLABELLED)):
                raise AnnotationError(
                    f"{path}:{line}: a RU-LSTM split row has 7 columns "
                    f"({', '.join(_SPLIT_LABELLED)}) or 4 (test), got {len(cells)}: {cells}"
                )
        elif len(cells) != width:
            raise AnnotationError(
                f"{path}:{line}: expected {width} columns like the first row, got {len(cells)}"
            )
        uid = (cells[0].lstrip("0") or "0") if cells[0].isdigit() else cells[0]
        start = _int(path, line, "start_frame", cells[2])
        end = _int(path, line, "end_frame", cells[3])
        _check_span(path, line, start, end)
        labels: dict[str, int] = {}
        if width == len(_SPLIT_LABELLED):
            labels = {
                name: _int(path, line, name, value)
                for name, value in zip(_SPLIT_LABELLED[4:], cells[4:])
            }
        if not cells[1]:
            raise AnnotationError(f"{path}:{line}: empty video_id")
        segments.append(Segment(uid, cells[1], start, end, **labels))
    return segments


def read_actions_csv(
    path: PathLike, *, num_verbs: int | None = None, num_nouns: int | None = None
) -> ActionVocabulary:
    """Read an action vocabulary: EK55 ``id,action,verb,noun``, EK100 ``id,verb,noun,action``,
    or the headerless EGTEA Gaze+ file of the RU-LSTM authors (rows ``id, verb_noun, name``,
    e.g. ``0, 0_0, Inspect/Read_recipe``).

    Ids must be 0..A-1 in order. Names are stripped of the leading space the EK55 file has.
    """
    rows = _rows(path)
    try:
        line, header = next(rows)
    except StopIteration:
        raise AnnotationError(f"{path}: empty action vocabulary") from None
    if header and header[0].isdigit():
        return _read_headerless_actions(
            path, [(line, header), *rows], num_verbs=num_verbs, num_nouns=num_nouns
        )
    required = {"id", "action", "verb", "noun"}
    if set(header) != required:
        raise AnnotationError(
            f"{path}:{line}: header must hold the columns id, action, verb, noun, got {header}"
        )
    column = {name: header.index(name) for name in required}
    verbs, nouns, names = [], [], []
    for line, cells in rows:
        if len(cells) != len(header):
            raise AnnotationError(f"{path}:{line}: expected {len(header)} columns, got {cells}")
        action_id = _int(path, line, "id", cells[column["id"]])
        if action_id != len(names):
            raise AnnotationError(
                f"{path}:{line}: action ids must run 0, 1, 2, ... in order; "
                f"expected {len(names)}, got {action_id}"
            )
        verbs.append(_int(path, line, "verb", cells[column["verb"]]))
        nouns.append(_int(path, line, "noun", cells[column["noun"]]))
        names.append(cells[column["action"]])
    return _vocabulary(path, verbs, nouns, names, num_verbs=num_verbs, num_nouns=num_nouns)


def _read_headerless_actions(
    path: PathLike,
    rows: Sequence[tuple[int, list[str]]],
    *,
    num_verbs: int | None,
    num_nouns: int | None,
) -> ActionVocabulary:
    """EGTEA Gaze+ ``actions.csv`` (RU-LSTM format): no header, ``id, verb_noun, name``."""
    verbs, nouns, names = [], [], []
    for line, cells in rows:
        if len(cells) != 3:
            raise AnnotationError(
                f"{path}:{line}: a headerless action row has 3 columns (id, verb_noun, name), "
                f"got {cells}"
            )
        action_id = _int(path, line, "id", cells[0])
        if action_id != len(names):
            raise AnnotationError(
                f"{path}:{line}: action ids must run 0, 1, 2, ... in order; "
                f"expected {len(names)}, got {action_id}"
            )
        verb, separator, noun = cells[1].partition("_")
        if not separator:
            raise AnnotationError(
                f"{path}:{line}: column 'verb_noun' must look like 3_10, got {cells[1]!r}"
            )
        verbs.append(_int(path, line, "verb", verb))
        nouns.append(_int(path, line, "noun", noun))
        names.append(cells[2])
    return _vocabulary(path, verbs, nouns, names, num_verbs=num_verbs, num_nouns=num_nouns)


def _vocabulary(
    path: PathLike,
    verbs: list[int],
    nouns: list[int],
    names: list[str],
    *,
    num_verbs: int | None,
    num_nouns: int | None,
) -> ActionVocabulary:
    if not names:
        raise AnnotationError(f"{path}: the action vocabulary has no rows")
    verb_array = np.array(verbs, dtype=np.int64)
    noun_array = np.array(nouns, dtype=np.int64)
    return ActionVocabulary(
        verbs=verb_array,
        nouns=noun_array,
        names=tuple(names),
        num_verbs=num_verbs if num_verbs is not None else int(verb_array.max()) + 1,
        num_nouns=num_nouns if num_nouns is not None else int(noun_array.max()) + 1,
    )


def read_video_info(path: PathLike) -> dict[str, float]:
    """Native fps per video from ``EPIC_video_info.csv`` (``video``) or
    ``EPIC_100_video_info.csv`` (``video_id``)."""
    rows = _rows(path)
    line, header = next(rows, (1, []))
    video_column = "video_id" if "video_id" in header else "video"
    if video_column not in header or "fps" not in header:
        raise AnnotationError(f"{path}:{line}: header needs 'video' or 'video_id', and 'fps'")
    video_index, fps_index = header.index(video_column), header.index("fps")
    info: dict[str, float] = {}
    for line, cells in rows:
        if len(cells) != len(header):
            raise AnnotationError(f"{path}:{line}: expected {len(header)} columns, got {cells}")
        fps = _float(path, line, "fps", cells[fps_index])
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
    rows = _rows(path)
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
                _int(path, line, "start_frame", cells[index["start_frame"]]),
                native_fps=native,
                fps=fps,
            )
            end = convert_frame(
                _int(path, line, "stop_frame", cells[index["stop_frame"]]),
                native_fps=native,
                fps=fps,
            )
        _check_span(path, line, start, end)
        verb = noun = action = None
        if labelled:
            verb = _int(path, line, "verb_class", cells[index["verb_class"]])
            noun = _int(path, line, "noun_class", cells[index["noun_class"]])
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


def read_annotations(
    path: PathLike,
    *,
    video_fps: Mapping[str, float] | PathLike | None = None,
    fps: float = 30.0,
    vocabulary: ActionVocabulary | None = None,
) -> list[Segment]:
    """Read either format: an EPIC CSV (its header names ``video_id``) or a RU-LSTM split
    (no header). See :func:`read_epic_csv` for when ``video_fps`` is needed."""
    first = next(_rows(path), (1, []))[1]
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


def read_class_ids(path: PathLike) -> frozenset[int]:
    """A class-id list: the first column of ``EPIC_many_shot_{verbs,nouns}.csv``
    (``verb_class,verb``) or ``EPIC_100_tail_{verbs,nouns}.csv`` (``verb``)."""
    rows = _rows(path)
    next(rows, None)  # header
    return frozenset(_int(path, line, "class id", cells[0]) for line, cells in rows)


def read_many_shot_actions(path: PathLike) -> frozenset[tuple[int, int]]:
    """The official EK55 many-shot actions (``EPIC_many_shot_actions.csv``) as (verb, noun)."""
    rows = _rows(path)
    _, header = next(rows, (1, []))
    if "verb_class" not in header or "noun_class" not in header:
        raise AnnotationError(f"{path}:1: header needs verb_class and noun_class")
    v, n = header.index("verb_class"), header.index("noun_class")
    return frozenset(
        (_int(path, line, "verb_class", c[v]), _int(path, line, "noun_class", c[n]))
        for line, c in rows
    )


def read_id_list(path: PathLike, *, header: str | None = None) -> list[str]:
    """One id per line: RU-LSTM ``validation_*_ids.csv`` (no header) or EPIC
    ``EPIC_100_unseen_participant_ids_*.csv`` (header ``participant_id``). A first line equal
    to ``header`` (or any of the known headers) is skipped."""
    known_headers = {"participant_id", "narration_id", "uid", "video_id"}
    if header is not None:
        known_headers.add(header)
    ids = [cells[0] for _, cells in _rows(path)]
    if ids and ids[0] in known_headers:
        ids = ids[1:]
    return ids


def read_class_names(path: PathLike) -> list[str]:
    """Class names in id order from ``EPIC_verb_classes.csv`` / ``EPIC_noun_classes.csv``
    (``verb_id,class_key,...``) or ``EPIC_100_{verb,noun}_classes.csv`` (``id,key,...``)."""
    rows = _rows(path)
    line, header = next(rows, (1, []))
    if len(header) < 2:
        raise AnnotationError(f"{path}:{line}: expected an id column and a name column")
    names: list[str] = []
    for line, cells in rows:
        class_id = _int(path, line, header[0], cells[0])
        if class_id != len(names):
            raise AnnotationError(f"{path}:{line}: class ids must run 0, 1, 2, ... in order")
        names.append(cells[1])
    return names


# --------------------------------------------------------------------------- writers
# The inverse of the readers above, for datasets a program makes (the synthetic kitchen,
# conversions): each writes what the matching reader reads back unchanged.

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


def _write_rows(
    path: PathLike, rows: Iterable[Sequence[object]], header: Sequence[str] | None = None
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)


def frame_timestamp(frame: int, *, fps: float = 30.0, decimals: int = 2) -> str:
    """``HH:MM:SS.ff`` in the middle of 1-based ``frame`` (``(frame + 0.5) / fps``), so that
    :func:`timestamp_to_frame` (``floor(seconds * fps)``) gives ``frame`` back despite the
    rounding to ``decimals`` digits."""
    seconds = round((frame + 0.5) / fps, decimals)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    width = 3 + decimals
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:0{width}.{decimals}f}"


def write_rulstm_split(path: PathLike, segments: Iterable[Segment]) -> None:
    """RU-LSTM split CSV (no header): ``uid, video_id, start_frame, end_frame, verb, noun,
    action`` for labelled segments, ``uid, video_id, start_frame, end_frame`` otherwise."""
    rows = []
    for s in segments:
        labels = [s.verb, s.noun, s.action] if s.verb is not None else []
        rows.append([s.uid, s.video_id, s.start_frame, s.end_frame, *labels])
    _write_rows(path, rows)


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
    _write_rows(path, rows, EPIC_100_HEADER)


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
    _write_rows(path, rows, ["video_id", "duration", "fps", "resolution"])


def write_class_names(path: PathLike, names: Sequence[str], *, category: str = "") -> None:
    """``EPIC_100_{verb,noun}_classes.csv`` style: ``id, key, instances, category``."""
    rows = [[i, name, f"['{name}']", category] for i, name in enumerate(names)]
    _write_rows(path, rows, ["id", "key", "instances", "category"])


def write_actions_csv(path: PathLike, vocabulary: ActionVocabulary) -> None:
    """EK100-style ``actions.csv``: ``id, verb, noun, action`` (read by :func:`read_actions_csv`)."""
    rows = [
        [a, int(v), int(n), name]
        for a, (v, n, name) in enumerate(zip(vocabulary.verbs, vocabulary.nouns, vocabulary.names))
    ]
    _write_rows(path, rows, ["id", "verb", "noun", "action"])


def write_id_list(path: PathLike, ids: Iterable[str]) -> None:
    """One id per line, no header (RU-LSTM ``*_videos.csv`` and ``*_ids.csv``)."""
    _write_rows(path, [[i] for i in ids])
