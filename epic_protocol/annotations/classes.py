"""Class and id lists: class names, many-shot/tail class ids, many-shot actions, id lists
(videos, participants, uids)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from epic_protocol.annotations.io import csv_rows, parse_int, write_csv_rows
from epic_protocol.annotations.records import AnnotationError, PathLike


def read_class_ids(path: PathLike) -> frozenset[int]:
    """A class-id list: the first column of ``EPIC_many_shot_{verbs,nouns}.csv``
    (``verb_class,verb``) or ``EPIC_100_tail_{verbs,nouns}.csv`` (``verb``)."""
    rows = csv_rows(path)
    next(rows, None)  # header
    return frozenset(parse_int(path, line, "class id", cells[0]) for line, cells in rows)


def read_many_shot_actions(path: PathLike) -> frozenset[tuple[int, int]]:
    """The official EK55 many-shot actions (``EPIC_many_shot_actions.csv``) as (verb, noun)."""
    rows = csv_rows(path)
    _, header = next(rows, (1, []))
    if "verb_class" not in header or "noun_class" not in header:
        raise AnnotationError(f"{path}:1: header needs verb_class and noun_class")
    v, n = header.index("verb_class"), header.index("noun_class")
    return frozenset(
        (parse_int(path, line, "verb_class", c[v]), parse_int(path, line, "noun_class", c[n]))
        for line, c in rows
    )


def read_id_list(path: PathLike, *, header: str | None = None) -> list[str]:
    """One id per line: RU-LSTM ``validation_*_ids.csv`` (no header) or EPIC
    ``EPIC_100_unseen_participant_ids_*.csv`` (header ``participant_id``). A first line equal
    to ``header`` (or any of the known headers) is skipped."""
    known_headers = {"participant_id", "narration_id", "uid", "video_id"}
    if header is not None:
        known_headers.add(header)
    ids = [cells[0] for _, cells in csv_rows(path)]
    if ids and ids[0] in known_headers:
        ids = ids[1:]
    return ids


def read_class_names(path: PathLike) -> list[str]:
    """Class names in id order from ``EPIC_verb_classes.csv`` / ``EPIC_noun_classes.csv``
    (``verb_id,class_key,...``) or ``EPIC_100_{verb,noun}_classes.csv`` (``id,key,...``)."""
    rows = csv_rows(path)
    line, header = next(rows, (1, []))
    if len(header) < 2:
        raise AnnotationError(f"{path}:{line}: expected an id column and a name column")
    names: list[str] = []
    for line, cells in rows:
        class_id = parse_int(path, line, header[0], cells[0])
        if class_id != len(names):
            raise AnnotationError(f"{path}:{line}: class ids must run 0, 1, 2, ... in order")
        names.append(cells[1])
    return names


def write_class_names(path: PathLike, names: Sequence[str], *, category: str = "") -> None:
    """``EPIC_100_{verb,noun}_classes.csv`` style: ``id, key, instances, category``."""
    rows = [[i, name, f"['{name}']", category] for i, name in enumerate(names)]
    write_csv_rows(path, rows, ["id", "key", "instances", "category"])


def write_id_list(path: PathLike, ids: Iterable[str]) -> None:
    """One id per line, no header (RU-LSTM ``*_videos.csv`` and ``*_ids.csv``)."""
    write_csv_rows(path, [[i] for i in ids])
