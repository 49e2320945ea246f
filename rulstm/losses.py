"""Losses for early action recognition over progressive observations.

Ranking losses of Ma et al., "Learning Activity Progression in LSTMs for Activity Detection
and Early Detection" (CVPR 2016): as more of an action is observed, the model should not
become less confident in the correct class.

With logits (B, T, C) for T progressive observations (oldest first) and labels (B,):

* detection score ``s_t = p_t(y)``, the softmax probability of the true class;
* discriminative margin ``s_t = p_t(y) - max_{y' != y} p_t(y')``;

and the ranking loss at step ``t >= 1`` is ``max(0, max_{t' < t} s_{t'} - s_t)``, averaged over
``t >= 1`` and the batch.

The running maximum ``max_{t' < t} s_{t'}`` is *detached*: it is a target that the current
score should reach, so the loss only pushes later scores up. Without the detach the gradient
would also push the earlier maximum down, i.e. it would reward being *less* confident early,
the opposite of what early recognition wants.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Ranking = Literal["none", "detection", "margin"]
Reduction = Literal["mean", "none"]


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(
            f"expected logits of shape (batch, time, classes), got {tuple(logits.shape)}"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected labels of shape ({logits.shape[0]},), got {tuple(labels.shape)}"
        )


def ranking_scores(logits: Tensor, labels: Tensor, *, ranking: Ranking = "detection") -> Tensor:
    """Per-step scores (B, T): detection score ``p_t(y)`` or margin ``p_t(y) - max p_t(y')``."""
    _check(logits, labels)
    probs = logits.softmax(dim=-1)  # (B, T, C)
    index = labels.view(-1, 1, 1).expand(-1, probs.shape[1], 1)  # (B,) -> (B, T, 1)
    true_prob = probs.gather(-1, index).squeeze(-1)  # (B, T)
    if ranking == "detection":
        return true_prob
    if ranking == "margin":
        if probs.shape[-1] < 2:
            raise ValueError("the margin ranking loss needs at least 2 classes")
        is_true = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, index, True)
        best_other = probs.masked_fill(is_true, float("-inf")).amax(dim=-1)  # (B, T)
        return true_prob - best_other
    raise ValueError(f"ranking must be 'detection' or 'margin', got {ranking!r}")


def ranking_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ranking: Ranking = "detection",
    reduction: Reduction = "mean",
) -> Tensor:
    """Mean over ``t >= 1`` and the batch of ``max(0, max_{t'<t} s_{t'} - s_t)`` (a scalar;
    ``reduction="none"``: the mean over ``t >= 1`` of each sample, (B,)).

    Zero when the scores never decrease; zero (with a gradient graph) when T == 1.
    """
    scores = ranking_scores(logits, labels, ranking=ranking)  # (B, T)
    if scores.shape[1] < 2:
        zero = scores[:, 0] * 0.0  # (B,)
        return zero if reduction == "none" else zero.sum()
    # Detached: the best earlier score is a target, see the module docstring.
    best_before = torch.cummax(scores.detach(), dim=1).values[:, :-1]  # (B, T-1)
    per_sample = F.relu(best_before - scores[:, 1:]).mean(dim=1)  # (B,)
    return per_sample if reduction == "none" else per_sample.mean()


def early_recognition_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    ranking: Ranking = "detection",
    weight: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Cross-entropy averaged over all T steps and the batch, plus ``weight`` times the
    ranking loss (``ranking="none"`` or ``weight=0`` give plain cross-entropy).

    Args:
        logits: (B, T, C) scores after each of T progressive observations.
        labels: (B,) class indices.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (each sample's loss, (B,), whose
            mean is the ``"mean"`` value).
    """
    _check(logits, labels)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    batch, num_steps, num_classes = logits.shape
    step_labels = labels.view(-1, 1).expand(batch, num_steps)  # (B,) -> (B, T)
    loss = F.cross_entropy(
        logits.reshape(-1, num_classes), step_labels.reshape(-1), reduction="none"
    ).view(batch, num_steps)  # (B*T,) -> (B, T)
    loss = loss.mean(dim=1)  # (B,)
    if ranking != "none" and weight != 0:
        loss = loss + weight * ranking_loss(logits, labels, ranking=ranking, reduction="none")
    elif ranking not in ("none", "detection", "margin"):
        raise ValueError(f"ranking must be 'none', 'detection' or 'margin', got {ranking!r}")
    return loss if reduction == "none" else loss.mean()
