"""The Ego4D long-term anticipation evaluation protocol as one object.

:class:`Ego4DLTAProtocol` owns what the rest of the project needs to know about the protocol:
its metric names, the headline metric and its direction (edit distance: lower is better, so
checkpoint selection uses ``mode: min``), the report title and the submission format, and it
scores predictions (:mod:`rulstm.evaluation.lta`).

It has the shape of :class:`rulstm.evaluation.protocol.EvaluationProtocol` (a name, metric
names, a headline metric with a mode, a report title, a submission format) but is not yet
registered there: that base (merged while this was written) is driven by
``AnticipationEvaluator`` through per-segment ``records``/``evaluate``, while LTA scores K
sequences per window in :class:`rulstm.lightning_lta.LTAModule`. Adapting: subclass it with
``name = "ego4d_lta"``, ``selection = Selection("verb", "ED@20", time=None, mode="min")``
(logged names ``{stage}/{head}/ED@20`` and ``/AUED`` already follow
:mod:`rulstm.evaluation.names`; add both to ``METRICS`` with ``mode="min"``), ``records``
holding ids, sequences and labels, and ``evaluate`` wrapping :class:`LTAScores` as a report.
Until then :data:`LTA_PROTOCOLS` maps the name to this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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


@dataclass(frozen=True)
class Ego4DLTAProtocol:
    """Ego4D FHO long-term anticipation: ED@Z and AUED per head, K sequences per window.

    Args:
        num_future_actions: ``Z`` (the challenge: 20).
        num_sequences: ``K`` sequences per window (the challenge: 5).
        headline_head: the head whose ED@Z selects checkpoints (the official baseline's
            checkpoint metric is the verb ED@Z, ``val_0_ED_19``).
    """

    name: str = "ego4d_lta"
    num_future_actions: int = NUM_FUTURE_ACTIONS
    num_sequences: int = 5
    headline_head: str = "verb"
    report_title: str = "Ego4D long-term anticipation (FHO LTA): edit distance, lower is better"
    submission_format: str = "outputs.json"
    mode: Literal["min", "max"] = "min"
    heads: tuple[str, ...] = field(default=HEADS)
    official_heads: tuple[str, ...] = field(default=OFFICIAL_HEADS)

    def __post_init__(self) -> None:
        if self.headline_head not in self.heads:
            raise ValueError(
                f"headline_head must be one of {self.heads}, got {self.headline_head!r}"
            )

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``<head>/ED@Z`` and ``<head>/AUED`` for every head (logged with a stage prefix)."""
        z = self.num_future_actions
        return tuple(f"{head}/{metric}" for head in self.heads for metric in (f"ED@{z}", "AUED"))

    def headline_metric(self, stage: str = "val") -> str:
        """The logged name checkpoint selection monitors, e.g. ``val/verb/ED@20``."""
        return f"{stage}/{self.headline_head}/ED@{self.num_future_actions}"

    def is_better(self, new: float, old: float) -> bool:
        return new < old if self.mode == "min" else new > old

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


#: name -> protocol class (to be merged into the project's protocol registry).
LTA_PROTOCOLS: dict[str, type[Ego4DLTAProtocol]] = {"ego4d_lta": Ego4DLTAProtocol}
