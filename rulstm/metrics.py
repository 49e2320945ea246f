"""EPIC-KITCHENS anticipation metrics as pure functions.

Every metric is computed from the *rank of the true class*: for a score vector ``s`` and a
label ``y``, ``rank = #{c : s[c] >= s[y]}`` (1-based). The true class is a top-k hit when
``rank <= k``. Ranks are tiny to keep (one integer per sample and time step, instead of a
score per class), stream over batches and gather across processes, and every metric the
EPIC protocols report (top-k accuracy, class-mean top-k recall, Mean TtA(k)) is a function
of them.

Ties are broken pessimistically: a class scoring exactly as much as the true class ranks
before it. With real-valued network outputs ties do not occur; they matter for the samples
the reference scores as all zeros (too early in the video to observe anything), which are
then never a hit. The reference ranks with ``numpy.argsort`` there, whose order among equal
scores is an implementation detail of numpy's sort.

Inputs may be numpy arrays or torch tensors (on any device); results are numpy arrays or
Python floats. Accuracies and recalls are fractions in [0, 1]; reports multiply by 100.

:class:`SplitMetrics` wraps them as a ``torchmetrics.Metric`` for the LightningModule's
validation and test epochs: per-segment records in ``cat`` states, synchronised across
processes by torchmetrics and de-duplicated by segment index, so every segment counts once
whatever the number of processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import Literal

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

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


# --------------------------------------------------------------------------- streaming metric

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


def first_occurrences(index: torch.Tensor) -> torch.Tensor:
    """Positions (ascending) of the first occurrence of each value of ``index`` (N,)."""
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    first = torch.ones_like(sorted_index, dtype=torch.bool)
    first[1:] = sorted_index[1:] != sorted_index[:-1]
    return torch.sort(order[first]).values


def _cat(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor | None:
    """A ``cat`` state as one tensor (it is a list before the first sync); ``None`` if empty."""
    if isinstance(state, list) and not state:
        return None
    return dim_zero_cat(state)


class SplitMetrics(Metric):
    """Action top-1/top-5 accuracy, class-mean top-5 recall, mean loss and mean fusion
    weights of one split, each segment counted once.

    States are per-segment and ``cat``-reduced: the segment's position in the split
    (``index``), the rank of its true action at each scored step (``ranks`` (N, S)), its
    action class (``labels`` (N,)), its loss (``losses`` (N,), NaN when it has none) and its
    mean fusion weights (``weights`` (N, M), fusion nets only). :meth:`compute` keeps the
    first record of each index, so the repeats that Lightning's ``DistributedSampler`` pads
    a split with count once and every process count gives the same values.

    Scoring, per segment (``labels`` as in :class:`rulstm.data.AnticipationBatch`):

    * known action: the rank of its logit;
    * labelled (verb, noun) pair that is not an action of the vocabulary (action -1): a miss
      at every step, and a class of its own in the class-mean recall, as the official EK100
      evaluation counts it;
    * unlabelled (verb and noun -1, test splits): not scored;
    * discarded (``valid`` False, no frame observable): dropped (``discarded="drop"``, EK55
      reference) or scored as all-zero scores, never a hit (``"zeros"``, EK100 reference).

    Only the rank of the true class is kept, never the (N, S, C) scores, so EK55/EK100
    validation (thousands of classes) stays light.
    """

    full_state_update = False

    def __init__(self, *, discarded: Literal["drop", "zeros"] = "drop") -> None:
        super().__init__()
        if discarded not in ("drop", "zeros"):
            raise ValueError(f"discarded must be 'drop' or 'zeros', got {discarded!r}")
        self.discarded = discarded
        # "seen": the index of every segment of the split that went through, scored or not
        # (dropped, unlabelled), so that a full run is told from a partial one.
        for name in ("index", "seen", "ranks", "labels", "losses", "weights"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        logits: torch.Tensor,
        *,
        action: torch.Tensor,
        verb: torch.Tensor,
        noun: torch.Tensor,
        valid: torch.Tensor,
        index: torch.Tensor,
        losses: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> None:
        """One batch: ``logits`` (B, S, C); ``action``, ``verb``, ``noun``, ``index`` (B,)
        long; ``valid`` (B,) bool; ``losses`` (B,) (NaN where none); ``weights`` (B, S, M)."""
        num_classes = logits.shape[-1]
        action, verb, noun = action.long(), verb.long(), noun.long()
        outside = (action < 0) & (verb >= 0) & (noun >= 0)
        keep = (action >= 0) | outside
        if self.discarded == "drop":
            keep &= valid.bool()
        # Appended even when empty: every process must hold a tensor per state for the sync.
        logits, valid = logits[keep].detach().float(), valid[keep].bool().cpu()
        action, outside = action[keep], outside[keep]
        labels = torch.where(
            outside, num_classes + verb[keep] * PAIR_STRIDE + noun[keep], action
        )  # (B',)
        ranks = torch.full(logits.shape[:2], NEVER_RANKED, dtype=torch.long)  # (B', S)
        known = ~outside.cpu()
        if bool(known.any()):
            ranks[known] = torch.from_numpy(true_class_rank(logits[~outside], action[~outside]))
        # All-zero scores: the true class ranks last.
        ranks[~valid & known] = num_classes
        self.seen.append(index.long().to(logits.device))
        self.index.append(index.long().to(logits.device)[keep])
        self.ranks.append(ranks.to(logits.device))
        self.labels.append(labels)
        if losses is None:
            losses = torch.full(keep.shape, float("nan"), device=logits.device)
        self.losses.append(losses.detach().float()[keep])
        if weights is not None:
            # (B', S, M) -> (B', M): each segment's weights averaged over its steps
            self.weights.append(weights.detach().float()[keep].mean(dim=1))

    def compute(self) -> dict[str, torch.Tensor]:
        """``top1``, ``top5``, ``recall5`` (percent, (S,) each), ``loss`` (scalar, the mean
        over segments with a loss) and ``weights`` ((M,), fusion only); ``{}`` when no
        segment was scored. ``num_segments`` counts the segments scored, ``num_seen`` the
        distinct segments of the split that went through (discarded and unlabelled ones too)."""
        index = _cat(self.index)
        if index is None or index.numel() == 0:
            return {}
        first = first_occurrences(index.cpu())
        ranks = dim_zero_cat(self.ranks).cpu()[first].numpy()
        labels = dim_zero_cat(self.labels).cpu()[first].numpy()
        losses = dim_zero_cat(self.losses).cpu()[first]
        values: dict[str, torch.Tensor] = {
            "top1": torch.as_tensor(accuracy_from_ranks(ranks, k=1) * 100),
            "top5": torch.as_tensor(accuracy_from_ranks(ranks, k=5) * 100),
            "recall5": torch.as_tensor(class_mean_recall_from_ranks(ranks, labels, k=5) * 100),
            "num_segments": torch.tensor(len(first)),
            "num_seen": torch.tensor(len(torch.unique(dim_zero_cat(self.seen)))),
        }
        scored = ~torch.isnan(losses)
        if bool(scored.any()):
            values["loss"] = losses[scored].double().mean()
        weights = _cat(self.weights)
        if weights is not None and weights.numel():
            values["weights"] = weights.cpu()[first].double().mean(dim=0)
        return values
