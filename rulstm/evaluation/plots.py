"""Plots of one or several reports: accuracy against anticipation time (next action), edit
distance against the number of forecast actions (Ego4D long-term anticipation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rulstm.evaluation.names import METRICS, SUBSETS
from rulstm.evaluation.ranking import TASKS
from rulstm.evaluation.report import AnticipationReport


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
    ``{"Bayes bound": {("action", "top5"): [values at the reports' times]}}``.
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
            subset_label = f"{SUBSETS[subset]} " if SUBSETS[subset] else ""
            axis.set_title(f"{task.capitalize()}: {subset_label}{METRICS[metric].label}")
            axis.set_xlabel("anticipation time (s)")
            axis.set_ylabel("%")
            axis.invert_xaxis()  # 2.0 s on the left, 0.25 s (closest to the action) right
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(title or first.title)
    # Fixed margins: a layout engine (tight/constrained) doubles the rendering time.
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.92, hspace=0.5, wspace=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_edit_distance(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """PNG of the edit distance against the number of forecast actions z = 1..Z (Ego4D
    long-term anticipation; lower is better), one panel per head, one line per report.

    Args:
        curves: report name -> head (``verb``, ``noun``, ``action``) -> ED at z = 1..Z.
        path: the PNG to write.
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_edit_distance needs at least one report")
    heads = list(dict.fromkeys(head for per_head in curves.values() for head in per_head))
    figure, axes = plt.subplots(1, len(heads), figsize=(4.2 * len(heads), 3.4), squeeze=False)
    for col, head in enumerate(heads):
        axis = axes[0][col]
        for label, per_head in curves.items():
            if head in per_head:
                values = list(per_head[head])
                axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        axis.set_title(f"{head.capitalize()}: edit distance")
        axis.set_xlabel("forecast actions z")
        axis.set_ylabel("ED@z (lower is better)")
        axis.set_ylim(bottom=0.0)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(title)
    # Fixed margins: a layout engine (tight/constrained) doubles the rendering time.
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.84, wspace=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
