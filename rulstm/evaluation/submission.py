"""EPIC-KITCHENS action anticipation challenge files: build, validate, write.

Formats (one JSON object per file):

* EK100 (``version`` "0.2"): ``{"version": "0.2", "challenge": "action_anticipation",
  "sls_pt": int, "sls_tl": int, "sls_td": int, "results": {narration_id: {"verb": {"0": s,
  ... all 97}, "noun": {... all 300}, "action": {"v,n": s, ... the top 100}}}}``;
  the three supervision levels (SLS: pre-training, training labels, training data) are
  integers in 0..5.
* EK55 (``version`` "0.1"): the same without the SLS fields, keyed by segment uid, with all
  125 verbs and 352 nouns; one file per test split: ``seen.json`` (S1) and ``unseen.json``
  (S2), zipped together for upload.

As in the reference implementation, verb and noun scores are the marginal probabilities
of the action softmax, action scores are the raw action logits (only their order matters),
all taken at 1 s before the action, and samples that cannot be observed (the reference's
discarded samples) score zero everywhere.

Every file is validated before anything is written; a :class:`SubmissionError` names the
broken rule (in brackets) and the offending id.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from epic_protocol.annotations import ActionVocabulary, open_text
from epic_protocol.errors import DataError
from rulstm.evaluation.classes import CLASS_COUNTS
from rulstm.evaluation.ranking import ArrayLike, marginalize
from rulstm.evaluation.records import SegmentRecords
from rulstm.resources import resolve_path

#: The challenge file formats (an :class:`~rulstm.evaluation.protocol.EvaluationProtocol`
#: names its own as ``submission``, or none).
ChallengeFormat = Literal["ek55", "ek100"]
CHALLENGE = "action_anticipation"
TOP_ACTIONS = 100


@dataclass(frozen=True)
class SubmissionFormat:
    version: str
    num_verbs: int
    num_nouns: int
    needs_sls: bool


FORMATS: dict[str, SubmissionFormat] = {
    "ek55": SubmissionFormat("0.1", *CLASS_COUNTS["ek55"], needs_sls=False),
    "ek100": SubmissionFormat("0.2", *CLASS_COUNTS["ek100"], needs_sls=True),
}


class SubmissionError(DataError, ValueError):
    """A challenge file that breaks a format rule; the message starts with ``[rule]``."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"[{rule}] {message}")
        self.rule = rule


def challenge_format(protocol: str) -> SubmissionFormat:
    if protocol not in FORMATS:
        raise ValueError(f"protocol must be 'ek55' or 'ek100', got {protocol!r}")
    return FORMATS[protocol]


@dataclass(frozen=True)
class SupervisionLevels:
    """EK100 Supervision Levels Scale: pre-training (pt), training labels (tl) and training
    data (td), each an integer in 0..5. The reference RU-LSTM submission declares (1, 4, 3);
    declare the levels of *your* model."""

    pt: int
    tl: int
    td: int

    def __post_init__(self) -> None:
        for name in ("pt", "tl", "td"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
                raise SubmissionError(
                    "sls", f"sls_{name} must be an integer in 0..5, got {value!r}"
                )

    def as_fields(self) -> dict[str, int]:
        return {"sls_pt": self.pt, "sls_tl": self.tl, "sls_td": self.td}


# --------------------------------------------------------------------------- scores


@dataclass
class SubmissionScores(SegmentRecords):
    """What a challenge file holds, per sample: verb and noun probabilities ``(N, V)`` and
    ``(N, Nn)``, and the top actions ``(N, K)`` (ids and scores, best first)."""

    uids: list[str]
    verb: np.ndarray
    noun: np.ndarray
    top_actions: np.ndarray
    top_action_scores: np.ndarray


def submission_scores(
    action_scores: ArrayLike,
    *,
    vocabulary: ActionVocabulary,
    uids: Sequence[str],
    valid: ArrayLike | None = None,
    top_k: int = TOP_ACTIONS,
) -> SubmissionScores:
    """Challenge scores from action logits at one anticipation time, ``(N, A)``.

    Rows with ``valid`` False score zero everywhere (their "top" actions are then the first
    ``top_k`` action ids)."""
    scores = (
        action_scores.detach().float()
        if isinstance(action_scores, torch.Tensor)
        else torch.as_tensor(np.asarray(action_scores), dtype=torch.float32)
    )
    if scores.ndim != 2 or scores.shape[1] != vocabulary.num_actions:
        raise ValueError(
            f"action scores must be (N, {vocabulary.num_actions}), got {tuple(scores.shape)}"
        )
    if len(uids) != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} score rows but {len(uids)} uids")
    if not 1 <= top_k <= vocabulary.num_actions:
        raise ValueError(f"top_k must be in 1..{vocabulary.num_actions}, got {top_k}")
    if valid is None:
        keep = torch.ones(scores.shape[0], dtype=torch.bool)
    elif isinstance(valid, torch.Tensor):
        keep = valid.detach().reshape(-1).bool()
    else:
        keep = torch.as_tensor(np.asarray(valid, dtype=bool).reshape(-1))
    keep = keep.to(scores.device).unsqueeze(1)  # (N,) -> (N, 1)
    verb = marginalize(scores, torch.from_numpy(vocabulary.verbs), num_classes=vocabulary.num_verbs)
    noun = marginalize(scores, torch.from_numpy(vocabulary.nouns), num_classes=vocabulary.num_nouns)
    verb = torch.where(keep, verb, torch.zeros_like(verb))
    noun = torch.where(keep, noun, torch.zeros_like(noun))
    scores = torch.where(keep, scores, torch.zeros_like(scores))
    # A stable descending sort keeps ties (the zero rows) in action-id order.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top_k]
    return SubmissionScores(
        uids=[str(uid) for uid in uids],
        verb=verb.cpu().numpy(),
        noun=noun.cpu().numpy(),
        top_actions=order.cpu().numpy().astype(np.int64),
        top_action_scores=scores.gather(1, order).cpu().numpy(),
    )


# --------------------------------------------------------------------------- validation


def _is_score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_class_scores(uid: str, task: str, scores: Any, num_classes: int) -> None:
    if not isinstance(scores, Mapping):
        raise SubmissionError("entry", f"segment {uid}: '{task}' must map class ids to scores")
    seen = set()
    for key, value in scores.items():
        try:
            class_id = int(key)
        except (TypeError, ValueError):
            raise SubmissionError(
                "class-id", f"segment {uid}: {task} key {key!r} is not a class id"
            ) from None
        if str(class_id) != str(key) or not 0 <= class_id < num_classes:
            raise SubmissionError(
                "unexpected-class",
                f"segment {uid}: unexpected {task} class {key!r} (expected 0..{num_classes - 1})",
            )
        if not _is_score(value):
            raise SubmissionError(
                "score", f"segment {uid}: {task} {key} score {value!r} is not a finite number"
            )
        seen.add(class_id)
    if len(seen) != num_classes:
        missing = sorted(set(range(num_classes)) - seen)
        raise SubmissionError(
            "missing-class",
            f"segment {uid}: {len(missing)} {task} classes lack a score, e.g. {missing[:5]}",
        )


def _check_action_scores(
    uid: str, scores: Any, *, num_verbs: int, num_nouns: int, num_actions: int
) -> None:
    if not isinstance(scores, Mapping):
        raise SubmissionError("entry", f"segment {uid}: 'action' must map 'v,n' keys to scores")
    if len(scores) != num_actions:
        raise SubmissionError(
            "action-count",
            f"segment {uid}: {len(scores)} action scores; exactly {num_actions} are required",
        )
    for key, value in scores.items():
        parts = str(key).split(",")
        try:
            verb, noun = (int(p) for p in parts)
        except ValueError:
            raise SubmissionError(
                "action-key", f"segment {uid}: action key {key!r} is not 'verb,noun'"
            ) from None
        if not (0 <= verb < num_verbs and 0 <= noun < num_nouns):
            raise SubmissionError(
                "action-key",
                f"segment {uid}: action {key!r} is outside {num_verbs} verbs x {num_nouns} nouns",
            )
        if not _is_score(value):
            raise SubmissionError(
                "score", f"segment {uid}: action {key} score {value!r} is not a finite number"
            )


def validate_entry(
    uid: str,
    entry: Any,
    *,
    num_verbs: int,
    num_nouns: int,
    num_actions: int = TOP_ACTIONS,
) -> None:
    """Check one ``results`` entry: all verb and noun classes, exactly ``num_actions``
    actions, finite numeric scores."""
    if not isinstance(entry, Mapping):
        raise SubmissionError("entry", f"segment {uid}: the entry must be an object")
    for task in ("verb", "noun", "action"):
        if task not in entry:
            raise SubmissionError("entry", f"segment {uid}: missing '{task}' scores")
    _check_class_scores(uid, "verb", entry["verb"], num_verbs)
    _check_class_scores(uid, "noun", entry["noun"], num_nouns)
    _check_action_scores(
        uid, entry["action"], num_verbs=num_verbs, num_nouns=num_nouns, num_actions=num_actions
    )


def _check_ids(ids: Sequence[str], expected_ids: Collection[str] | None) -> None:
    counts: dict[str, int] = {}
    for uid in ids:
        counts[uid] = counts.get(uid, 0) + 1
    duplicated = [uid for uid, c in counts.items() if c > 1]
    if duplicated:
        raise SubmissionError(
            "ids", f"segment {duplicated[0]} appears {counts[duplicated[0]]} times"
        )
    if expected_ids is None:
        return
    expected = {str(uid) for uid in expected_ids}
    missing = sorted(expected - counts.keys())
    if missing:
        raise SubmissionError(
            "ids",
            f"{len(missing)} segments of the split have no result, e.g. {missing[:5]}",
        )
    unexpected = sorted(counts.keys() - expected)
    if unexpected:
        raise SubmissionError(
            "ids", f"{len(unexpected)} results are not in the split, e.g. {unexpected[:5]}"
        )


def _check_header(submission: Mapping[str, Any], fmt: SubmissionFormat) -> None:
    if submission.get("version") != fmt.version:
        raise SubmissionError(
            "version", f"version must be {fmt.version!r}, got {submission.get('version')!r}"
        )
    if submission.get("challenge") != CHALLENGE:
        raise SubmissionError(
            "challenge", f"challenge must be {CHALLENGE!r}, got {submission.get('challenge')!r}"
        )
    fields = ("sls_pt", "sls_tl", "sls_td")
    present = [f for f in fields if f in submission]
    if fmt.needs_sls and len(present) < 3:
        missing = [f for f in fields if f not in submission]
        raise SubmissionError("sls", f"missing supervision levels {missing}")
    if present:
        SupervisionLevels(*(submission.get(f) for f in fields))


def validate_submission(
    submission: Mapping[str, Any],
    *,
    protocol: ChallengeFormat,
    expected_ids: Collection[str] | None = None,
    num_actions: int = TOP_ACTIONS,
) -> None:
    """Check a whole challenge object (e.g. one read back from a file).

    Rules (named in the error): version, challenge, sls (EK100: all three in 0..5), ids
    (no duplicates; equal to ``expected_ids`` when given), entry, class-id,
    unexpected-class, missing-class, action-count, action-key, score (finite numbers)."""
    fmt = challenge_format(protocol)
    if not isinstance(submission, Mapping):
        raise SubmissionError("entry", "the submission must be a JSON object")
    _check_header(submission, fmt)
    results = submission.get("results")
    if not isinstance(results, Mapping):
        raise SubmissionError("entry", "missing 'results' object")
    _check_ids(list(results), expected_ids)
    for uid, entry in results.items():
        validate_entry(
            uid, entry, num_verbs=fmt.num_verbs, num_nouns=fmt.num_nouns, num_actions=num_actions
        )


# --------------------------------------------------------------------------- building


def _header(protocol: ChallengeFormat, sls: SupervisionLevels | None) -> dict[str, Any]:
    fmt = challenge_format(protocol)
    if fmt.needs_sls and sls is None:
        raise SubmissionError("sls", f"{protocol} submissions need supervision levels (sls=...)")
    header: dict[str, Any] = {"version": fmt.version, "challenge": CHALLENGE}
    if sls is not None:
        header.update(sls.as_fields())
    return header


def _entries(
    scores: SubmissionScores, vocabulary: ActionVocabulary
) -> Iterator[tuple[str, dict[str, dict[str, float]]]]:
    action_keys = [f"{v},{n}" for v, n in zip(vocabulary.verbs, vocabulary.nouns)]
    for row, uid in enumerate(scores.uids):
        yield (
            uid,
            {
                "verb": {str(c): s for c, s in enumerate(scores.verb[row].tolist())},
                "noun": {str(c): s for c, s in enumerate(scores.noun[row].tolist())},
                "action": {
                    action_keys[a]: s
                    for a, s in zip(
                        scores.top_actions[row].tolist(), scores.top_action_scores[row].tolist()
                    )
                },
            },
        )


def _check_scores(scores: SubmissionScores, fmt: SubmissionFormat, vocabulary: ActionVocabulary):
    n = len(scores.uids)
    shapes = {
        "verb": (scores.verb.shape, (n, fmt.num_verbs)),
        "noun": (scores.noun.shape, (n, fmt.num_nouns)),
    }
    for task, (have, want) in shapes.items():
        if have != want:
            raise SubmissionError("missing-class", f"{task} scores are {have}, expected {want}")
    if vocabulary.num_verbs != fmt.num_verbs or vocabulary.num_nouns != fmt.num_nouns:
        raise SubmissionError(
            "action-key",
            f"the vocabulary has {vocabulary.num_verbs} verbs and {vocabulary.num_nouns} nouns; "
            f"this format needs {fmt.num_verbs} and {fmt.num_nouns}",
        )
    for task, values in (
        ("verb", scores.verb),
        ("noun", scores.noun),
        ("action", scores.top_action_scores),
    ):
        bad = ~np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
        if bad.any():
            uid = scores.uids[int(np.argmax(bad))]
            raise SubmissionError("score", f"segment {uid}: non-finite {task} scores")


def build_submission(
    scores: SubmissionScores,
    *,
    vocabulary: ActionVocabulary,
    protocol: ChallengeFormat,
    sls: SupervisionLevels | None = None,
    expected_ids: Collection[str] | None = None,
) -> dict[str, Any]:
    """The validated challenge object, in memory (see :func:`write_submission` for files)."""
    fmt = challenge_format(protocol)
    submission = _header(protocol, sls)
    _check_ids(scores.uids, expected_ids)
    _check_scores(scores, fmt, vocabulary)
    submission["results"] = dict(_entries(scores, vocabulary))
    validate_submission(
        submission,
        protocol=protocol,
        expected_ids=expected_ids,
        num_actions=scores.top_actions.shape[1],
    )
    return submission


def write_submission(
    path: str | Path,
    scores: SubmissionScores,
    *,
    vocabulary: ActionVocabulary,
    protocol: ChallengeFormat,
    sls: SupervisionLevels | None = None,
    expected_ids: Collection[str] | None = None,
    num_actions: int = TOP_ACTIONS,
) -> Path:
    """Validate and write a challenge file, streaming entries (EK100 test files are large).

    Header, ids, shapes and finiteness are checked before the file is opened; every entry is
    validated as written, into a temporary file renamed at the end, so a failure never
    leaves a partial file at ``path``."""
    fmt = challenge_format(protocol)
    header = _header(protocol, sls)
    _check_ids(scores.uids, expected_ids)
    _check_scores(scores, fmt, vocabulary)
    if scores.top_actions.shape[1] != num_actions:
        raise SubmissionError(
            "action-count",
            f"{scores.top_actions.shape[1]} action scores per segment; exactly {num_actions} "
            "are required",
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w") as handle:
            handle.write(json.dumps(header)[:-1] + ', "results": {')
            for index, (uid, entry) in enumerate(_entries(scores, vocabulary)):
                validate_entry(
                    uid,
                    entry,
                    num_verbs=fmt.num_verbs,
                    num_nouns=fmt.num_nouns,
                    num_actions=num_actions,
                )
                separator = ",\n" if index else "\n"
                body = json.dumps(entry, separators=(",", ":"), allow_nan=False)
                handle.write(f"{separator}{json.dumps(uid)}: {body}")
            handle.write("\n}}\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_split_ids(path: str | Path) -> list[str]:
    """Segment ids of a split: a RU-LSTM split CSV (first column, EK55 uids without their
    zero padding), an EPIC CSV (``uid`` / ``narration_id`` column) or a one-id-per-line list."""
    path = resolve_path(path)
    with open_text(path) as handle:
        rows = [[c.strip() for c in row] for row in csv.reader(handle) if any(row)]
    if not rows:
        return []
    header = rows[0]
    for column in ("narration_id", "uid"):
        if column in header:
            index = header.index(column)
            return [row[index] for row in rows[1:]]
    return [(row[0].lstrip("0") or "0") if row[0].isdigit() else row[0] for row in rows]
