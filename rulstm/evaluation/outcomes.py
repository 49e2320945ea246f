"""Per-segment outcomes: the rank of each true verb, noun and action at each anticipation time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from epic_protocol.annotations import ActionVocabulary
from rulstm.evaluation.records import SegmentRecords
from rulstm.metrics import NEVER_RANKED, PAIR_STRIDE, ArrayLike, marginalize, true_class_rank

TASKS: tuple[str, ...] = ("verb", "noun", "action")


@dataclass
class RankedOutcomes(SegmentRecords):
    """Per-sample outcomes: the rank of each true class at each anticipation time.

    ``ranks[task]`` is ``(N, S)`` (1-based, ties against the true class; 0 where the label is
    unknown), ``labels[task]`` is ``(N,)`` (-1 when unknown), ``valid`` is ``(N,)`` (False for
    samples the reference discards, ranked as if scored all zeros). ``outside_vocabulary``
    ``(N,)`` marks labelled segments whose (verb, noun) pair is not an action of the
    vocabulary: their action label is a class id of its own, ``num_actions + verb *
    PAIR_STRIDE + noun``, and their action rank :data:`~rulstm.metrics.NEVER_RANKED` (never
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


_CHUNK_ROWS = 1024


def _numpy(values: ArrayLike, dtype: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


def _ranks_with_unknown(scores: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Ranks of known labels; rows whose label is -1 get rank 0 (excluded later)."""
    ranks = np.zeros((len(labels), *scores.shape[1:-1]), dtype=np.int64)
    known = labels >= 0
    if known.any():
        ranks[known] = true_class_rank(
            scores[torch.from_numpy(known).to(scores.device)], labels[known]
        )
    return ranks


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
    Large inputs are processed in chunks of rows, so memory stays bounded.
    """
    scores = (
        action_scores.detach()
        if isinstance(action_scores, torch.Tensor)
        else torch.as_tensor(np.asarray(action_scores))
    )
    if scores.ndim != 3 or scores.shape[-1] != vocabulary.num_actions:
        raise ValueError(
            f"action scores must be (N, S, {vocabulary.num_actions}), got {tuple(scores.shape)}"
        )
    n = scores.shape[0]
    valid_rows = np.ones(n, dtype=bool) if valid is None else _numpy(valid, bool)
    labels = {"verb": _numpy(verb, np.int64), "noun": _numpy(noun, np.int64)}
    labels["action"] = _numpy(action, np.int64)
    if len(uids) != n or valid_rows.shape != (n,):
        raise ValueError(f"{n} score rows but {len(uids)} uids and {valid_rows.shape[0]} flags")
    for task, values in labels.items():
        if values.shape != (n,):
            raise ValueError(f"expected {n} {task} labels, got {values.shape[0]}")
    verb_of_action = torch.from_numpy(vocabulary.verbs).to(scores.device)
    noun_of_action = torch.from_numpy(vocabulary.nouns).to(scores.device)
    ranks: dict[str, list[np.ndarray]] = {task: [] for task in TASKS}
    for start in range(0, n, _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        chunk = scores[rows].float()
        # (n,) -> (n, 1, 1): a discarded sample scores zero for every class
        keep = torch.from_numpy(valid_rows[rows]).to(chunk.device).reshape(-1, 1, 1)
        task_scores = {
            "verb": marginalize(chunk, verb_of_action, num_classes=vocabulary.num_verbs),
            "noun": marginalize(chunk, noun_of_action, num_classes=vocabulary.num_nouns),
            "action": chunk,
        }
        for task in TASKS:
            zeroed = torch.where(keep, task_scores[task], torch.zeros_like(task_scores[task]))
            ranks[task].append(_ranks_with_unknown(zeroed, labels[task][rows]))
    ranked = {
        task: np.concatenate(parts) if parts else np.zeros((0, scores.shape[1]), np.int64)
        for task, parts in ranks.items()
    }
    outside = (labels["action"] < 0) & (labels["verb"] >= 0) & (labels["noun"] >= 0)
    num_actions = vocabulary.num_actions
    labels["action"] = np.where(
        outside, num_actions + labels["verb"] * PAIR_STRIDE + labels["noun"], labels["action"]
    )
    ranked["action"][outside] = NEVER_RANKED
    return RankedOutcomes(
        uids=[str(uid) for uid in uids],
        labels=labels,
        ranks=ranked,
        valid=valid_rows,
        outside_vocabulary=outside,
    )
