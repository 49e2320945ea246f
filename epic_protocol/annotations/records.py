"""Annotation records: :class:`Segment`, :class:`ActionVocabulary`, and the error every
reader raises."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epic_protocol.errors import DataError

PathLike = str | Path


class AnnotationError(DataError, ValueError):
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


def vocabulary_from_columns(
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
