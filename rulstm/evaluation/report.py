"""The report record of one evaluation: every metric at every anticipation time, JSON/CSV/table."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rulstm.evaluation.names import label, metric_name, series_key, time_key

Discarded = Literal["drop", "zeros"]
REPORT_KIND = "rulstm-anticipation-report"
#: How many uids of segments outside the vocabulary a report lists.
FIRST_UIDS = 5
#: Titles of reports that name no data set (reports written before protocols named theirs).
_TITLES = {"ek55": "EPIC-KITCHENS-55", "ek100": "EPIC-KITCHENS-100"}
#: Metric names of reports written before the one registry (rulstm.evaluation.names).
_LEGACY_METRICS = {"top1_acc": "top1", "top5_acc": "top5", "mean_top5_recall": "recall5"}


@dataclass(frozen=True)
class MetricSeries:
    """One metric at every anticipation time, in percent."""

    task: str
    metric: str  # a key of rulstm.evaluation.names.METRICS: top1 | top5 | recall5
    subset: str  # a key of rulstm.evaluation.names.SUBSETS: overall | many_shot | unseen | tail
    values: tuple[float, ...]

    @property
    def label(self) -> str:
        return label(self.task, self.metric, self.subset)

    @property
    def key(self) -> str:
        """``action/recall5_unseen``: the logged name without stage and time."""
        return series_key(self.task, self.metric, self.subset)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class AnticipationReport:
    """Every number of one evaluation. Accuracies/recalls in percent, TtA in seconds."""

    protocol: str
    name: str
    times: tuple[float, ...]
    series: tuple[MetricSeries, ...]
    mean_tta: dict[str, float]
    num_samples: int
    num_evaluated: int
    num_discarded: int
    discarded: Discarded
    notes: dict[str, str] = field(default_factory=dict)
    #: Labelled segments whose (verb, noun) pair is not an action (scored as action misses).
    num_outside_vocabulary: int = 0
    outside_vocabulary_uids: tuple[str, ...] = ()
    #: A run that saw only part of the split (fast_dev_run, limit_*_batches).
    partial: bool = False
    #: Segments in the split (``None`` when unknown); ``num_samples`` were evaluated.
    split_size: int | None = None
    #: The data set's name for titles ("EGTEA Gaze+"); ``None``: the protocol's.
    dataset: str | None = None
    #: (task, metric, subset) of the headline and checkpoint selection, at 1 s; ``None``:
    #: action top-5 accuracy when the report has it, else action mean top-5 recall.
    selection: tuple[str, str, str] | None = None
    #: The checkpoint the report evaluates, when known (a report of another checkpoint is not
    #: replaced without ``overwrite``).
    checkpoint: str | None = None

    @property
    def title(self) -> str:
        """``"EPIC-KITCHENS-55 action anticipation"`` (or the data set's name)."""
        default = _TITLES.get(self.protocol, self.protocol)
        return f"{self.dataset or default} action anticipation"

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
        """(task, metric, subset) of the headline (at 1 s): the protocol's selection metric."""
        if self.selection is not None:
            return tuple(self.selection)  # type: ignore[return-value]
        if any(s.key == "action/top5" for s in self.series):
            return ("action", "top5", "overall")
        return ("action", "recall5", "overall")

    @property
    def headline(self) -> float:
        """The selection metric at 1 s (EK55: action top-5 accuracy; EK100: action mean
        top-5 recall)."""
        return self.value(*self.selection_metric, time=1.0)

    def metrics(self, prefix: str = "test") -> dict[str, float]:
        """Flat ``{prefix}/{task}/{metric}[_{subset}]/{time}`` and ``{prefix}/{task}/mean_tta5``
        values for loggers (names: :mod:`rulstm.evaluation.names`; NaN left out)."""
        flat: dict[str, float] = {}
        for series in self.series:
            for time, value in zip(self.times, series.values):
                if math.isfinite(value):
                    name = metric_name(prefix, series.task, series.metric, series.subset)
                    flat[f"{name}/{time_key(time)}"] = float(value)
        for task, value in self.mean_tta.items():
            if math.isfinite(value):
                flat[metric_name(prefix, task, "mean_tta5")] = float(value)
        return flat

    # ---- text

    def table(self) -> str:
        """The report as a fixed-width table: rows are metrics, columns anticipation times."""
        dropped = "left out" if self.discarded == "drop" else "scored as zeros"
        label_width = max(len(s.label) for s in self.series) + 2
        partial = " (PARTIAL run)" if self.partial else ""
        lines = [f"{self.title}: {self.name}{partial}"]
        # One line: how much of the split went through, and how much of it was evaluated.
        of = "?" if self.split_size is None else str(self.split_size)
        lines.append(
            f"{self.num_samples} of {of} segments of the split, {self.num_evaluated} evaluated "
            f"({self.num_discarded} discarded samples {dropped})"
        )
        if self.num_outside_vocabulary:
            lines.append(
                f"{self.num_outside_vocabulary} segments have a (verb, noun) pair outside the "
                "vocabulary, scored as action misses: "
                + ", ".join(self.outside_vocabulary_uids)
                + (
                    " ..."
                    if self.num_outside_vocabulary > len(self.outside_vocabulary_uids)
                    else ""
                )
            )
        lines.append(" " * label_width + "".join(f"{time_key(t):>8}" for t in self.times))
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
            "partial": self.partial,
            "split_size": self.split_size,
            "dataset": self.dataset,
            "checkpoint": self.checkpoint,
            "outside_vocabulary": {
                "count": self.num_outside_vocabulary,
                "first_uids": list(self.outside_vocabulary_uids),
            },
            "headline": {
                "task": self.selection_metric[0],
                "metric": self.selection_metric[1],
                "subset": self.selection_metric[2],
                "time": 1.0,
                "name": metric_name("test", *self.selection_metric, when=time_key(1.0)),
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

        outside = data.get("outside_vocabulary") or {}

        return cls(
            protocol=data["protocol"],
            name=data["name"],
            times=tuple(float(t) for t in data["times"]),
            series=tuple(
                MetricSeries(
                    task=s["task"],
                    metric=_LEGACY_METRICS.get(s["metric"], s["metric"]),
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
            num_outside_vocabulary=int(outside.get("count", 0)),
            outside_vocabulary_uids=tuple(outside.get("first_uids", ())),
            partial=bool(data.get("partial", False)),
            split_size=None if data.get("split_size") is None else int(data["split_size"]),
            dataset=data.get("dataset"),
            selection=_selection(data.get("headline")),
            checkpoint=data.get("checkpoint"),
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
        """Long format: ``name,protocol,task,metric,subset,anticipation_s,value,key``; ``key``
        is the logged name (``test/action/top5/1.00s``). TtA rows have metric ``mean_tta5``
        (seconds) and no anticipation time."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["name", "protocol", "task", "metric", "subset", "anticipation_s", "value", "key"]
            )
            for s in self.series:
                for time, value in zip(self.times, s.values):
                    key = f"{metric_name('test', s.task, s.metric, s.subset)}/{time_key(time)}"
                    writer.writerow(
                        [self.name, self.protocol, s.task, s.metric, s.subset, time, value, key]
                    )
            for task, value in self.mean_tta.items():
                key = metric_name("test", task, "mean_tta5")
                writer.writerow(
                    [self.name, self.protocol, task, "mean_tta5", "overall", "", value, key]
                )
        return path


def _selection(headline: Mapping[str, Any] | None) -> tuple[str, str, str] | None:
    if not headline or "task" not in headline:
        return None
    metric = _LEGACY_METRICS.get(headline["metric"], headline["metric"])
    return (headline["task"], metric, headline.get("subset", "overall"))


def load_reports(
    paths: Iterable[str | Path], *, include_partial: bool = True
) -> dict[str, AnticipationReport]:
    """Reports from JSON files, keyed by report name (files that are not reports skipped;
    partial reports too with ``include_partial=False``)."""
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
        if report.partial and not include_partial:
            continue
        reports[report.name] = report
    return reports
