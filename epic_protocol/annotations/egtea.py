"""EGTEA Gaze+ annotation files of the RU-LSTM authors that differ from the EPIC ones: the
headerless action vocabulary (rows ``id, verb_noun, name``, e.g. ``0, 0_0, Inspect/Read_recipe``).
Its splits are RU-LSTM split CSVs (:mod:`.rulstm_csv`)."""

from __future__ import annotations

from collections.abc import Sequence

from epic_protocol.annotations.io import parse_int
from epic_protocol.annotations.records import (
    ActionVocabulary,
    AnnotationError,
    PathLike,
    vocabulary_from_columns,
)


def read_egtea_actions(
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
        action_id = parse_int(path, line, "id", cells[0])
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
        verbs.append(parse_int(path, line, "verb", verb))
        nouns.append(parse_int(path, line, "noun", noun))
        names.append(cells[2])
    return vocabulary_from_columns(
        path, verbs, nouns, names, num_verbs=num_verbs, num_nouns=num_nouns
    )
