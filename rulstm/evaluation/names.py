"""The one registry of metric names: what validation and test log, what reports store and
what ``ModelCheckpoint(monitor=...)`` may name.

A logged name is ``{stage}/{task}/{metric}[_{subset}]/{when}``:

* ``stage``: ``val`` or ``test`` (``train/loss`` during training);
* ``task``: ``verb``, ``noun`` or ``action`` (validation logs the action only);
* ``metric``: a key of :data:`METRICS` (``top1``, ``top5``, ``recall5``, ``mean_tta5``);
* ``subset``: a key of :data:`SUBSETS`, left out for ``overall``;
* ``when``: the anticipation time (``1.00s``, :func:`time_key`) or, for early recognition,
  the observed fraction of the action (``100.0%``, :func:`fraction_key`). ``mean_tta5`` has
  none. Validation also logs each action metric at the headline step without ``when``
  (``val/action/top5``: the progress bar's number).

Besides: ``{stage}/loss`` and, for MATT fusion, ``{stage}/attention/{modality}``. The
"Metric names" table of docs/evaluation.md lists the same names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from epic_protocol.errors import UsageError

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class MetricInfo:
    """One metric of the registry: its key, its label in tables and plots, its unit and
    whether larger (``max``) or smaller (``min``) is better."""

    key: str
    label: str
    unit: str
    mode: Mode
    description: str


METRICS: dict[str, MetricInfo] = {
    info.key: info
    for info in (
        MetricInfo("top1", "Top-1 Accuracy", "%", "max", "true class ranked first"),
        MetricInfo("top5", "Top-5 Accuracy", "%", "max", "true class among the 5 best"),
        MetricInfo(
            "recall5",
            "Mean Top-5 Recall",
            "%",
            "max",
            "top-5 recall of each class present, averaged over the classes",
        ),
        MetricInfo(
            "mean_tta5",
            "Mean TtA(5)",
            "s",
            "max",
            "earliest anticipation time with the true class in the top 5, mean over segments",
        ),
        # Ego4D long-term anticipation (rulstm.evaluation.lta_protocol): lower is better.
        MetricInfo(
            "ED@20",
            "ED@20",
            "",
            "min",
            "edit distance of the best of K sequences of the next 20 actions, / 20, mean over "
            "windows",
        ),
        MetricInfo(
            "AUED",
            "AUED",
            "",
            "min",
            "area under the ED curve over prefixes z = 1..Z (trapezoid rule) / (Z - 1)",
        ),
    )
}

#: Subsets a report may break a metric down to; ``overall`` is left out of names.
SUBSETS: dict[str, str] = {
    "overall": "",
    "many_shot": "Many-shot",
    "unseen": "Unseen",
    "tail": "Tail",
}

TASK_NAMES: tuple[str, ...] = ("verb", "noun", "action")


def time_key(seconds: float) -> str:
    """``1.0 -> "1.00s"``: the ``when`` of an anticipation time."""
    return f"{seconds:.2f}s"


def fraction_key(fraction: float) -> str:
    """``1.0 -> "100.0%"``: the ``when`` of an early-recognition step."""
    return f"{fraction:.1%}"


def series_key(task: str, metric: str, subset: str = "overall") -> str:
    """``("action", "recall5", "unseen") -> "action/recall5_unseen"``; checks the registry."""
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; the registry has {sorted(METRICS)}")
    if subset not in SUBSETS:
        raise KeyError(f"unknown subset {subset!r}; the registry has {sorted(SUBSETS)}")
    suffix = "" if subset == "overall" else f"_{subset}"
    return f"{task}/{metric}{suffix}"


def metric_name(
    stage: str, task: str, metric: str, subset: str = "overall", when: str | None = None
) -> str:
    """The logged name, e.g. ``metric_name("val", "action", "top5", when="1.00s")`` is
    ``val/action/top5/1.00s``."""
    name = f"{stage}/{series_key(task, metric, subset)}"
    return name if when is None else f"{name}/{when}"


def label(task: str, metric: str, subset: str = "overall") -> str:
    """``"Action Unseen Mean Top-5 Recall"``: the row label of tables and plot titles."""
    subset_label = SUBSETS[subset] + " " if SUBSETS[subset] else ""
    return f"{task.capitalize():<7}{subset_label}{METRICS[metric].label}"


def metric_mode(name: str) -> Mode | None:
    """Whether a logged ``name`` is better larger (``max``) or smaller (``min``): the
    registry's mode of its metric, ``min`` for a loss; ``None`` when unknown."""
    parts = name.split("/")
    if parts[-1] == "loss":
        return "min"
    if len(parts) >= 3:
        metric = parts[2]
        for subset in SUBSETS:
            metric = metric.removesuffix(f"_{subset}")
        if metric in METRICS:
            return METRICS[metric].mode
    return None


def module_metric_names(
    stage: str, *, whens: Sequence[str], modalities: Iterable[str] = ()
) -> list[str]:
    """Every name the LightningModule logs for ``stage`` (``val`` or ``test``): the action's
    top1/top5/recall5 at every ``when`` and at the headline step, the loss and the fusion
    weights of ``modalities``."""
    names = [f"{stage}/loss"]
    for metric in ("top1", "top5", "recall5"):
        names += [metric_name(stage, "action", metric, when=when) for when in whens]
        names.append(metric_name(stage, "action", metric))
    names += [f"{stage}/attention/{modality}" for modality in modalities]
    return names


def check_monitors(callbacks: Iterable[Any], valid: Sequence[str]) -> None:
    """A checkpoint or early-stopping ``monitor`` among ``callbacks`` that names none of the
    ``valid`` logged names, or whose ``mode`` contradicts :func:`metric_mode`, stops the run at
    start (a :class:`UsageError` listing the valid names / the right mode), not after the
    first epoch."""
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or not monitor:
            continue
        if monitor not in valid:
            raise UsageError(
                f"{type(callback).__name__}(monitor={monitor!r}) names no logged metric; "
                f"valid names: {', '.join(valid)}"
            )
        mode, better = getattr(callback, "mode", None), metric_mode(monitor)
        if mode in ("max", "min") and better is not None and mode != better:
            raise UsageError(
                f"{type(callback).__name__}(monitor={monitor!r}, mode={mode!r}): "
                f"{monitor} is better when {'larger' if better == 'max' else 'smaller'}; "
                f"set mode: {better}"
            )


_TIME_WHEN = re.compile(r"^\d+\.\d\ds$")  # time_key: 1.00s
_FRACTION_WHEN = re.compile(r"^\d+\.\d%$")  # fraction_key: 100.0%


def _when_order(when: str) -> float:
    """Oldest observation first, as the report tables: anticipation times descending
    (2.00s ... 0.25s), observed fractions ascending (12.5% ... 100.0%)."""
    if _TIME_WHEN.match(when):
        return -float(when[:-1])
    return float(when[:-1])


def _value(name: str, value: float) -> str:
    # Accuracies and recalls are percent (2 decimals); losses, ED and weights are fractions.
    return f"{value:.2f}" if metric_mode(name) == "max" else f"{value:.4f}"


def logged_table(metrics: Mapping[str, float], *, stage: str, width: int = 100) -> str:
    """The ``stage``'s logged values (``val``, ``test``) as a compact table under their logged
    names, one name in one spelling: a name ending in a ``when`` (``val/action/top5/1.00s``)
    is its row (``val/action/top5/``) followed by its column (``1.00s``); the other names
    (``val/action/top5``, ``val/loss``, ``val/attention/rgb``, ``val/verb/ED@20``) follow as
    ``name value`` pairs. Names of other stages are left out; ``""`` when none is left."""
    prefix = f"{stage}/"
    rows: dict[str, dict[str, float]] = {}
    others: dict[str, float] = {}
    for name in metrics:  # in logging order
        if not name.startswith(prefix):
            continue
        value = float(metrics[name])
        head, _, when = name.rpartition("/")
        if head != stage and (_TIME_WHEN.match(when) or _FRACTION_WHEN.match(when)):
            rows.setdefault(f"{head}/", {})[when] = value
        else:
            others[name] = value
    lines: list[str] = []
    if rows:
        whens = sorted({w for row in rows.values() for w in row}, key=_when_order)
        label = max(len(row) for row in rows)
        example = next(iter(rows)) + (time_key(1.0) if time_key(1.0) in whens else whens[-1])
        lines.append(f"{stage} metrics (a name is its row and column: {example})")
        lines.append(" " * label + "".join(f"{w:>9}" for w in whens))
        for row, values in rows.items():
            cells = "".join(
                f"{_value(row, values[w]):>9}" if w in values else f"{'-':>9}" for w in whens
            )
            lines.append(f"{row:<{label}}{cells}")
    line = ""
    for name, value in others.items():
        pair = f"{name} {_value(name, value)}"
        if line and len(line) + 3 + len(pair) > width:
            lines.append(line)
            line = ""
        line = f"{line}   {pair}" if line else pair
    if line:
        lines.append(line)
    return "\n".join(lines)
