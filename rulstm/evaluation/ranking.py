"""The ranking core: the rank of the true class of every segment at every time step, and
every next-action metric as a function of those ranks.

For a score vector ``s`` and a label ``y``, ``rank = #{c : s[c] >= s[y]}`` (1-based). The true
class is a top-k hit when ``rank <= k``. Ranks are tiny to keep (one integer per segment and
time step, instead of a score per class), stream over batches and gather across processes, and
every metric the next-action protocols report (top-k accuracy, class-mean top-k recall, Mean
TtA(k)) is a function of them. Validation logging and checkpoint selection
(:class:`~rulstm.evaluation.split_metrics.SplitMetrics`) and the test reports
(:func:`~rulstm.evaluation.outcomes.rank_outcomes`) both rank through :func:`rank_segments`,
which holds the two scoring rules once:

* a labelled (verb, noun) pair that is not an action of the vocabulary (action -1) is an
  action miss at every step (rank :data:`NEVER_RANKED`) and a class of its own
  (``num_actions + verb * PAIR_STRIDE + noun``), as the official EK100 evaluation counts it;
* a discarded segment (``valid`` False, no frame observable) is scored as all-zero scores, so
  its true class ranks last and is never a hit (protocols that drop such segments drop them
  after ranking).

Ties are broken pessimistically: a class scoring exactly as much as the true class ranks
before it. With real-valued network outputs ties do not occur; they matter for the samples
the reference scores as all zeros (too early in the video to observe anything), which are
then never a hit. The reference ranks with ``numpy.argsort`` there, whose order among equal
scores is an implementation detail of numpy's sort.

Inputs may be numpy arrays or torch tensors (on any device); results are numpy arrays or
Python floats. Accuracies and recalls are fractions in [0, 1]; reports multiply by 100.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from epic_protocol.annotations import ActionVocabulary

ArrayLike = np.ndarray | torch.Tensor | Sequence

# Rows per chunk when ranking large score arrays, so that the (rows, steps, classes)
# comparison mask stays small (~100 MB for EK100 actions at 8 steps).
_CHUNK_ROWS = 1024


def _tensor(values: ArrayLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach() if dtype is None else values.detach().to(dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype)


def _labels(labels: ArrayLike, num_rows: int) -> torch.Tensor:
    labels = _tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() != num_rows:
        raise ValueError(f"expected {num_rows} labels (one per score row), got {labels.numel()}")
    return labels


def softmax(scores: ArrayLike) -> torch.Tensor:
    """Softmax over the last axis, in float32 at least (half-precision logits overflow)."""
    scores = _tensor(scores)
    if not scores.is_floating_point() or scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    return torch.softmax(scores, dim=-1)


def marginalize(
    action_scores: ArrayLike,
    action_to_class: ArrayLike,
    *,
    num_classes: int,
    from_logits: bool = True,
) -> torch.Tensor:
    """Verb (or noun) probabilities from action scores: the softmax over actions, summed over
    the actions sharing each verb (noun).

    ``action_scores`` is ``(..., A)``; ``action_to_class[a]`` is the verb (noun) of action
    ``a``; the result is ``(..., num_classes)``. A class that no action uses gets probability
    0. (The reference implementation instead copies the probability of action 0 there, which
    makes an unused class look likely; we deliberately do not.)
    """
    probabilities = softmax(action_scores) if from_logits else _tensor(action_scores).float()
    index = _tensor(action_to_class, dtype=torch.long).to(probabilities.device).reshape(-1)
    if index.numel() != probabilities.shape[-1]:
        raise ValueError(
            f"action_to_class has {index.numel()} entries but the scores have "
            f"{probabilities.shape[-1]} actions"
        )
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_classes):
        raise ValueError(
            f"action_to_class holds class ids outside 0..{num_classes - 1} "
            f"(min {int(index.min())}, max {int(index.max())})"
        )
    marginal = probabilities.new_zeros((*probabilities.shape[:-1], num_classes))
    # (..., A) scattered-added into (..., C) along the class axis
    return marginal.index_add_(-1, index, probabilities)


def true_class_rank(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """1-based rank of the true class, ties counted against it.

    ``scores`` is ``(N, C)`` or ``(N, S, C)`` (S time steps), ``labels`` is ``(N,)`` with
    values in ``0..C-1``. Returns int64 ranks of shape ``(N,)`` or ``(N, S)``.
    """
    scores = _tensor(scores)
    if scores.ndim < 2:
        raise ValueError(f"scores must be (N, C) or (N, S, C), got shape {tuple(scores.shape)}")
    labels = _labels(labels, scores.shape[0]).to(scores.device)
    num_classes = scores.shape[-1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}; got min {int(labels.min())}, "
            f"max {int(labels.max())} (drop unlabelled samples, label -1, before scoring)"
        )
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN: the true class cannot be ranked")
    ranks = []
    for start in range(0, scores.shape[0], _CHUNK_ROWS):
        chunk = scores[start : start + _CHUNK_ROWS]
        chunk_labels = labels[start : start + _CHUNK_ROWS]
        # (n,) -> (n, 1, ..., 1) so that the gather index matches the score layout
        index = chunk_labels.reshape(-1, *([1] * (chunk.ndim - 1)))
        index = index.expand(*chunk.shape[:-1], 1)
        true_scores = chunk.gather(-1, index)  # (n, [S,] 1)
        ranks.append((chunk >= true_scores).sum(dim=-1).cpu())
    if not ranks:
        return np.zeros(scores.shape[:-1], dtype=np.int64)
    return torch.cat(ranks).numpy().astype(np.int64)


def topk_hits_from_ranks(ranks: ArrayLike, *, k: int) -> np.ndarray:
    """Boolean top-k hits from ranks (same shape)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return np.asarray(ranks) <= k


def accuracy_from_ranks(ranks: ArrayLike, *, k: int) -> np.ndarray:
    """Top-k accuracy: the fraction of samples (axis 0) whose true class is in the top k.
    ``(N,)`` ranks give a 0-d array, ``(N, S)`` ranks an ``(S,)`` array; NaN when N is 0."""
    hits = topk_hits_from_ranks(ranks, k=k)
    if hits.shape[0] == 0:
        return np.full(hits.shape[1:], np.nan)
    return hits.mean(axis=0)


def class_mean_recall_from_ranks(
    ranks: ArrayLike,
    labels: ArrayLike,
    *,
    k: int,
    classes: Collection[int] | None = None,
) -> np.ndarray:
    """Class-mean top-k recall: per-class top-k recall averaged over the classes that occur in
    ``labels`` and, when ``classes`` is given, belong to it (the reference's ``topk_recall``).
    NaN when no class qualifies."""
    hits = topk_hits_from_ranks(ranks, k=k)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != hits.shape[0]:
        raise ValueError(f"{hits.shape[0]} rank rows but {labels.shape[0]} labels")
    present = np.unique(labels)
    if classes is not None:
        present = np.intersect1d(present, np.fromiter(classes, dtype=np.int64))
    if present.size == 0:
        return np.full(hits.shape[1:], np.nan)
    per_class = [hits[labels == c].mean(axis=0) for c in present]
    return np.mean(per_class, axis=0)


def time_to_action_from_ranks(
    ranks: ArrayLike, *, times: Sequence[float], k: int = 5
) -> np.ndarray:
    """Per-sample time to action TtA(k): the anticipation time of the *earliest* step (the
    largest time) at which the true class is in the top k, or 0 when it never is.

    This is the reference's ``tta``: it looks for the first hit only; a later miss does not
    matter. ``ranks`` is ``(N, S)`` with steps oldest first and ``times`` its S anticipation
    times (2.0 ... 0.25 s)."""
    hits = topk_hits_from_ranks(ranks, k=k)
    if hits.ndim != 2 or hits.shape[1] != len(times):
        raise ValueError(f"ranks must be (N, {len(times)}) to match times, got {hits.shape}")
    # A virtual last step at time 0 that always hits gives "never" its value.
    with_never = np.concatenate([hits, np.ones((hits.shape[0], 1), dtype=bool)], axis=1)
    step_times = np.append(np.asarray(times, dtype=np.float64), 0.0)
    return step_times[with_never.argmax(axis=1)]


def mean_time_to_action_from_ranks(
    ranks: ArrayLike, *, times: Sequence[float], k: int = 5
) -> float:
    """Mean TtA(k) in seconds (NaN for no samples)."""
    per_sample = time_to_action_from_ranks(ranks, times=times, k=k)
    return float(per_sample.mean()) if per_sample.size else float("nan")


# Score-based conveniences: rank, then apply the rank-based metric.


def topk_accuracy(scores: ArrayLike, labels: ArrayLike, *, k: int) -> np.ndarray:
    """Top-k accuracy of ``(N, C)`` (0-d result) or ``(N, S, C)`` (``(S,)``) scores."""
    return accuracy_from_ranks(true_class_rank(scores, labels), k=k)


def class_mean_topk_recall(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int,
    classes: Collection[int] | None = None,
) -> np.ndarray:
    """Class-mean top-k recall over the classes present in ``labels`` (and in ``classes``)."""
    return class_mean_recall_from_ranks(
        true_class_rank(scores, labels), labels, k=k, classes=classes
    )


def mean_time_to_action(
    scores: ArrayLike, labels: ArrayLike, *, times: Sequence[float], k: int = 5
) -> float:
    """Mean TtA(k) in seconds of ``(N, S, C)`` scores (see :func:`time_to_action_from_ranks`)."""
    return mean_time_to_action_from_ranks(true_class_rank(scores, labels), times=times, k=k)


def topk_hits_per_class(
    scores: torch.Tensor, labels: torch.Tensor, *, k: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (top-k hits, sample counts) for ``(N, C)`` scores, on the scores' device.

    Meant for streaming class-mean recall during validation: sum both tensors over batches
    (and processes), then average ``hits / counts`` over classes with ``counts > 0``.
    """
    labels = labels.reshape(-1).long()
    true_scores = scores.gather(-1, labels.unsqueeze(-1))  # (N, 1)
    hits = ((scores >= true_scores).sum(dim=-1) <= k).to(scores.dtype)  # (N,)
    hits_per_class = scores.new_zeros(num_classes).index_add_(0, labels, hits)
    counts = scores.new_zeros(num_classes).index_add_(0, labels, torch.ones_like(hits))
    return hits_per_class, counts


def class_mean_from_counts(hits_per_class: ArrayLike, counts: ArrayLike) -> float:
    """Class-mean recall from :func:`topk_hits_per_class` sums (NaN when no class occurs)."""
    hits = _tensor(hits_per_class).double().cpu()
    counts = _tensor(counts).double().cpu()
    present = counts > 0
    if not bool(present.any()):
        return float("nan")
    return float((hits[present] / counts[present]).mean())


# --------------------------------------------------------------------------- segments

#: Class ids of (verb, noun) pairs outside the vocabulary start at ``num_classes``; each
#: distinct pair is its own class (the official EK100 evaluation keys actions by the pair).
PAIR_STRIDE = 1 << 20
#: The rank of a true class the model cannot predict (a pair outside the vocabulary): beyond
#: every k, even for vocabularies smaller than k (``num_classes + 1`` would be a top-5 hit
#: with 3 classes).
NEVER_RANKED = 1 << 40


def uid_index(uids: Sequence[str]) -> torch.Tensor:
    """A stable 63-bit integer per segment uid (the same in every process and run), for
    batches that do not carry their position in the split."""
    return torch.tensor(
        [
            int.from_bytes(hashlib.blake2b(str(uid).encode(), digest_size=8).digest(), "little")
            & (2**63 - 1)
            for uid in uids
        ],
        dtype=torch.long,
    )


#: The tasks of next-action anticipation; verb and noun scores are marginalised from actions.
TASKS: tuple[str, ...] = ("verb", "noun", "action")


@dataclass(frozen=True)
class SegmentRanks:
    """What :func:`rank_segments` returns, for N segments and S steps.

    ``ranks[task]`` is ``(N, S)`` int64 (0 where the label is unknown), ``labels[task]``
    ``(N,)`` int64 (-1 unknown; a pair outside the vocabulary has its own action class),
    ``outside_vocabulary`` ``(N,)`` bool. ``valid`` ``(N,)`` bool is False for discarded
    segments (ranked as all-zero scores)."""

    ranks: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    outside_vocabulary: np.ndarray
    valid: np.ndarray


def _label_array(values: ArrayLike, n: int, task: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    labels = np.asarray(values, dtype=np.int64).reshape(-1)
    if labels.shape != (n,):
        raise ValueError(f"expected {n} {task} labels, got {labels.shape[0]}")
    return labels


def rank_segments(
    scores: ArrayLike,
    *,
    action: ArrayLike,
    verb: ArrayLike,
    noun: ArrayLike,
    valid: ArrayLike | None = None,
    vocabulary: ActionVocabulary | None = None,
) -> SegmentRanks:
    """Rank the true classes of N segments: the one place of the scoring rules (module doc).

    ``scores`` are action logits ``(N, S, A)`` (steps oldest first); ``action``, ``verb``,
    ``noun`` ``(N,)`` (-1 unknown); ``valid`` ``(N,)`` (default all True). With a
    ``vocabulary`` the verb and noun ranks are computed too, from action scores marginalised
    over it; without, only the action's. Rows are processed in chunks, so memory stays
    bounded. Raises ``ValueError`` on shapes that do not match or NaN scores.
    """
    scores = _tensor(scores)
    if scores.ndim != 3:
        raise ValueError(f"action scores must be (N, S, A), got shape {tuple(scores.shape)}")
    n, num_steps, num_actions = scores.shape
    if vocabulary is not None and vocabulary.num_actions != num_actions:
        raise ValueError(
            f"action scores must be (N, S, {vocabulary.num_actions}), got {tuple(scores.shape)}"
        )
    labels = {
        "verb": _label_array(verb, n, "verb"),
        "noun": _label_array(noun, n, "noun"),
        "action": _label_array(action, n, "action"),
    }
    if valid is None:
        valid_rows = np.ones(n, dtype=bool)
    else:
        if isinstance(valid, torch.Tensor):
            valid = valid.detach().cpu().numpy()
        valid_rows = np.asarray(valid, dtype=bool).reshape(-1)
        if valid_rows.shape != (n,):
            raise ValueError(f"{n} score rows but {valid_rows.shape[0]} valid flags")
    tasks = TASKS if vocabulary is not None else ("action",)
    ranks = {task: np.zeros((n, num_steps), dtype=np.int64) for task in tasks}
    maps = {}
    if vocabulary is not None:
        maps = {
            "verb": (torch.from_numpy(vocabulary.verbs).to(scores.device), vocabulary.num_verbs),
            "noun": (torch.from_numpy(vocabulary.nouns).to(scores.device), vocabulary.num_nouns),
        }
    for start in range(0, n, _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        chunk = scores[rows].float()
        # (n,) -> (n, 1, 1): a discarded segment scores zero for every class
        keep = torch.from_numpy(valid_rows[rows]).to(chunk.device).reshape(-1, 1, 1)
        task_scores = {"action": chunk}
        for task, (index, num_classes) in maps.items():
            task_scores[task] = marginalize(chunk, index, num_classes=num_classes)
        for task in tasks:
            zeroed = torch.where(keep, task_scores[task], torch.zeros_like(task_scores[task]))
            task_labels = labels[task][rows]
            known = task_labels >= 0
            if known.any():
                selected = zeroed[torch.from_numpy(known).to(zeroed.device)]
                ranks[task][rows][known] = true_class_rank(selected, task_labels[known])
    outside = (labels["action"] < 0) & (labels["verb"] >= 0) & (labels["noun"] >= 0)
    labels["action"] = np.where(
        outside, num_actions + labels["verb"] * PAIR_STRIDE + labels["noun"], labels["action"]
    )
    ranks["action"][outside] = NEVER_RANKED
    return SegmentRanks(ranks=ranks, labels=labels, outside_vocabulary=outside, valid=valid_rows)
