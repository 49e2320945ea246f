"""Action vocabularies (``actions.csv``): EK55 ``id,action,verb,noun``, EK100
``id,verb,noun,action``, and the headerless EGTEA Gaze+ file (:mod:`.egtea`)."""

from __future__ import annotations

from epic_protocol.annotations.egtea import read_egtea_actions
from epic_protocol.annotations.io import csv_rows, parse_int, write_csv_rows
from epic_protocol.annotations.records import (
    ActionVocabulary,
    AnnotationError,
    PathLike,
    vocabulary_from_columns,
)


def read_actions_csv(
    path: PathLike, *, num_verbs: int | None = None, num_nouns: int | None = None
) -> ActionVocabulary:
    """Read an action vocabulary: EK55 ``id,action,verb,noun``, EK100 ``id,verb,noun,action``,
    or the headerless EGTEA Gaze+ file of the RU-LSTM authors (rows ``id, verb_noun, name``,
    e.g. ``0, 0_0, Inspect/Read_recipe``).

    Ids must be 0..A-1 in order. Names are stripped of the leading space the EK55 file has.
    """
    rows = csv_rows(path)
    try:
        line, header = next(rows)
    except StopIteration:
        raise AnnotationError(f"{path}: empty action vocabulary") from None
    if header and header[0].isdigit():
        return read_egtea_actions(
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
        action_id = parse_int(path, line, "id", cells[column["id"]])
        if action_id != len(names):
            raise AnnotationError(
                f"{path}:{line}: action ids must run 0, 1, 2, ... in order; "
                f"expected {len(names)}, got {action_id}"
            )
        verbs.append(parse_int(path, line, "verb", cells[column["verb"]]))
        nouns.append(parse_int(path, line, "noun", cells[column["noun"]]))
        names.append(cells[column["action"]])
    return vocabulary_from_columns(
        path, verbs, nouns, names, num_verbs=num_verbs, num_nouns=num_nouns
    )


def write_actions_csv(path: PathLike, vocabulary: ActionVocabulary) -> None:
    """EK100-style ``actions.csv``: ``id, verb, noun, action`` (read by :func:`read_actions_csv`)."""
    rows = [
        [a, int(v), int(n), name]
        for a, (v, n, name) in enumerate(zip(vocabulary.verbs, vocabulary.nouns, vocabulary.names))
    ]
    write_csv_rows(path, rows, ["id", "verb", "noun", "action"])
