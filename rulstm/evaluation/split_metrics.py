"""The per-split torchmetrics state of validation and test: the LightningModule's logged
action metrics (and thereby checkpoint selection), ranked by the ranking core."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from rulstm.evaluation.ranking import (
    accuracy_from_ranks,
    class_mean_recall_from_ranks,
    rank_segments,
)
from rulstm.evaluation.records import first_occurrences


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
    first record of each index (:func:`~rulstm.evaluation.records.first_occurrences`), so the
    repeats that Lightning's ``DistributedSampler`` pads a split with count once and every
    process count gives the same values.

    Scoring, per segment (``labels`` as in :class:`rulstm.data.AnticipationBatch`), by
    :func:`~rulstm.evaluation.ranking.rank_segments`:

    * known action: the rank of its logit;
    * labelled (verb, noun) pair that is not an action of the vocabulary (action -1): a miss
      at every step, and a class of its own in the class-mean recall;
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
        device = logits.device
        ranked = rank_segments(logits, action=action, verb=verb, noun=noun, valid=valid)
        keep = (ranked.labels["action"] >= 0) & (
            ranked.valid if self.discarded == "drop" else True
        )  # (B,) numpy
        keep_device = torch.from_numpy(np.asarray(keep, dtype=bool)).to(device)
        # Appended even when empty: every process must hold a tensor per state for the sync.
        self.seen.append(index.long().to(device))
        self.index.append(index.long().to(device)[keep_device])
        self.ranks.append(torch.from_numpy(ranked.ranks["action"][keep]).to(device))  # (B', S)
        self.labels.append(torch.from_numpy(ranked.labels["action"][keep]).to(device))  # (B',)
        if losses is None:
            losses = torch.full(keep_device.shape, float("nan"), device=device)
        self.losses.append(losses.detach().float()[keep_device])
        if weights is not None:
            # (B', S, M) -> (B', M): each segment's weights averaged over its steps
            self.weights.append(weights.detach().float()[keep_device].mean(dim=1))

    def compute(self) -> dict[str, torch.Tensor]:
        """``top1``, ``top5``, ``recall5`` (percent, (S,) each), ``loss`` (scalar, the mean
        over segments with a loss) and ``weights`` ((M,), fusion only); ``{}`` when no
        segment was scored. ``num_segments`` counts the segments scored, ``num_seen`` the
        distinct segments of the split that went through (discarded and unlabelled ones too)."""
        index = _cat(self.index)
        if index is None or index.numel() == 0:
            return {}
        first = torch.from_numpy(first_occurrences(index))
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
