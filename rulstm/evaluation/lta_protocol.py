"""The Ego4D long-term anticipation evaluation protocol (``ego4d_lta``), registered with
:class:`rulstm.evaluation.protocol.EvaluationProtocol`.

:class:`Ego4DLTAProtocol` owns what the rest of the project needs to know about the protocol:
its metric names (``<head>/ED@Z`` and ``<head>/AUED``, registered with ``mode: min`` in
:data:`rulstm.evaluation.names.METRICS`), the headline / checkpoint-selection metric
(``val/verb/ED@20``, lower is better: ``mode: min``; the official baseline selects on the verb
ED@Z), the report title and the challenge file (``outputs.json``, written by
:class:`rulstm.lightning_lta.LTAOutputsWriter`). It scores K sequences per window with the
scorer of :mod:`rulstm.evaluation.lta`: :meth:`~Ego4DLTAProtocol.records` turns one batch's
sequences and labels into :class:`LTARecords` (gathered and de-duplicated by window id like
any :class:`~rulstm.evaluation.records.SegmentRecords`), :meth:`~Ego4DLTAProtocol.evaluate`
scores all windows at once into an :class:`LTAReport`. :class:`rulstm.lightning_lta.LTAModule`
logs its validation and test metrics through it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epic_protocol.ego4d_lta import NUM_FUTURE_ACTIONS, LTAWindow
from rulstm.evaluation.lta import (
    HEADS,
    OFFICIAL_HEADS,
    LTAScores,
    score_lta,
    score_predictions_file,
    write_predictions,
)
from rulstm.evaluation.names import Mode
from rulstm.evaluation.plots import plot_edit_distance
from rulstm.evaluation.protocol import EvaluationProtocol, Selection, register_protocol
from rulstm.evaluation.records import SegmentRecords

#: ``kind`` of an LTA report's JSON file.
LTA_REPORT_KIND = "rulstm-lta-report"


@dataclass
class LTARecords(SegmentRecords):
    """Per-window records: ``uids`` (W window ids), sampled sequences ``verb``/``noun`` int
    (W, K, Z) and labels ``verb_labels``/``noun_labels`` int (W, Z)."""

    uids: list[str]
    verb: np.ndarray
    noun: np.ndarray
    verb_labels: np.ndarray
    noun_labels: np.ndarray


@dataclass
class LTAReport:
    """ED@Z and AUED per head of one evaluation (the :class:`EvaluationReport` shape)."""

    name: str
    scores: LTAScores
    protocol: str = "ego4d_lta"
    title: str = ""
    partial: bool = False
    split_size: int | None = None
    checkpoint: str | None = None
    #: The head whose ED@Z is the headline (and checkpoint-selection) metric.
    headline_head: str = "verb"

    @property
    def num_samples(self) -> int:
        return self.scores.num_windows

    def table(self) -> str:
        return f"{self.title}: {self.name}\n{self.scores.table()}"

    def metrics(self, prefix: str = "test") -> dict[str, float]:
        """``{"<prefix>/<head>/ED@Z": .., "<prefix>/<head>/AUED": ..}`` (lower is better)."""
        z = self.scores.num_future_actions
        values: dict[str, float] = {}
        for head in self.scores.curves:
            values[f"{prefix}/{head}/ED@{z}"] = self.scores.ed(head)
            values[f"{prefix}/{head}/AUED"] = self.scores.aued(head)
        return values

    def to_json(self, path: str | Path) -> Path:
        """The scores (as ``rulstm-score ego4d-lta --json``: ``{head: {"ED@Z", "AUED"}}``),
        the logged names with their values (``metrics``: ``test/verb/ED@20`` ...), the
        headline, the ED curves (z = 1..Z) and the run (checkpoint, partial, split size)."""
        z = self.scores.num_future_actions
        headline = f"test/{self.headline_head}/ED@{z}"
        metrics = self.metrics("test")
        data = {
            "kind": LTA_REPORT_KIND,
            "protocol": self.protocol,
            "name": self.name,
            "partial": self.partial,
            "split_size": self.split_size,
            "checkpoint": self.checkpoint,
            **self.scores.as_dict(),
            "num_future_actions": z,
            "headline": {
                "head": self.headline_head,
                "metric": f"ED@{z}",
                "mode": "min",
                "name": headline,
                "value": metrics.get(headline),
            },
            "metrics": metrics,
            "curves": {head: curve.tolist() for head, curve in self.scores.curves.items()},
        }
        return _replace(Path(path), json.dumps(data, indent=2))

    def to_csv(self, path: str | Path) -> Path:
        """Long format, like the next-action reports: ``name,protocol,head,metric,value,key``,
        one row per head and metric (``ED@Z``, ``AUED``); ``key`` is the logged name
        (``test/verb/ED@20``)."""
        z = self.scores.num_future_actions
        rows: list[list[Any]] = [["name", "protocol", "head", "metric", "value", "key"]]
        for head in self.scores.curves:
            for metric, value in (
                (f"ED@{z}", self.scores.ed(head)),
                ("AUED", self.scores.aued(head)),
            ):
                rows.append(
                    [self.name, self.protocol, head, metric, repr(value), f"test/{head}/{metric}"]
                )
        text = io.StringIO(newline="")
        csv.writer(text).writerows(rows)
        return _replace(Path(path), text.getvalue())

    @classmethod
    def from_json(cls, path: str | Path) -> LTAReport | None:
        """A report :meth:`to_json` wrote, else ``None`` (another kind of file)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("kind") != LTA_REPORT_KIND:
            return None
        scores = LTAScores(
            num_windows=int(data["num_windows"]),
            num_future_actions=int(data["num_future_actions"]),
            curves={head: np.asarray(curve) for head, curve in data["curves"].items()},
        )
        return cls(
            name=data["name"],
            scores=scores,
            protocol=data["protocol"],
            partial=bool(data.get("partial")),
            split_size=data.get("split_size"),
            checkpoint=data.get("checkpoint"),
            headline_head=(data.get("headline") or {}).get("head", "verb"),
        )


def _replace(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


@register_protocol
class Ego4DLTAProtocol(EvaluationProtocol):
    """Ego4D FHO long-term anticipation: ED@Z and AUED per head, K sequences per window.

    Args:
        num_future_actions: ``Z`` (the challenge: 20).
        num_sequences: ``K`` sequences per window (the challenge: 5).
        headline_head: the head whose ED@Z selects checkpoints (the official baseline's
            checkpoint metric is the verb ED@Z, ``val_0_ED_19``).
        dataset: the data set's name in titles.
    """

    name = "ego4d_lta"
    title = "Ego4D long-term anticipation (FHO LTA): edit distance, lower is better"
    selection = Selection("verb", f"ED@{NUM_FUTURE_ACTIONS}", mode="min", time=None)
    #: Not a :data:`rulstm.evaluation.submission.FORMATS` format: the challenge file is
    #: ``outputs.json``, written by ``rulstm.lightning_lta.LTAOutputsWriter``.
    submission = None
    submission_format = "outputs.json"
    heads: tuple[str, ...] = HEADS
    official_heads: tuple[str, ...] = OFFICIAL_HEADS

    def __init__(
        self,
        *,
        num_future_actions: int = NUM_FUTURE_ACTIONS,
        num_sequences: int = 5,
        headline_head: str = "verb",
        dataset: str | None = None,
    ) -> None:
        super().__init__(dataset=dataset)
        if headline_head not in self.heads:
            raise ValueError(f"headline_head must be one of {self.heads}, got {headline_head!r}")
        if num_future_actions < 1 or num_sequences < 1:
            raise ValueError(
                "num_future_actions and num_sequences must be >= 1, got "
                f"{num_future_actions} and {num_sequences}"
            )
        self.num_future_actions = num_future_actions
        self.num_sequences = num_sequences
        self.headline_head = headline_head
        self.selection = Selection(headline_head, f"ED@{num_future_actions}", mode="min", time=None)

    @property
    def report_title(self) -> str:
        return self.display_name

    @property
    def mode(self) -> Mode:
        return self.selection.mode

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``<head>/ED@Z`` and ``<head>/AUED`` for every head (logged with a stage prefix)."""
        z = self.num_future_actions
        return tuple(f"{head}/{metric}" for head in self.heads for metric in (f"ED@{z}", "AUED"))

    def logged_names(self, stage: str) -> list[str]:
        """Every name logged for ``stage``, e.g. ``val/verb/ED@20``."""
        return [f"{stage}/{name}" for name in self.metric_names]

    def headline_metric(self, stage: str = "val") -> str:
        """The logged name checkpoint selection monitors, e.g. ``val/verb/ED@20``."""
        return f"{stage}/{self.headline_head}/ED@{self.num_future_actions}"

    def is_better(self, new: float, old: float) -> bool:
        return new < old if self.mode == "min" else new > old

    # ------------------------------------------------------------------ EvaluationProtocol
    def records(self, outputs: Mapping[str, Any]) -> LTARecords:
        """One batch: ``{"ids": W window ids, "verb"/"noun": int (W, K, Z), "verb_labels"/
        "noun_labels": int (W, Z)}`` (arrays or tensors) -> :class:`LTARecords`."""
        keys = ("ids", "verb", "noun", "verb_labels", "noun_labels")
        missing = [key for key in keys if key not in outputs]
        if missing:
            raise KeyError(f"the {self.name} protocol needs {list(keys)}; missing {missing}")

        def array(value: Any) -> np.ndarray:
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            return np.asarray(value, dtype=np.int64)

        return LTARecords(
            uids=[str(i) for i in outputs["ids"]],
            **{key: array(outputs[key]) for key in keys[1:]},
        )

    def evaluate(self, records: LTARecords, *, name: str) -> LTAReport | None:
        """ED@Z and AUED of every window at once; ``None`` without windows."""
        if not len(records):
            return None
        scores = self.score(records.verb, records.noun, records.verb_labels, records.noun_labels)
        return LTAReport(
            name=name,
            scores=scores,
            protocol=self.name,
            title=self.report_title,
            headline_head=self.headline_head,
        )

    def load_report(self, path: Path) -> LTAReport | None:
        report = LTAReport.from_json(path)
        return report if report is not None and report.protocol == self.name else None

    def plot(self, reports: Mapping[str, Any], path: Path) -> Path | None:
        """ED against z = 1..Z, one panel per head, one line per report."""
        curves = {
            name: {head: curve.tolist() for head, curve in report.scores.curves.items()}
            for name, report in reports.items()
        }
        return plot_edit_distance(curves, path, title=self.display_name)

    def combined_plot_name(self) -> str:
        """File name of the plot of every report in the folder: ``ed_ego4d_lta.png``."""
        return f"ed_{self.name}.png"

    # ------------------------------------------------------------------ scoring and files
    def score(
        self,
        verb_preds: np.ndarray,
        noun_preds: np.ndarray,
        verb_labels: np.ndarray,
        noun_labels: np.ndarray,
    ) -> LTAScores:
        """Score int [W, K, Z] sequences against int [W, Z] labels."""
        return score_lta(verb_preds, noun_preds, verb_labels, noun_labels)

    def score_file(self, path: str | Path, windows: Sequence[LTAWindow]) -> LTAScores:
        """Score an ``outputs.json`` against labelled windows (names bad ids)."""
        return score_predictions_file(path, windows)

    def write_submission(
        self, path: str | Path, ids: Sequence[str], verb_preds: np.ndarray, noun_preds: np.ndarray
    ) -> None:
        """Write ``outputs.json`` in the official layout."""
        write_predictions(path, ids, verb_preds, noun_preds)
