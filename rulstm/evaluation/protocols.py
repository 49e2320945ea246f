"""The EK55 and EK100 evaluation protocols: outcomes -> :class:`AnticipationReport`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from epic_protocol.sampling import anticipation_times
from rulstm.evaluation.classes import EK100Subsets, ManyShotClasses
from rulstm.evaluation.outcomes import TASKS, RankedOutcomes
from rulstm.evaluation.report import FIRST_UIDS, AnticipationReport, Discarded, MetricSeries
from rulstm.metrics import (
    accuracy_from_ranks,
    class_mean_recall_from_ranks,
    mean_time_to_action_from_ranks,
)


def _evaluated(outcomes: RankedOutcomes, discarded: Discarded) -> RankedOutcomes:
    if discarded not in ("drop", "zeros"):
        raise ValueError(f"discarded must be 'drop' or 'zeros', got {discarded!r}")
    return outcomes.select(outcomes.valid) if discarded == "drop" else outcomes


def _check_times(outcomes: RankedOutcomes, times: Sequence[float]) -> tuple[float, ...]:
    if len(times) != outcomes.num_steps:
        raise ValueError(
            f"{len(times)} anticipation times for {outcomes.num_steps} scored time steps"
        )
    return tuple(float(t) for t in times)


def _task_rows(outcomes: RankedOutcomes, task: str, mask: np.ndarray | None = None):
    """Ranks and labels of the samples whose ``task`` label is known (and in ``mask``)."""
    keep = outcomes.labels[task] >= 0
    if mask is not None:
        keep &= mask
    return outcomes.ranks[task][keep], outcomes.labels[task][keep]


def _outside_vocabulary(outcomes: RankedOutcomes) -> dict[str, object]:
    """Report fields: how many segments lie outside the vocabulary, and the first uids
    (sorted, so that every process count lists the same ones)."""
    uids = sorted(np.asarray(outcomes.uids, dtype=object)[outcomes.outside_vocabulary])
    return {
        "num_outside_vocabulary": len(uids),
        "outside_vocabulary_uids": tuple(uids[:FIRST_UIDS]),
    }


def _percent(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) * 100.0 for v in np.atleast_1d(values))


def _mean_tta(outcomes: RankedOutcomes, times: Sequence[float]) -> dict[str, float]:
    return {
        task: mean_time_to_action_from_ranks(_task_rows(outcomes, task)[0], times=times, k=5)
        for task in TASKS
    }


def _recall_classes_note(
    outcomes: RankedOutcomes, classes: dict[str, frozenset[int]], source: str
) -> str:
    """How many classes each class-mean recall averages over: those of ``classes`` that occur
    among the evaluated labels (see :func:`rulstm.metrics.class_mean_recall_from_ranks`)."""
    counts = []
    for task in TASKS:
        present = set(np.unique(_task_rows(outcomes, task)[1]).tolist())
        counts.append(f"{len(present & classes[task])} {task}s")
    return f"{', '.join(counts)} with samples ({source})"


def evaluate_ek55(
    outcomes: RankedOutcomes,
    *,
    many_shot: ManyShotClasses,
    times: Sequence[float] | None = None,
    discarded: Discarded = "drop",
    name: str = "model",
) -> AnticipationReport:
    """The EK55 table: top-1/top-5 accuracy and many-shot class-mean top-5 recall."""
    times = _check_times(
        outcomes, times or anticipation_times(anticipation_steps=outcomes.num_steps)
    )
    evaluated = _evaluated(outcomes, discarded)
    classes = {"verb": many_shot.verbs, "noun": many_shot.nouns, "action": many_shot.actions}
    series = []
    for task in TASKS:
        ranks, labels = _task_rows(evaluated, task)
        series.append(
            MetricSeries(task, "top1_acc", "overall", _percent(accuracy_from_ranks(ranks, k=1)))
        )
        series.append(
            MetricSeries(task, "top5_acc", "overall", _percent(accuracy_from_ranks(ranks, k=5)))
        )
        recall = class_mean_recall_from_ranks(ranks, labels, k=5, classes=classes[task])
        series.append(MetricSeries(task, "mean_top5_recall", "overall", _percent(recall)))
    return AnticipationReport(
        protocol="ek55",
        name=name,
        times=times,
        series=tuple(series),
        mean_tta=_mean_tta(evaluated, times),
        num_samples=len(outcomes),
        num_evaluated=len(evaluated),
        num_discarded=int((~outcomes.valid).sum()),
        discarded=discarded,
        notes={"recall classes": _recall_classes_note(evaluated, classes, many_shot.source)},
        **_outside_vocabulary(outcomes),
    )


def evaluate_ek100(
    outcomes: RankedOutcomes,
    *,
    subsets: EK100Subsets,
    times: Sequence[float] | None = None,
    discarded: Discarded = "zeros",
    name: str = "model",
) -> AnticipationReport:
    """The EK100 table: class-mean top-5 recall, overall / unseen participants / tail classes."""
    times = _check_times(
        outcomes, times or anticipation_times(anticipation_steps=outcomes.num_steps)
    )
    evaluated = _evaluated(outcomes, discarded)
    unseen = subsets.unseen_mask(evaluated.uids)
    series = []
    for subset in ("overall", "unseen", "tail"):
        for task in TASKS:
            mask = None
            if subset == "unseen":
                mask = unseen
            elif subset == "tail":
                mask = subsets.tail_mask(task, evaluated.uids)
            ranks, labels = _task_rows(evaluated, task, mask)
            recall = class_mean_recall_from_ranks(ranks, labels, k=5)
            series.append(MetricSeries(task, "mean_top5_recall", subset, _percent(recall)))
    return AnticipationReport(
        protocol="ek100",
        name=name,
        times=times,
        series=tuple(series),
        mean_tta=_mean_tta(evaluated, times),
        num_samples=len(outcomes),
        num_evaluated=len(evaluated),
        num_discarded=int((~outcomes.valid).sum()),
        discarded=discarded,
        notes={
            "subsets": f"{int(unseen.sum())} unseen-participant samples; tail samples: "
            + ", ".join(
                f"{task} {int(subsets.tail_mask(task, evaluated.uids).sum())}" for task in TASKS
            )
        },
        **_outside_vocabulary(outcomes),
    )
