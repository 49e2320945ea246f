"""The next-action report tables: outcomes -> :class:`AnticipationReport` (EK55 with its
many-shot classes, EK100 with its unseen/tail subsets, and top-k accuracy with recall over
every class for EGTEA and other data sets). The :mod:`~rulstm.evaluation.protocol` classes
choose which one a benchmark reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from epic_protocol.sampling import anticipation_times
from rulstm.evaluation.classes import EK100Subsets, ManyShotClasses
from rulstm.evaluation.outcomes import RankedOutcomes
from rulstm.evaluation.ranking import (
    TASKS,
    accuracy_from_ranks,
    class_mean_recall_from_ranks,
    mean_time_to_action_from_ranks,
)
from rulstm.evaluation.report import FIRST_UIDS, AnticipationReport, Discarded, MetricSeries


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
    among the evaluated labels (see :func:`rulstm.evaluation.ranking.class_mean_recall_from_ranks`)."""
    counts = []
    for task in TASKS:
        present = set(np.unique(_task_rows(outcomes, task)[1]).tolist())
        counts.append(f"{len(present & classes[task])} {task}s")
    return f"{', '.join(counts)} with samples ({source})"


def evaluate_ek55(
    outcomes: RankedOutcomes,
    *,
    many_shot: ManyShotClasses | None,
    times: Sequence[float] | None = None,
    discarded: Discarded = "drop",
    name: str = "model",
    protocol: str = "ek55",
) -> AnticipationReport:
    """The EK55 table: top-1/top-5 accuracy and many-shot class-mean top-5 recall
    (``recall5_many_shot``). ``many_shot=None``: recall over every class present
    (``recall5``), as for EGTEA and data sets without class lists."""
    times = _check_times(
        outcomes, times or anticipation_times(anticipation_steps=outcomes.num_steps)
    )
    evaluated = _evaluated(outcomes, discarded)
    classes: dict[str, frozenset[int] | None] = dict.fromkeys(TASKS)
    if many_shot is not None:
        classes = {"verb": many_shot.verbs, "noun": many_shot.nouns, "action": many_shot.actions}
    recall_subset = "overall" if many_shot is None else "many_shot"
    series = []
    for task in TASKS:
        ranks, labels = _task_rows(evaluated, task)
        series.append(
            MetricSeries(task, "top1", "overall", _percent(accuracy_from_ranks(ranks, k=1)))
        )
        series.append(
            MetricSeries(task, "top5", "overall", _percent(accuracy_from_ranks(ranks, k=5)))
        )
        recall = class_mean_recall_from_ranks(ranks, labels, k=5, classes=classes[task])
        series.append(MetricSeries(task, "recall5", recall_subset, _percent(recall)))
    if many_shot is None:
        notes = {"recall classes": "every class with samples"}
    else:
        notes = {"recall classes": _recall_classes_note(evaluated, classes, many_shot.source)}
    return AnticipationReport(
        protocol=protocol,
        name=name,
        times=times,
        series=tuple(series),
        mean_tta=_mean_tta(evaluated, times),
        num_samples=len(outcomes),
        num_evaluated=len(evaluated),
        num_discarded=int((~outcomes.valid).sum()),
        discarded=discarded,
        notes=notes,
        selection=("action", "top5", "overall"),
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
            series.append(MetricSeries(task, "recall5", subset, _percent(recall)))
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
        selection=("action", "recall5", "overall"),
        **_outside_vocabulary(outcomes),
    )
