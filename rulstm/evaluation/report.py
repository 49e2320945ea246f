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

Protocol = Literal["ek55", "ek100"]
Discarded = Literal["drop", "zeros"]
REPORT_KIND = "rulstm-anticipation-report"
#: How many uids of segments outside the vocabulary a report lists.
FIRST_UIDS = 5

_METRIC_LABELS = {
    "top1_acc": "Top-1 Accuracy",
    "top5_acc": "Top-5 Accuracy",
    "mean_top5_recall": "Mean Top-5 Recall",
}
_SUBSET_LABELS = {"overall": "Overall", "unseen": "Unseen", "tail": "Tail"}


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
    #: Labelled segments whose (verb, noun) pair is not an action (scored as action misses).
    num_outside_vocabulary: int = 0
    outside_vocabulary_uids: tuple[str, ...] = ()
    #: A run that saw only part of the split (fast_dev_run, limit_*_batches).
    partial: bool = False
    #: Segments in the split (``None`` when unknown); ``num_samples`` were evaluated.
    split_size: int | None = None
    #: The data set's name for titles ("EGTEA Gaze+"); ``None``: the protocol's EPIC-KITCHENS.
    dataset: str | None = None

    @property
    def title(self) -> str:
        """``"EPIC-KITCHENS-55 action anticipation"`` (or the data set's name)."""
        default = {"ek55": "EPIC-KITCHENS-55", "ek100": "EPIC-KITCHENS-100"}[self.protocol]
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
        dropped = "left out" if self.discarded == "drop" else "scored as zeros"
        label_width = max(len(s.label) for s in self.series) + 2
        partial = " (PARTIAL run)" if self.partial else ""
        lines = [f"{self.title}: {self.name}{partial}"]
        if self.split_size is not None:
            lines.append(f"{self.num_samples} of {self.split_size} segments of the split")
        lines += [
            f"{self.num_evaluated} samples evaluated of {self.num_samples} "
            f"({self.num_discarded} discarded samples {dropped})",
        ]
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
        lines.append(" " * label_width + "".join(f"{_time_label(t):>8}" for t in self.times))
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
            "outside_vocabulary": {
                "count": self.num_outside_vocabulary,
                "first_uids": list(self.outside_vocabulary_uids),
            },
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

        outside = data.get("outside_vocabulary") or {}

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
            num_outside_vocabulary=int(outside.get("count", 0)),
            outside_vocabulary_uids=tuple(outside.get("first_uids", ())),
            partial=bool(data.get("partial", False)),
            split_size=None if data.get("split_size") is None else int(data["split_size"]),
            dataset=data.get("dataset"),
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
