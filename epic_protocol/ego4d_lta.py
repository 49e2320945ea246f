"""Ego4D long-term action anticipation (FHO LTA): annotations, windows and frame mapping.

The files a user downloads with the Ego4D CLI (``--datasets annotations``, written to
``<output_directory>/v2/annotations/``, ``v1/`` with ``--version v1``; docs/ego4d_lta.md)::

    fho_lta_train.json, fho_lta_val.json, fho_lta_test_unannotated.json
        {"clips": [{"clip_uid", "video_uid", "action_idx",
                    "action_clip_start_sec", "action_clip_end_sec",
                    "action_clip_start_frame", "action_clip_end_frame",
                    "clip_parent_start_frame",
                    "verb", "verb_label", "noun", "noun_label", ...}, ...]}
        (the test file has no verb/noun keys)
    fho_lta_taxonomy.json
        {"verbs": [name, ...], "nouns": [name, ...]}   (list index == class id)

Entries may come in any order; they are grouped by ``clip_uid`` and sorted by ``action_idx``.
Windows are built exactly as the official Ego4D forecasting dataset builds them
(``clip_forecasting_dataset`` in EGO4D/forecasting): for a clip with actions a_0..a_{M-1},
window ``i`` for ``i in range(M - Z - N + 1)`` observes a_i..a_{i+N-1} and forecasts the Z
next actions; its id is ``<clip_uid>_<action_idx of the last observed action>`` (the
official ``last_clip_ids``, the keys of the challenge's ``outputs.json``).

Frames. ``action_clip_*_frame`` count from 0 at the start of the clip video
(``<clip_uid>.mp4``, 30 fps); the clip starts at frame ``clip_parent_start_frame`` (0-based)
of its parent video ``video_uid``. Feature files (:mod:`epic_protocol.features`) number frames
from 1. :func:`feature_frames` maps a clip-relative 0-based frame ``f`` onto:

* ``keying="clip"`` (features the project extracted from the clip videos): video ``clip_uid``,
  frame ``f + 1``;
* ``keying="video"`` (Ego4D's released per-video features, ``rulstm-import ego4d-features``):
  video ``video_uid``, frame ``clip_parent_start_frame + f + 1``.

Observed input (:meth:`LTAWindow.observed_frames`): for each of the N observed actions, S
steps evenly spaced over its span, oldest first, the last step of each action at its end
frame; no step reads a frame after the end of the last observed action (the official input
boundary). Ego4D actions can overlap, so the first future action may start before that end,
exactly as in the official setup.

Every reader error is one line (:class:`LTAAnnotationError`) naming the file and the clip.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from epic_protocol.annotations import open_text
from epic_protocol.errors import DataError

PathLike = str | Path

#: Ego4D's clip videos and annotations are at 30 fps.
EGO4D_FPS = 30.0
#: Default observed actions (the official SlowFast/MViT baselines; the transformer uses 4).
NUM_INPUT_ACTIONS = 2
#: Default forecast length (the challenge's Z).
NUM_FUTURE_ACTIONS = 20
#: Default feature steps per observed action.
STEPS_PER_ACTION = 4

FeatureKeying = Literal["clip", "video"]
FEATURE_KEYINGS: tuple[str, ...] = ("clip", "video")

_REQUIRED = (
    "clip_uid",
    "video_uid",
    "action_idx",
    "action_clip_start_frame",
    "action_clip_end_frame",
    "clip_parent_start_frame",
)


class LTAAnnotationError(DataError, ValueError):
    """A malformed FHO LTA file; the message names the file and the clip."""


@dataclass(frozen=True, slots=True)
class LTAAction:
    """One annotated action of an Ego4D clip.

    ``start_frame``/``end_frame`` are 0-based frames of the clip video at 30 fps (the file's
    ``action_clip_*_frame``); ``parent_start_frame`` is the 0-based frame of the parent video
    where the clip starts. Labels are ``None`` in the unannotated test split.
    """

    clip_uid: str
    video_uid: str
    action_idx: int
    start_frame: int
    end_frame: int
    parent_start_frame: int
    verb: int | None = None
    noun: int | None = None

    @property
    def labelled(self) -> bool:
        return self.verb is not None and self.noun is not None


@dataclass(frozen=True)
class LTATaxonomy:
    """Verb and noun names; the list index is the class id."""

    verbs: tuple[str, ...]
    nouns: tuple[str, ...]

    @property
    def num_verbs(self) -> int:
        return len(self.verbs)

    @property
    def num_nouns(self) -> int:
        return len(self.nouns)


@dataclass(frozen=True)
class LTAWindow:
    """N observed actions of one clip followed by the Z actions to forecast."""

    clip_uid: str
    observed: tuple[LTAAction, ...]
    future: tuple[LTAAction, ...]

    @property
    def id(self) -> str:
        """``<clip_uid>_<action_idx of the last observed action>`` (the official key)."""
        return f"{self.clip_uid}_{self.observed[-1].action_idx}"

    @property
    def video_uid(self) -> str:
        return self.observed[-1].video_uid

    @property
    def labelled(self) -> bool:
        return all(action.labelled for action in self.future)

    @property
    def future_verbs(self) -> np.ndarray:
        """int64 [Z] verb labels of the future actions (-1 where unlabelled)."""
        return np.array([_label(a.verb) for a in self.future], dtype=np.int64)

    @property
    def future_nouns(self) -> np.ndarray:
        """int64 [Z] noun labels of the future actions (-1 where unlabelled)."""
        return np.array([_label(a.noun) for a in self.future], dtype=np.int64)

    @property
    def observed_verbs(self) -> np.ndarray:
        return np.array([_label(a.verb) for a in self.observed], dtype=np.int64)

    @property
    def observed_nouns(self) -> np.ndarray:
        return np.array([_label(a.noun) for a in self.observed], dtype=np.int64)

    def observed_frames(self, steps_per_action: int = STEPS_PER_ACTION) -> np.ndarray:
        """int64 [N * S] clip-relative 0-based frames the observed steps read, oldest first.

        Action ``a`` contributes ``start + floor((end - start) * (s + 1) / S)`` for
        ``s = 0..S-1`` (its last step at its end frame); every frame is capped at the end of
        the last observed action, the input boundary (an earlier action that overlaps it
        may end later).
        """
        if steps_per_action < 1:
            raise ValueError(f"steps_per_action must be >= 1, got {steps_per_action}")
        s = np.arange(1, steps_per_action + 1, dtype=np.int64)
        rows = [
            a.start_frame + ((a.end_frame - a.start_frame) * s) // steps_per_action
            for a in self.observed
        ]
        frames = np.concatenate(rows)  # (N * S,)
        return np.minimum(frames, self.observed[-1].end_frame)


def _label(value: int | None) -> int:
    return -1 if value is None else int(value)


def read_taxonomy(path: PathLike) -> LTATaxonomy:
    """Read ``fho_lta_taxonomy.json`` (``{"verbs": [...], "nouns": [...]}``)."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise LTAAnnotationError(f"{path}: expected a JSON object with 'verbs' and 'nouns'")
    names: dict[str, tuple[str, ...]] = {}
    for key in ("verbs", "nouns"):
        value = data.get(key)
        if not isinstance(value, list) or not value:
            raise LTAAnnotationError(f"{path}: '{key}' must be a non-empty list of names")
        names[key] = tuple(str(v) for v in value)
    return LTATaxonomy(verbs=names["verbs"], nouns=names["nouns"])


def _load_json(path: Path) -> Any:
    try:
        with open_text(path) as handle:  # UTF-8 with or without a byte-order mark
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LTAAnnotationError(f"{path}: not valid JSON ({error})") from None


def _int(entry: Mapping[str, Any], key: str, path: Path, clip: str) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise LTAAnnotationError(f"{path}: clip {clip}: {key} must be an integer, got {value!r}")
    return int(value)


def read_lta_annotations(
    path: PathLike, *, taxonomy: LTATaxonomy | None = None
) -> dict[str, list[LTAAction]]:
    """Read an ``fho_lta_*.json`` file: ``{clip_uid: actions sorted by action_idx}``.

    Clips keep the order of their first entry in the file. Labels are read when the file has
    them (``verb_label``/``noun_label``); a file where some entries have labels and others
    not is an error. With ``taxonomy``, labels must be valid class ids.

    Raises:
        LTAAnnotationError: bad JSON, a missing key, a non-integer value, a duplicate
            ``(clip_uid, action_idx)``, an end before a start, or a label outside the
            taxonomy; the message names the file and the clip.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    data = _load_json(path)
    entries = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise LTAAnnotationError(f"{path}: expected a JSON object with a 'clips' list")
    labelled: bool | None = None
    clips: dict[str, dict[int, LTAAction]] = defaultdict(dict)
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LTAAnnotationError(f"{path}: clips[{position}] is not an object")
        clip = str(entry.get("clip_uid", f"clips[{position}]"))
        missing = [key for key in _REQUIRED if key not in entry]
        if missing:
            raise LTAAnnotationError(
                f"{path}: clip {clip} (clips[{position}]): missing key {missing[0]!r}"
            )
        has_labels = "verb_label" in entry or "noun_label" in entry
        if labelled is None:
            labelled = has_labels
        elif labelled != has_labels:
            raise LTAAnnotationError(
                f"{path}: clip {clip} (clips[{position}]): "
                + (
                    "missing key 'verb_label'"
                    if labelled
                    else "has labels but earlier entries have none"
                )
            )
        verb = noun = None
        if labelled:
            for key in ("verb_label", "noun_label"):
                if key not in entry:
                    raise LTAAnnotationError(
                        f"{path}: clip {clip} (clips[{position}]): missing key {key!r}"
                    )
            verb = _int(entry, "verb_label", path, clip)
            noun = _int(entry, "noun_label", path, clip)
            if taxonomy is not None:
                for name, value, count in (
                    ("verb_label", verb, taxonomy.num_verbs),
                    ("noun_label", noun, taxonomy.num_nouns),
                ):
                    if not 0 <= value < count:
                        raise LTAAnnotationError(
                            f"{path}: clip {clip} action_idx {entry['action_idx']}: {name} "
                            f"{value} is outside the taxonomy (0..{count - 1})"
                        )
        action = LTAAction(
            clip_uid=clip,
            video_uid=str(entry["video_uid"]),
            action_idx=_int(entry, "action_idx", path, clip),
            start_frame=_int(entry, "action_clip_start_frame", path, clip),
            end_frame=_int(entry, "action_clip_end_frame", path, clip),
            parent_start_frame=_int(entry, "clip_parent_start_frame", path, clip),
            verb=verb,
            noun=noun,
        )
        if action.start_frame < 0 or action.end_frame < action.start_frame:
            raise LTAAnnotationError(
                f"{path}: clip {clip} action_idx {action.action_idx}: frames "
                f"{action.start_frame}..{action.end_frame} are not a valid span"
            )
        if action.parent_start_frame < 0:
            raise LTAAnnotationError(
                f"{path}: clip {clip}: clip_parent_start_frame {action.parent_start_frame} < 0"
            )
        actions = clips[clip]
        if action.action_idx in actions:
            raise LTAAnnotationError(
                f"{path}: clip {clip}: duplicate action_idx {action.action_idx}"
            )
        if actions:
            first = next(iter(actions.values()))
            if (first.video_uid, first.parent_start_frame) != (
                action.video_uid,
                action.parent_start_frame,
            ):
                raise LTAAnnotationError(
                    f"{path}: clip {clip}: entries disagree on video_uid/clip_parent_start_frame"
                )
        actions[action.action_idx] = action
    return {clip: [a for _, a in sorted(actions.items())] for clip, actions in clips.items()}


def build_windows(
    clips: Mapping[str, Sequence[LTAAction]],
    *,
    num_input_actions: int = NUM_INPUT_ACTIONS,
    num_future_actions: int = NUM_FUTURE_ACTIONS,
) -> list[LTAWindow]:
    """Every window, as the official dataset builds them: for a clip of M actions (sorted by
    ``action_idx``), ``i in range(M - Z - N + 1)``; a clip with fewer than N + Z actions has
    none. Windows come clip by clip (in ``clips`` order), oldest first."""
    if num_input_actions < 1 or num_future_actions < 1:
        raise ValueError("num_input_actions and num_future_actions must be >= 1")
    windows: list[LTAWindow] = []
    n, z = num_input_actions, num_future_actions
    for clip, actions in clips.items():
        actions = sorted(actions, key=lambda a: a.action_idx)
        for i in range(len(actions) - z - n + 1):
            windows.append(
                LTAWindow(
                    clip_uid=clip,
                    observed=tuple(actions[i : i + n]),
                    future=tuple(actions[i + n : i + n + z]),
                )
            )
    return windows


def read_lta_windows(
    path: PathLike,
    *,
    taxonomy: LTATaxonomy | None = None,
    num_input_actions: int = NUM_INPUT_ACTIONS,
    num_future_actions: int = NUM_FUTURE_ACTIONS,
) -> list[LTAWindow]:
    """:func:`read_lta_annotations` then :func:`build_windows`."""
    return build_windows(
        read_lta_annotations(path, taxonomy=taxonomy),
        num_input_actions=num_input_actions,
        num_future_actions=num_future_actions,
    )


def feature_frames(
    window: LTAWindow, clip_frames: np.ndarray, keying: FeatureKeying
) -> tuple[str, np.ndarray]:
    """Map clip-relative 0-based frames onto a feature file's video key and 1-based frames.

    ``keying="clip"``: ``(clip_uid, f + 1)``; ``keying="video"``:
    ``(video_uid, clip_parent_start_frame + f + 1)``.
    """
    frames = np.asarray(clip_frames, dtype=np.int64)
    if keying == "clip":
        return window.clip_uid, frames + 1
    if keying == "video":
        last = window.observed[-1]
        return last.video_uid, frames + last.parent_start_frame + 1
    raise ValueError(f"keying must be one of {FEATURE_KEYINGS}, got {keying!r}")


def needed_frames(
    windows: Iterable[LTAWindow],
    *,
    steps_per_action: int = STEPS_PER_ACTION,
    keying: FeatureKeying = "clip",
) -> dict[str, np.ndarray]:
    """``{video key: sorted unique 1-based frames}`` that the windows' observed steps read
    (what a sparse extraction must store)."""
    wanted: dict[str, set[int]] = defaultdict(set)
    for window in windows:
        key, frames = feature_frames(window, window.observed_frames(steps_per_action), keying)
        wanted[key].update(int(f) for f in frames)
    return {key: np.array(sorted(v), dtype=np.int64) for key, v in wanted.items()}


def needed_frames_for_file(
    path: PathLike,
    *,
    steps_per_action: int = STEPS_PER_ACTION,
    keying: FeatureKeying = "clip",
) -> dict[str, np.ndarray]:
    """What ``rulstm-extract --only-needed`` stores for an ``fho_lta_*.json``: the S step
    frames of **every** action (1-based, per video key). Every window, whatever N and Z,
    reads a subset of them: a window's steps are its observed actions' steps, capped at the
    last observed action's end frame, which is that action's own last step."""
    clips = read_lta_annotations(path)
    everything = [
        LTAWindow(clip_uid=clip, observed=(action,), future=())
        for clip, actions in clips.items()
        for action in actions
    ]
    return needed_frames(everything, steps_per_action=steps_per_action, keying=keying)


# ---------------------------------------------------------------------------------------------
# Writers (the readers' inverses; used by the synthetic kitchen and the tests)


def write_taxonomy(path: PathLike, taxonomy: LTATaxonomy) -> None:
    """Write ``fho_lta_taxonomy.json``."""
    Path(path).write_text(
        json.dumps({"verbs": list(taxonomy.verbs), "nouns": list(taxonomy.nouns)}, indent=1)
    )


def write_lta_annotations(
    path: PathLike,
    actions: Iterable[LTAAction],
    *,
    taxonomy: LTATaxonomy | None = None,
    fps: float = EGO4D_FPS,
    labelled: bool = True,
) -> None:
    """Write an ``fho_lta_*.json`` file (``labelled=False``: the test layout, no labels)."""
    entries = []
    for a in actions:
        entry: dict[str, Any] = {
            "clip_uid": a.clip_uid,
            "video_uid": a.video_uid,
            "action_idx": a.action_idx,
            "action_clip_start_sec": a.start_frame / fps,
            "action_clip_end_sec": a.end_frame / fps,
            "action_clip_start_frame": a.start_frame,
            "action_clip_end_frame": a.end_frame,
            "clip_parent_start_frame": a.parent_start_frame,
            "clip_parent_start_sec": a.parent_start_frame / fps,
        }
        if labelled:
            if not a.labelled:
                raise ValueError(f"clip {a.clip_uid} action_idx {a.action_idx} has no labels")
            if taxonomy is not None:
                entry["verb"] = taxonomy.verbs[int(a.verb)]  # type: ignore[arg-type]
                entry["noun"] = taxonomy.nouns[int(a.noun)]  # type: ignore[arg-type]
            entry["verb_label"] = int(a.verb)  # type: ignore[arg-type]
            entry["noun_label"] = int(a.noun)  # type: ignore[arg-type]
        entries.append(entry)
    Path(path).write_text(json.dumps({"clips": entries}))
