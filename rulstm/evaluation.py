"""EPIC-KITCHENS anticipation evaluation: reports, tables, files, plots and a Lightning callback.

Two protocols, as in the reference implementation (RU-LSTM ``main.py validate``):

* ``ek55``: for verb, noun and action, top-1 accuracy, top-5 accuracy and class-mean top-5
  recall over the many-shot classes, at every anticipation time (2.0 ... 0.25 s). Samples
  the reference discards (no frame observable) are left out, as the reference does.
* ``ek100``: class-mean top-5 recall of verb, noun and action on all samples, on the
  unseen-participant samples and on the tail-class samples. Discarded samples are scored as
  all zeros, as the reference does.

Both also report Mean TtA(5) (see :func:`rulstm.metrics.time_to_action_from_ranks`).
Verb and noun scores are marginalised from the action scores
(:func:`rulstm.metrics.marginalize`). Accuracies and recalls are in percent, TtA in seconds.

The pipeline is: action scores -> :func:`rank_outcomes` (ranks of the true classes, small)
-> :func:`evaluate_ek55` / :func:`evaluate_ek100` -> :class:`AnticipationReport`.
:class:`AnticipationEvaluator` runs it at the end of ``trainer.test``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from epic_protocol.annotations import (
    ActionVocabulary,
    read_actions_csv,
    read_class_ids,
    read_id_list,
    read_many_shot_actions,
)
from epic_protocol.sampling import anticipation_times
from rulstm.metrics import (
    ArrayLike,
    accuracy_from_ranks,
    class_mean_recall_from_ranks,
    marginalize,
    mean_time_to_action_from_ranks,
    true_class_rank,
)
from rulstm.resources import resolve_path

log = logging.getLogger(__name__)

Protocol = Literal["ek55", "ek100"]
Discarded = Literal["drop", "zeros"]
TASKS: tuple[str, ...] = ("verb", "noun", "action")
REPORT_KIND = "rulstm-anticipation-report"
#: Verb and noun label-space sizes of each dataset (some classes no action uses).
CLASS_COUNTS: dict[str, tuple[int, int]] = {"ek55": (125, 352), "ek100": (97, 300)}
#: Index of the headline anticipation time (1.0 s of 2.0 ... 0.25 s).
HEADLINE_INDEX = -4

_METRIC_LABELS = {
    "top1_acc": "Top-1 Accuracy",
    "top5_acc": "Top-5 Accuracy",
    "mean_top5_recall": "Mean Top-5 Recall",
}
_SUBSET_LABELS = {"overall": "Overall", "unseen": "Unseen", "tail": "Tail"}


# --------------------------------------------------------------------------- outcomes


@dataclass
class RankedOutcomes:
    """Per-sample outcomes: the rank of each true class at each anticipation time.

    ``ranks[task]`` is ``(N, S)`` (1-based, ties against the true class; 0 where the label is
    unknown), ``labels[task]`` is ``(N,)`` (-1 when unknown), ``valid`` is ``(N,)`` (False for
    samples the reference discards, ranked as if scored all zeros).
    """

    uids: list[str]
    labels: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    valid: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.uids)
        for task in TASKS:
            if self.labels[task].shape != (n,) or self.ranks[task].shape[:1] != (n,):
                raise ValueError(
                    f"{task}: expected {n} labels and rank rows, got labels "
                    f"{self.labels[task].shape} and ranks {self.ranks[task].shape}"
                )
        if self.valid.shape != (n,):
            raise ValueError(f"valid must be ({n},), got {self.valid.shape}")

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def num_steps(self) -> int:
        return int(self.ranks["action"].shape[1])

    def select(self, mask: np.ndarray) -> RankedOutcomes:
        mask = np.asarray(mask, dtype=bool)
        return RankedOutcomes(
            uids=[uid for uid, keep in zip(self.uids, mask) if keep],
            labels={t: v[mask] for t, v in self.labels.items()},
            ranks={t: v[mask] for t, v in self.ranks.items()},
            valid=self.valid[mask],
        )

    def deduplicated(self) -> RankedOutcomes:
        """Keep the first occurrence of each uid (DistributedSampler pads with repeats)."""
        _, first = np.unique(np.asarray(self.uids, dtype=object), return_index=True)
        if len(first) == len(self.uids):
            return self
        mask = np.zeros(len(self.uids), dtype=bool)
        mask[np.sort(first)] = True
        return self.select(mask)

    @classmethod
    def concatenate(cls, parts: Sequence[RankedOutcomes]) -> RankedOutcomes:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no outcomes to concatenate")
        return cls(
            uids=[uid for p in parts for uid in p.uids],
            labels={t: np.concatenate([p.labels[t] for p in parts]) for t in TASKS},
            ranks={t: np.concatenate([p.ranks[t] for p in parts]) for t in TASKS},
            valid=np.concatenate([p.valid for p in parts]),
        )


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
    return RankedOutcomes(
        uids=[str(uid) for uid in uids],
        labels=labels,
        ranks={
            task: np.concatenate(parts) if parts else np.zeros((0, scores.shape[1]), np.int64)
            for task, parts in ranks.items()
        },
        valid=valid_rows,
    )


# --------------------------------------------------------------------------- class sets


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


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class MetricSeries:
    """One metric at every anticipation time, in percent."""

    task: str
    metric: str  # top1_acc | top5_acc | mean_top5_recall
    subset: str  # overall | unseen | tail
    values: tuple[float, ...]

    @property
    def label(self) -> str:
        subset = "" if self.subset == "overall" else f"{_SUBSET_LABELS[self.subset]} "
        return f"{self.task.capitalize():<7}{subset}{_METRIC_LABELS[self.metric]}"

    @property
    def key(self) -> str:
        """``action/mean_top5_recall_unseen``: the name used for logging."""
        suffix = "" if self.subset == "overall" else f"_{self.subset}"
        return f"{self.task}/{self.metric}{suffix}"


def _time_label(seconds: float) -> str:
    return f"{seconds:.2f}s"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class AnticipationReport:
    """Every number of one evaluation. Accuracies/recalls in percent, TtA in seconds."""

    protocol: Protocol
    name: str
    times: tuple[float, ...]
    series: tuple[MetricSeries, ...]
    mean_tta: dict[str, float]
    num_samples: int
    num_evaluated: int
    num_discarded: int
    discarded: Discarded
    notes: dict[str, str] = field(default_factory=dict)

    # ---- access

    def get(self, task: str, metric: str, subset: str = "overall") -> MetricSeries:
        for series in self.series:
            if (series.task, series.metric, series.subset) == (task, metric, subset):
                return series
        raise KeyError(f"no {subset} {metric} for {task} in this {self.protocol} report")

    def value(self, task: str, metric: str, subset: str = "overall", *, time: float = 1.0) -> float:
        """The value at the anticipation time closest to ``time`` seconds."""
        index = int(np.argmin(np.abs(np.asarray(self.times) - time)))
        return self.get(task, metric, subset).values[index]

    @property
    def selection_metric(self) -> tuple[str, str, str]:
        """(task, metric, subset) used to pick the best checkpoint (at 1 s)."""
        if self.protocol == "ek55":
            return ("action", "top5_acc", "overall")
        return ("action", "mean_top5_recall", "overall")

    @property
    def headline(self) -> float:
        """EK55: action top-5 accuracy at 1 s; EK100: action mean top-5 recall at 1 s."""
        return self.value(*self.selection_metric, time=1.0)

    def metrics(self, prefix: str = "test") -> dict[str, float]:
        """Flat ``{prefix}/{task}/{metric}/{time}`` values for loggers (NaN left out)."""
        flat: dict[str, float] = {}
        for series in self.series:
            for time, value in zip(self.times, series.values):
                if math.isfinite(value):
                    flat[f"{prefix}/{series.key}/{_time_label(time)}"] = float(value)
        for task, value in self.mean_tta.items():
            if math.isfinite(value):
                flat[f"{prefix}/{task}/mean_tta5"] = float(value)
        return flat

    # ---- text

    def table(self) -> str:
        """The report as a fixed-width table: rows are metrics, columns anticipation times."""
        title = {"ek55": "EPIC-KITCHENS-55", "ek100": "EPIC-KITCHENS-100"}[self.protocol]
        dropped = "left out" if self.discarded == "drop" else "scored as zeros"
        label_width = max(len(s.label) for s in self.series) + 2
        lines = [
            f"{title} action anticipation: {self.name}",
            f"{self.num_evaluated} samples evaluated of {self.num_samples} "
            f"({self.num_discarded} discarded samples {dropped})",
            " " * label_width + "".join(f"{_time_label(t):>8}" for t in self.times),
        ]
        for series in self.series:
            cells = "".join(f"{v:8.2f}" for v in series.values)
            lines.append(f"{series.label:<{label_width}}{cells}")
        tta = "  ".join(f"{task} {value:.2f}" for task, value in self.mean_tta.items())
        lines.append(f"Mean TtA(5) [s]: {tta}")
        for key, note in self.notes.items():
            lines.append(f"{key}: {note}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    # ---- files

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": REPORT_KIND,
            "protocol": self.protocol,
            "name": self.name,
            "times": list(self.times),
            "num_samples": self.num_samples,
            "num_evaluated": self.num_evaluated,
            "num_discarded": self.num_discarded,
            "discarded": self.discarded,
            "headline": {
                "task": self.selection_metric[0],
                "metric": self.selection_metric[1],
                "subset": self.selection_metric[2],
                "time": 1.0,
                "value": _finite(self.headline),
            },
            "series": [
                {
                    "task": s.task,
                    "metric": s.metric,
                    "subset": s.subset,
                    "values": [_finite(v) for v in s.values],
                }
                for s in self.series
            ],
            "mean_tta5": {task: _finite(v) for task, v in self.mean_tta.items()},
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnticipationReport:
        if data.get("kind") != REPORT_KIND:
            raise ValueError(f"not an anticipation report (kind={data.get('kind')!r})")

        def number(value: float | None) -> float:
            return float("nan") if value is None else float(value)

        return cls(
            protocol=data["protocol"],
            name=data["name"],
            times=tuple(float(t) for t in data["times"]),
            series=tuple(
                MetricSeries(
                    task=s["task"],
                    metric=s["metric"],
                    subset=s["subset"],
                    values=tuple(number(v) for v in s["values"]),
                )
                for s in data["series"]
            ),
            mean_tta={task: number(v) for task, v in data["mean_tta5"].items()},
            num_samples=int(data["num_samples"]),
            num_evaluated=int(data["num_evaluated"]),
            num_discarded=int(data["num_discarded"]),
            discarded=data["discarded"],
            notes=dict(data.get("notes", {})),
        )

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> AnticipationReport:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{path}: not a readable anticipation report ({error})") from error

    def to_csv(self, path: str | Path) -> Path:
        """Long format: ``name,protocol,task,metric,subset,anticipation_s,value`` (TtA rows
        have metric ``mean_tta5_s`` and no anticipation time)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["name", "protocol", "task", "metric", "subset", "anticipation_s", "value"]
            )
            for s in self.series:
                for time, value in zip(self.times, s.values):
                    writer.writerow(
                        [self.name, self.protocol, s.task, s.metric, s.subset, time, value]
                    )
            for task, value in self.mean_tta.items():
                writer.writerow(
                    [self.name, self.protocol, task, "mean_tta5_s", "overall", "", value]
                )
        return path


# --------------------------------------------------------------------------- evaluation


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


def _percent(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) * 100.0 for v in np.atleast_1d(values))


def _mean_tta(outcomes: RankedOutcomes, times: Sequence[float]) -> dict[str, float]:
    return {
        task: mean_time_to_action_from_ranks(_task_rows(outcomes, task)[0], times=times, k=5)
        for task in TASKS
    }


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
        notes={
            "many-shot classes": f"{len(many_shot.verbs)} verbs, {len(many_shot.nouns)} nouns, "
            f"{len(many_shot.actions)} actions ({many_shot.source})"
        },
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
    )


# --------------------------------------------------------------------------- plots


def plot_accuracy(
    reports: Mapping[str, AnticipationReport],
    path: str | Path,
    *,
    title: str | None = None,
    references: Mapping[str, Mapping[tuple[str, str], Sequence[float]]] | None = None,
) -> Path:
    """PNG of every metric against anticipation time, one line per report (modality/fusion).

    One panel per (metric, task); all reports must follow the same protocol.
    ``references`` adds dashed lines, e.g. a known upper bound:
    ``{"Bayes bound": {("action", "top5_acc"): [values at the reports' times]}}``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not reports:
        raise ValueError("plot_accuracy needs at least one report")
    protocols = {r.protocol for r in reports.values()}
    if len(protocols) > 1:
        raise ValueError(f"cannot plot reports of different protocols together: {protocols}")
    first = next(iter(reports.values()))
    rows = list(dict.fromkeys((s.metric, s.subset) for s in first.series))
    figure, axes = plt.subplots(
        len(rows), len(TASKS), figsize=(4.2 * len(TASKS), 3.0 * len(rows)), squeeze=False
    )
    for row, (metric, subset) in enumerate(rows):
        for col, task in enumerate(TASKS):
            axis = axes[row][col]
            for label, report in reports.items():
                try:
                    series = report.get(task, metric, subset)
                except KeyError:
                    continue
                axis.plot(report.times, series.values, marker="o", label=label)
            drawn = False
            for label, lines in (references or {}).items():
                if (task, metric) in lines:
                    axis.plot(first.times, lines[(task, metric)], linestyle="--", label=label)
                    drawn = True
            if drawn:
                axis.legend(fontsize="x-small")
            subset_label = "" if subset == "overall" else f"{_SUBSET_LABELS[subset]} "
            axis.set_title(f"{task.capitalize()}: {subset_label}{_METRIC_LABELS[metric]}")
            axis.set_xlabel("anticipation time (s)")
            axis.set_ylabel("%")
            axis.invert_xaxis()  # 2.0 s on the left, 0.25 s (closest to the action) right
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(title or f"{first.protocol.upper()} action anticipation")
    # Fixed margins: a layout engine (tight/constrained) doubles the rendering time.
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.92, hspace=0.5, wspace=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def load_reports(paths: Iterable[str | Path]) -> dict[str, AnticipationReport]:
    """Reports from JSON files, keyed by report name (files that are not reports skipped)."""
    reports: dict[str, AnticipationReport] = {}
    for path in paths:
        # Peek first: the folder may also hold large challenge JSON files.
        with open(path, "rb") as handle:
            if REPORT_KIND.encode() not in handle.read(256):
                continue
        try:
            report = AnticipationReport.from_json(path)
        except (ValueError, OSError):
            continue
        reports[report.name] = report
    return reports


# --------------------------------------------------------------------------- callback


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (just ``[obj]`` without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def datamodule_vocabulary(
    trainer: L.Trainer, *, num_verbs: int, num_nouns: int
) -> ActionVocabulary | None:
    """The action vocabulary of the trainer's DataModule (the model's classes), with at least
    ``num_verbs`` verbs and ``num_nouns`` nouns; ``None`` without such a DataModule."""
    vocabulary = getattr(trainer.datamodule, "vocabulary", None)
    if not isinstance(vocabulary, ActionVocabulary):
        return None
    return ActionVocabulary(
        verbs=vocabulary.verbs,
        nouns=vocabulary.nouns,
        names=vocabulary.names,
        num_verbs=max(vocabulary.num_verbs, num_verbs),
        num_nouns=max(vocabulary.num_nouns, num_nouns),
    )


class AnticipationEvaluator(L.Callback):
    """Evaluate ``trainer.test`` outputs with the EPIC protocol and write the results.

    The LightningModule's ``test_step`` must return ``{"scores": (B, S, A) action logits at
    the anticipation steps (oldest first), "valid": (B,) bool, "verb"/"noun"/"action": (B,)
    long (-1 unknown), "uid": list[str]}``. At the end of the test epoch the outcomes of all
    processes are gathered, the table is printed, ``{name}.json``, ``{name}.csv`` and
    ``{name}.png`` are written to ``out_dir`` (by process 0), ``accuracy_{protocol}.png``
    plots every report found in ``out_dir`` (e.g. rgb, flow, obj and fusion) together, and
    the values are logged as ``{log_prefix}/{task}/{metric}/{time}``.

    Args:
        protocol: ``"ek55"`` or ``"ek100"``.
        actions: actions.csv. Default: the vocabulary of the trainer's DataModule (the one the
            model was trained on), else ``builtin:<protocol>/actions.csv``.
        out_dir: output folder.
        name: report name (e.g. the modality), used in file names and plot legends.
        alpha: seconds between time steps (anticipation times are ``alpha * S ... alpha``).
        num_verbs, num_nouns: label-space sizes (default: the dataset's, 125/352 or 97/300).
        many_shot_verbs, many_shot_nouns, many_shot_actions: EK55 class lists
            (default: the shipped EPIC lists).
        use_official_many_shot_actions: EK55 action recall over EPIC's 819 many-shot actions
            instead of the reference's "verb or noun many-shot" actions.
        class_lists: ``False`` ignores the many-shot lists (EK55: recall over every class
            present) and the unseen/tail lists (EK100: overall only), for datasets other than
            EPIC-KITCHENS such as the quickstart's.
        unseen_ids, tail_verb_ids, tail_noun_ids, tail_action_ids: EK100 subset id lists
            (default: the shipped RU-LSTM validation lists).
        discarded: ``"drop"`` or ``"zeros"`` for samples the reference discards; default the
            reference's choice (EK55 drop, EK100 zeros).
        write_json: also write the scores at 1 s in the challenge JSON format
            (``{name}_challenge.json``, like the reference's ``validate_json``).
        sls: supervision levels (pt, tl, td) written in that JSON (EK100).
        log_prefix: prefix of the logged names.
    """

    def __init__(
        self,
        *,
        protocol: Protocol,
        actions: str | None = None,
        out_dir: str = "evaluation",
        name: str = "model",
        alpha: float = 0.25,
        num_verbs: int | None = None,
        num_nouns: int | None = None,
        many_shot_verbs: str | None = None,
        many_shot_nouns: str | None = None,
        many_shot_actions: str | None = None,
        use_official_many_shot_actions: bool = False,
        class_lists: bool = True,
        unseen_ids: str | None = None,
        tail_verb_ids: str | None = None,
        tail_noun_ids: str | None = None,
        tail_action_ids: str | None = None,
        discarded: Literal["auto", "drop", "zeros"] = "auto",
        write_json: bool = False,
        sls: tuple[int, int, int] = (1, 4, 3),
        log_prefix: str = "test",
    ) -> None:
        super().__init__()
        if protocol not in CLASS_COUNTS:
            raise ValueError(f"protocol must be 'ek55' or 'ek100', got {protocol!r}")
        self.protocol: Protocol = protocol
        self.actions = actions
        self.class_lists = class_lists
        self.out_dir = Path(out_dir)
        self.name = name
        self.alpha = alpha
        default_verbs, default_nouns = CLASS_COUNTS[protocol]
        self.num_verbs = num_verbs or default_verbs
        self.num_nouns = num_nouns or default_nouns
        self.many_shot_files = {
            "verbs_csv": many_shot_verbs or "builtin:ek55/EPIC_many_shot_verbs.csv",
            "nouns_csv": many_shot_nouns or "builtin:ek55/EPIC_many_shot_nouns.csv",
            "actions_csv": many_shot_actions or "builtin:ek55/epic/EPIC_many_shot_actions.csv",
        }
        self.use_official_many_shot_actions = use_official_many_shot_actions
        self.subset_files = {
            "unseen_ids": unseen_ids or "builtin:ek100/validation_unseen_participants_ids.csv",
            "tail_verb_ids": tail_verb_ids or "builtin:ek100/validation_tail_verbs_ids.csv",
            "tail_noun_ids": tail_noun_ids or "builtin:ek100/validation_tail_nouns_ids.csv",
            "tail_action_ids": tail_action_ids or "builtin:ek100/validation_tail_actions_ids.csv",
        }
        if discarded not in ("auto", "drop", "zeros"):
            raise ValueError(f"discarded must be 'auto', 'drop' or 'zeros', got {discarded!r}")
        self.discarded: Discarded = (
            ("drop" if protocol == "ek55" else "zeros") if discarded == "auto" else discarded
        )
        self.write_json = write_json
        self.sls = tuple(sls)
        self.log_prefix = log_prefix
        self.report: AnticipationReport | None = None
        self._vocabulary: ActionVocabulary | None = None
        self._parts: list[RankedOutcomes] = []
        self._json_parts: list[Any] = []

    @property
    def vocabulary(self) -> ActionVocabulary:
        if self._vocabulary is None:
            self._vocabulary = read_actions_csv(
                resolve_path(self.actions or f"builtin:{self.protocol}/actions.csv"),
                num_verbs=self.num_verbs,
                num_nouns=self.num_nouns,
            )
        return self._vocabulary

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.actions is None:
            self._vocabulary = datamodule_vocabulary(
                trainer, num_verbs=self.num_verbs, num_nouns=self.num_nouns
            )

    # ---- accumulation

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts, self._json_parts, self.report = [], [], None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.add(outputs)

    def add(self, outputs: Mapping[str, Any]) -> None:
        """Accumulate one ``test_step`` output (usable without a Trainer)."""
        if not isinstance(outputs, Mapping) or "scores" not in outputs:
            raise TypeError(
                "AnticipationEvaluator needs test_step to return a dict with 'scores', "
                "'valid', 'verb', 'noun', 'action' and 'uid'; got "
                f"{type(outputs).__name__}"
            )
        missing = [k for k in ("valid", "verb", "noun", "action", "uid") if k not in outputs]
        if missing:
            raise KeyError(f"test_step output lacks {missing}")
        scores = outputs["scores"].detach()
        self._parts.append(
            rank_outcomes(
                scores,
                vocabulary=self.vocabulary,
                verb=outputs["verb"],
                noun=outputs["noun"],
                action=outputs["action"],
                uids=list(outputs["uid"]),
                valid=outputs["valid"],
            )
        )
        if self.write_json:
            from rulstm.submission import submission_scores

            self._json_parts.append(
                submission_scores(
                    scores[:, HEADLINE_INDEX],
                    vocabulary=self.vocabulary,
                    uids=list(outputs["uid"]),
                    valid=outputs["valid"],
                )
            )

    # ---- results

    def compute(self, outcomes: RankedOutcomes) -> AnticipationReport:
        times = anticipation_times(alpha=self.alpha, anticipation_steps=outcomes.num_steps)
        if self.protocol == "ek55":
            if self.class_lists:
                many_shot = load_many_shot(
                    self.vocabulary,
                    **self.many_shot_files,
                    official_actions=self.use_official_many_shot_actions,
                )
            else:
                v = self.vocabulary
                many_shot = ManyShotClasses(
                    verbs=frozenset(range(v.num_verbs)),
                    nouns=frozenset(range(v.num_nouns)),
                    actions=frozenset(range(v.num_actions)),
                    source="all classes (class_lists=False)",
                )
            return evaluate_ek55(
                outcomes, many_shot=many_shot, times=times, discarded=self.discarded, name=self.name
            )
        if self.class_lists:
            subsets = load_ek100_subsets(**self.subset_files)
        else:
            no_ids: frozenset[str] = frozenset()
            subsets = EK100Subsets(
                unseen=no_ids, tail=dict.fromkeys(("verb", "noun", "action"), no_ids)
            )
        return evaluate_ek100(
            outcomes, subsets=subsets, times=times, discarded=self.discarded, name=self.name
        )

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        gathered = [part for rank_parts in gather_objects(self._parts) for part in rank_parts]
        if not gathered:
            log.warning("AnticipationEvaluator: no test outputs to evaluate")
            return
        outcomes = RankedOutcomes.concatenate(gathered).deduplicated()
        labelled = outcomes.labels["action"] >= 0
        if not labelled.any() and not (outcomes.labels["verb"] >= 0).any():
            log.warning(
                "AnticipationEvaluator: the test split has no labels (challenge test set?): "
                "nothing to evaluate; use rulstm.submission.SubmissionWriter with predict"
            )
            return
        self.report = self.compute(outcomes)
        # Every process holds the same values: the (cheap) mean over processes changes
        # nothing but keeps Lightning from warning once per key under DDP.
        pl_module.log_dict(self.report.metrics(self.log_prefix), sync_dist=True)
        json_parts = [p for rank_parts in gather_objects(self._json_parts) for p in rank_parts]
        if trainer.is_global_zero:
            self.write(self.report)
            if self.write_json and json_parts:
                self._write_challenge_json(json_parts)

    def write(self, report: AnticipationReport) -> dict[str, Path]:
        """Print the table and write JSON, CSV and plots into ``out_dir``."""
        print(report.table(), flush=True)
        stem = _safe_name(report.name)
        written = {
            "json": report.to_json(self.out_dir / f"{stem}.json"),
            "csv": report.to_csv(self.out_dir / f"{stem}.csv"),
            "png": plot_accuracy({report.name: report}, self.out_dir / f"{stem}.png"),
        }
        reports = {
            name: other
            for name, other in load_reports(sorted(self.out_dir.glob("*.json"))).items()
            if other.protocol == report.protocol
        }
        reports[report.name] = report
        written["combined_png"] = plot_accuracy(
            reports, self.out_dir / f"accuracy_{report.protocol}.png"
        )
        log.info("evaluation written to %s", self.out_dir)
        return written

    def _write_challenge_json(self, parts: list[Any]) -> Path:
        from rulstm.submission import SubmissionScores, SupervisionLevels, write_submission

        scores = SubmissionScores.concatenate(parts).deduplicated()
        return write_submission(
            self.out_dir / f"{_safe_name(self.name)}_challenge.json",
            scores,
            vocabulary=self.vocabulary,
            protocol=self.protocol,
            sls=SupervisionLevels(*self.sls) if self.protocol == "ek100" else None,
            expected_ids=scores.uids,
        )


__all__ = [
    "CLASS_COUNTS",
    "TASKS",
    "AnticipationEvaluator",
    "AnticipationReport",
    "EK100Subsets",
    "ManyShotClasses",
    "MetricSeries",
    "RankedOutcomes",
    "evaluate_ek55",
    "gather_objects",
    "evaluate_ek100",
    "load_ek100_subsets",
    "load_many_shot",
    "load_reports",
    "plot_accuracy",
    "rank_outcomes",
]
