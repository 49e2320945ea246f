"""Class-count tables and the class subsets of each protocol (EK55 many-shot, EK100 unseen/tail)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epic_protocol.annotations import (
    ActionVocabulary,
    read_class_ids,
    read_id_list,
    read_many_shot_actions,
)
from rulstm.resources import resolve_path

#: Verb and noun label-space sizes of each dataset (some classes no action uses).
CLASS_COUNTS: dict[str, tuple[int, int]] = {"ek55": (125, 352), "ek100": (97, 300)}


@dataclass(frozen=True)
class ManyShotClasses:
    """EK55 classes over which class-mean recall is averaged."""

    verbs: frozenset[int]
    nouns: frozenset[int]
    actions: frozenset[int]
    source: str = "custom"


def load_many_shot(
    vocabulary: ActionVocabulary,
    *,
    verbs_csv: str | Path = "builtin:ek55/EPIC_many_shot_verbs.csv",
    nouns_csv: str | Path = "builtin:ek55/EPIC_many_shot_nouns.csv",
    actions_csv: str | Path = "builtin:ek55/epic/EPIC_many_shot_actions.csv",
    official_actions: bool = False,
) -> ManyShotClasses:
    """Many-shot verbs and nouns from the EPIC lists, and many-shot actions either as the
    reference defines them (default: an action whose verb *or* noun is many-shot) or as
    the official EPIC list (``official_actions``; pairs missing from the vocabulary are
    ignored)."""
    verbs = read_class_ids(resolve_path(verbs_csv))
    nouns = read_class_ids(resolve_path(nouns_csv))
    if official_actions:
        pairs = read_many_shot_actions(resolve_path(actions_csv))
        actions = frozenset(a for a in (vocabulary.action_of(v, n) for v, n in pairs) if a >= 0)
        source = f"official list ({len(pairs)} pairs, {len(actions)} in the vocabulary)"
    else:
        actions = frozenset(
            a
            for a, (v, n) in enumerate(zip(vocabulary.verbs, vocabulary.nouns))
            if int(v) in verbs or int(n) in nouns
        )
        source = "reference (verb or noun many-shot)"
    return ManyShotClasses(verbs=verbs, nouns=nouns, actions=actions, source=source)


@dataclass(frozen=True)
class EK100Subsets:
    """Sample subsets of the EK100 protocol, by narration id.

    ``unseen`` may hold narration ids (``P18_01_0``, RU-LSTM's list) or participant ids
    (``P18``, EPIC's list): a sample is unseen when either its uid or its participant is listed.
    ``tail[task]`` holds the narration ids of samples whose ``task`` class is a tail class.
    """

    unseen: frozenset[str]
    tail: Mapping[str, frozenset[str]]

    def unseen_mask(self, uids: Sequence[str]) -> np.ndarray:
        return np.array(
            [uid in self.unseen or uid.split("_", 1)[0] in self.unseen for uid in uids],
            dtype=bool,
        )

    def tail_mask(self, task: str, uids: Sequence[str]) -> np.ndarray:
        ids = self.tail[task]
        return np.array([uid in ids for uid in uids], dtype=bool)


def load_ek100_subsets(
    *,
    unseen_ids: str | Path = "builtin:ek100/validation_unseen_participants_ids.csv",
    tail_verb_ids: str | Path = "builtin:ek100/validation_tail_verbs_ids.csv",
    tail_noun_ids: str | Path = "builtin:ek100/validation_tail_nouns_ids.csv",
    tail_action_ids: str | Path = "builtin:ek100/validation_tail_actions_ids.csv",
) -> EK100Subsets:
    return EK100Subsets(
        unseen=frozenset(read_id_list(resolve_path(unseen_ids))),
        tail={
            task: frozenset(read_id_list(resolve_path(path)))
            for task, path in (
                ("verb", tail_verb_ids),
                ("noun", tail_noun_ids),
                ("action", tail_action_ids),
            )
        },
    )
