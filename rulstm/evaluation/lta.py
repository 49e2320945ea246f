"""Ego4D long-term anticipation scoring: ED@Z and AUED, equal to the official Ego4D code.

Official definitions (``ego4d_forecasting/evaluation/lta_metrics.py`` in EGO4D/forecasting,
read for the definitions, not copied):

* ``edit_distance``: for each window, the minimum over its K predicted sequences of the
  Levenshtein distance to the Z true labels divided by Z; the mean over windows. (Its
  docstring says Damerau-Levenshtein; the call, ``editdistance.eval``, is plain Levenshtein,
  and so is this module.)
* ``AUED``: ED over the prefixes z = 1..Z (each divided by its own z), integrated with the
  trapezoid rule and divided by Z - 1.

They are computed per head, verb and noun. ``action`` is this project's own addition: the
same distances over (verb, noun) pair tokens (an action is right only when both are), labelled
as such in every table. All windows are scored at once (not a mean of per-batch means).

The predictions file (the challenge's ``outputs.json``)::

    {"<clip_uid>_<action_idx>": {"verb": [[Z ints] x K], "noun": [[Z ints] x K]}, ...}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epic_protocol.ego4d_lta import LTAWindow
from epic_protocol.errors import DataError

HEADS: tuple[str, ...] = ("verb", "noun", "action")
#: Heads the official code scores; ``action`` is the project's own.
OFFICIAL_HEADS: tuple[str, ...] = ("verb", "noun")
ACTION_NOTE = (
    "action: (verb, noun) pair tokens, this project's own metric (not in the official code)"
)


class LTAPredictionError(DataError, ValueError):
    """A malformed predictions file; the message names the file and the window id."""


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Plain Levenshtein distance (insertions, deletions, substitutions; cost 1 each)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
        previous = current
    return previous[-1]


def prefix_distances(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Levenshtein distance of every prefix pair ``(preds[..., :z], labels[..., :z])``.

    Args:
        preds: int [M, Z] sequences.
        labels: int [M, Z] sequences (one per row of ``preds``).

    Returns:
        int64 [M, Z]: column ``z - 1`` is the distance between the two length-z prefixes,
        read off the diagonal of one dynamic-programming table per row.
    """
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    if preds.shape != labels.shape or preds.ndim != 2:
        raise ValueError(f"preds {preds.shape} and labels {labels.shape} must both be [M, Z]")
    m, z = preds.shape
    # table[:, i, j]: distance between preds[:, :i] and labels[:, :j]
    table = np.zeros((m, z + 1, z + 1), dtype=np.int64)
    table[:, :, 0] = np.arange(z + 1)
    table[:, 0, :] = np.arange(z + 1)
    for i in range(1, z + 1):
        for j in range(1, z + 1):
            substitute = table[:, i - 1, j - 1] + (preds[:, i - 1] != labels[:, j - 1])
            table[:, i, j] = np.minimum(
                np.minimum(table[:, i - 1, j] + 1, table[:, i, j - 1] + 1), substitute
            )
    diagonal = np.arange(1, z + 1)
    return table[:, diagonal, diagonal]  # (M, Z)


def edit_distance_curve(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ED at every prefix length, averaged over windows.

    Args:
        preds: int [W, K, Z] K sequences per window.
        labels: int [W, Z].

    Returns:
        float64 [Z]: entry ``z - 1`` is the mean over windows of
        ``min_k levenshtein(preds[w, k, :z], labels[w, :z]) / z`` (official ``edit_distance``
        on the prefix).
    """
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    if preds.ndim != 3 or labels.ndim != 2 or preds.shape[::2] != labels.shape:
        raise ValueError(
            f"preds must be [W, K, Z] and labels [W, Z]; got {preds.shape}, {labels.shape}"
        )
    w, k, z = preds.shape
    if w == 0:
        raise ValueError("no windows to score")
    repeated = np.repeat(labels, k, axis=0)  # (W * K, Z), window-major like preds
    distances = prefix_distances(preds.reshape(w * k, z), repeated).reshape(w, k, z)
    per_window = distances.min(axis=1) / np.arange(1, z + 1)  # (W, Z)
    return per_window.mean(axis=0)


def aued(curve: np.ndarray) -> float:
    """Trapezoid area under the ED curve over z = 1..Z divided by Z - 1 (NaN for Z = 1)."""
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) < 2:
        return math.nan
    return float(np.sum((curve[1:] + curve[:-1]) / 2.0) / (len(curve) - 1))


@dataclass(frozen=True)
class LTAScores:
    """ED@Z and AUED per head (verb, noun, and the project's action), and the ED curves."""

    num_windows: int
    num_future_actions: int
    curves: dict[str, np.ndarray]

    def ed(self, head: str) -> float:
        return float(self.curves[head][-1])

    def aued(self, head: str) -> float:
        return aued(self.curves[head])

    def as_dict(self) -> dict[str, Any]:
        """``{"verb": {"ED@20", "AUED"}, "noun": {...}, "action": {...}, "num_windows"}``."""
        z = self.num_future_actions
        out: dict[str, Any] = {
            head: {f"ED@{z}": self.ed(head), "AUED": self.aued(head)} for head in self.curves
        }
        out["num_windows"] = self.num_windows
        out["notes"] = [ACTION_NOTE]
        return out

    def table(self) -> str:
        z = self.num_future_actions
        lines = [f"{'':8s}{f'ED@{z}':>10s}{'AUED':>10s}"]
        for head in self.curves:
            name = head + ("*" if head not in OFFICIAL_HEADS else "")
            lines.append(f"{name:8s}{self.ed(head):10.4f}{self.aued(head):10.4f}")
        lines.append(f"{self.num_windows} windows, lower is better")
        if "action" in self.curves:
            lines.append("* " + ACTION_NOTE)
        return "\n".join(lines)


def score_lta(
    verb_preds: np.ndarray,
    noun_preds: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
) -> LTAScores:
    """Score K sequences per window (int [W, K, Z] each) against the labels (int [W, Z])."""
    verb_preds = np.asarray(verb_preds, dtype=np.int64)
    noun_preds = np.asarray(noun_preds, dtype=np.int64)
    curves = {
        "verb": edit_distance_curve(verb_preds, verb_labels),
        "noun": edit_distance_curve(noun_preds, noun_labels),
    }
    both_nouns = np.concatenate([noun_preds.ravel(), np.asarray(noun_labels).ravel()])
    base = int(max(both_nouns.max(initial=0), 0)) + 1
    curves["action"] = edit_distance_curve(
        verb_preds * base + noun_preds,
        np.asarray(verb_labels, dtype=np.int64) * base + np.asarray(noun_labels, dtype=np.int64),
    )
    return LTAScores(
        num_windows=int(verb_preds.shape[0]),
        num_future_actions=int(verb_preds.shape[2]),
        curves=curves,
    )


# ---------------------------------------------------------------------------------------------
# outputs.json


def write_predictions(
    path: str | Path, ids: Sequence[str], verb_preds: np.ndarray, noun_preds: np.ndarray
) -> None:
    """Write ``outputs.json`` in the official layout (int [W, K, Z] verb and noun arrays)."""
    verb_preds = np.asarray(verb_preds, dtype=np.int64)
    noun_preds = np.asarray(noun_preds, dtype=np.int64)
    if verb_preds.shape != noun_preds.shape or len(ids) != len(verb_preds):
        raise ValueError("ids, verb_preds and noun_preds must describe the same windows")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate window ids")
    payload = {
        window: {"verb": verb.tolist(), "noun": noun.tolist()}
        for window, verb, noun in zip(ids, verb_preds, noun_preds)
    }
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload))
    partial.replace(path)  # never a half-written outputs.json


def _sequences(path: Path, window: str, head: str, value: Any, z: int) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise LTAPredictionError(
            f"{path}: {window}: '{head}' must be a non-empty list of K sequences"
        )
    for sequence in value:
        if not isinstance(sequence, list) or len(sequence) != z:
            length = len(sequence) if isinstance(sequence, list) else type(sequence).__name__
            raise LTAPredictionError(
                f"{path}: {window}: a '{head}' sequence has length {length}, expected Z={z}"
            )
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in sequence):
            raise LTAPredictionError(
                f"{path}: {window}: '{head}' sequences must hold non-negative integers"
            )
    return np.array(value, dtype=np.int64)  # (K, Z)


def read_predictions(
    path: str | Path, windows: Sequence[LTAWindow], *, num_future_actions: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``outputs.json`` for ``windows``: verb and noun int [W, K, Z], in window order.

    Raises:
        LTAPredictionError: a window missing from the file, an id that is no window, a
            sequence of the wrong length, a K that differs between heads or windows; the
            message names the file and the id.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LTAPredictionError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise LTAPredictionError(f"{path}: expected an object keyed by window id")
    z = num_future_actions or (len(windows[0].future) if windows else 0)
    expected = [w.id for w in windows]
    known = set(expected)
    extra = [key for key in data if key not in known]
    if extra:
        raise LTAPredictionError(
            f"{path}: {extra[0]}: not a window of the annotations ({len(extra)} such ids)"
        )
    verbs, nouns = [], []
    k: int | None = None
    for window in expected:
        if window not in data:
            missing = sum(1 for key in expected if key not in data)
            raise LTAPredictionError(f"{path}: {window}: missing ({missing} windows missing)")
        entry = data[window]
        if not isinstance(entry, Mapping) or "verb" not in entry or "noun" not in entry:
            raise LTAPredictionError(f"{path}: {window}: expected {{'verb': ..., 'noun': ...}}")
        verb = _sequences(path, window, "verb", entry["verb"], z)
        noun = _sequences(path, window, "noun", entry["noun"], z)
        if len(verb) != len(noun) or (k is not None and len(verb) != k):
            raise LTAPredictionError(
                f"{path}: {window}: {len(verb)} verb and {len(noun)} noun sequences; "
                f"every window needs the same K" + (f" ({k})" if k is not None else "")
            )
        k = len(verb)
        verbs.append(verb)
        nouns.append(noun)
    if not verbs:
        raise LTAPredictionError(f"{path}: no windows to score")
    return np.stack(verbs), np.stack(nouns)


def score_predictions_file(path: str | Path, windows: Sequence[LTAWindow]) -> LTAScores:
    """Score ``outputs.json`` against labelled ``windows``."""
    unlabelled = [w.id for w in windows if not w.labelled]
    if unlabelled:
        raise ValueError(
            f"window {unlabelled[0]} has no labels: score against an annotated split "
            "(fho_lta_val.json), not the unannotated test file"
        )
    verb_preds, noun_preds = read_predictions(path, windows)
    verb_labels = np.stack([w.future_verbs for w in windows])
    noun_labels = np.stack([w.future_nouns for w in windows])
    return score_lta(verb_preds, noun_preds, verb_labels, noun_labels)
