"""Per-segment outcomes: the rank of each true verb, noun and action at each anticipation time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from epic_protocol.annotations import ActionVocabulary
from rulstm.evaluation.ranking import TASKS, ArrayLike, rank_segments
from rulstm.evaluation.records import SegmentRecords


@dataclass
class RankedOutcomes(SegmentRecords):
    """Per-sample outcomes: the rank of each true class at each anticipation time.

    ``ranks[task]`` is ``(N, S)`` (1-based, ties against the true class; 0 where the label is
    unknown), ``labels[task]`` is ``(N,)`` (-1 when unknown), ``valid`` is ``(N,)`` (False for
    samples the reference discards, ranked as if scored all zeros). ``outside_vocabulary``
    ``(N,)`` marks labelled segments whose (verb, noun) pair is not an action of the
    vocabulary: their action label is a class id of its own, ``num_actions + verb *
    PAIR_STRIDE + noun``, and their action rank :data:`~rulstm.evaluation.ranking.NEVER_RANKED` (never
    a hit, whatever k).
    """

    uids: list[str]
    labels: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    valid: np.ndarray
    outside_vocabulary: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.uids)
        if self.outside_vocabulary is None:
            self.outside_vocabulary = np.zeros(n, dtype=bool)
        if self.outside_vocabulary.shape != (n,):
            raise ValueError(
                f"outside_vocabulary must be ({n},), got {self.outside_vocabulary.shape}"
            )
        for task in TASKS:
            if self.labels[task].shape != (n,) or self.ranks[task].shape[:1] != (n,):
                raise ValueError(
                    f"{task}: expected {n} labels and rank rows, got labels "
                    f"{self.labels[task].shape} and ranks {self.ranks[task].shape}"
                )
        if self.valid.shape != (n,):
            raise ValueError(f"valid must be ({n},), got {self.valid.shape}")

    @property
    def num_steps(self) -> int:
        return int(self.ranks["action"].shape[1])


def rank_outcomes(
    action_scores: ArrayLike,
    *,
    vocabulary: ActionVocabulary,
    verb: ArrayLike,
    noun: ArrayLike,
    action: ArrayLike,
    uids: Sequence[str],
    valid: ArrayLike | None = None,
) -> RankedOutcomes:
    """Rank the true verb, noun and action of every sample.

    ``action_scores`` are action logits ``(N, S, A)`` (anticipation steps oldest first);
    verb and noun probabilities are marginalised from them. Rows with ``valid`` False are
    scored as all zeros (actions, verbs and nouns), like the reference's discarded samples.
    A row with known verb and noun but action -1 (a pair the vocabulary lacks) is an action
    miss at every step, in a class of its own (see :class:`RankedOutcomes`), as the official
    EK100 evaluation, which keys actions by the (verb, noun) pair, counts it.
    Large inputs are processed in chunks of rows, so memory stays bounded. The rules live
    in :func:`~rulstm.evaluation.ranking.rank_segments`, shared with validation logging.
    """
    ranked = rank_segments(
        action_scores, action=action, verb=verb, noun=noun, valid=valid, vocabulary=vocabulary
    )
    if len(uids) != len(ranked.valid):
        raise ValueError(f"{len(ranked.valid)} score rows but {len(uids)} uids")
    return RankedOutcomes(
        uids=[str(uid) for uid in uids],
        labels=ranked.labels,
        ranks=ranked.ranks,
        valid=ranked.valid,
        outside_vocabulary=ranked.outside_vocabulary,
    )
