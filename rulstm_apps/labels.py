"""Human-readable labels for the demo: action names and a video's ground-truth timeline."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from epic_protocol import (
    ActionVocabulary,
    Segment,
    read_actions_csv,
    read_annotations,
    read_class_names,
)

log = logging.getLogger(__name__)

# Shipped vocabularies, recognised by their size when the user passes no --actions.
BUILTIN_VOCABULARIES = {2513: "builtin:ek55/actions.csv", 3806: "builtin:ek100/actions.csv"}


def _readable(name: str) -> str:
    # EK55 names are "take_pan", EK100 ones "take tap"; the overlay shows both as words.
    return name.strip().replace("_", " ")


@dataclass(frozen=True)
class ActionNames:
    """Names of actions (the model's classes) and of annotated segments.

    ``vocabulary`` (an actions.csv) names actions and maps them to (verb, noun); the verb and
    noun class lists, when given, turn (verb, noun) pairs into "verb noun" names. Without any,
    names fall back to "action 17" / "verb 3 noun 5".
    """

    num_classes: int
    vocabulary: ActionVocabulary | None = None
    verbs: Sequence[str] | None = None
    nouns: Sequence[str] | None = None

    @classmethod
    def from_files(
        cls,
        *,
        num_classes: int,
        actions: str | Path | None = None,
        verb_classes: str | Path | None = None,
        noun_classes: str | Path | None = None,
        guess_builtin: bool = True,
    ) -> ActionNames:
        """Read the vocabularies (``builtin:ek55/actions.csv`` style paths work).

        With ``guess_builtin`` and no ``actions``, a model with 2513 (EK55) or 3806 (EK100)
        classes is named with the shipped actions.csv of that size.
        """
        from rulstm.resources import resolve_path

        if actions is None and guess_builtin and num_classes in BUILTIN_VOCABULARIES:
            actions = BUILTIN_VOCABULARIES[num_classes]
            log.info("naming the %d classes with %s", num_classes, actions)
        vocabulary = None
        if actions is not None:
            path = resolve_path(actions)
            if not path.is_file():
                raise FileNotFoundError(f"actions file not found: {path}")
            vocabulary = read_actions_csv(path)
            if vocabulary.num_actions != num_classes:
                raise ValueError(
                    f"{path} names {vocabulary.num_actions} actions but the model predicts "
                    f"{num_classes} classes; pass the actions.csv the model was trained with"
                )
        verbs = nouns = None
        if verb_classes is not None:
            verbs = read_class_names(_existing(resolve_path(verb_classes), "verb classes"))
        if noun_classes is not None:
            nouns = read_class_names(_existing(resolve_path(noun_classes), "noun classes"))
        return cls(num_classes=num_classes, vocabulary=vocabulary, verbs=verbs, nouns=nouns)

    def pair(self, verb: int, noun: int) -> str:
        verb_name = self.verbs[verb] if self.verbs and 0 <= verb < len(self.verbs) else None
        noun_name = self.nouns[noun] if self.nouns and 0 <= noun < len(self.nouns) else None
        if verb_name is None and noun_name is None:
            return f"verb {verb} noun {noun}"
        return _readable(f"{verb_name or f'verb {verb}'} {noun_name or f'noun {noun}'}")

    def action(self, action: int) -> str:
        """Name of a model class: the actions.csv name, "verb noun" from the class lists when
        only those can name it, or "action 17"."""
        if self.vocabulary is not None and 0 <= action < self.vocabulary.num_actions:
            if self.verbs and self.nouns:
                return self.pair(
                    int(self.vocabulary.verbs[action]), int(self.vocabulary.nouns[action])
                )
            return _readable(self.vocabulary.names[action])
        return f"action {action}"

    def segment(self, segment: Segment) -> str:
        """Name of an annotated segment: by its action id, else its (verb, noun)."""
        if segment.action is not None and segment.action >= 0:
            return self.action(segment.action)
        if segment.verb is not None and segment.noun is not None:
            return self.pair(segment.verb, segment.noun)
        return f"segment {segment.uid}"


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path


@dataclass(frozen=True)
class Upcoming:
    segment: Segment
    seconds: float  # until the segment starts


class VideoTimeline:
    """The annotated segments of one video, queried by frame (1-based at ``fps``)."""

    def __init__(self, segments: Sequence[Segment], *, fps: float) -> None:
        self.fps = fps
        self.segments = sorted(segments, key=lambda s: (s.start_frame, s.end_frame))
        self._starts = [s.start_frame for s in self.segments]

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        video_id: str,
        fps: float,
        vocabulary: ActionVocabulary | None = None,
    ) -> VideoTimeline:
        """Segments of ``video_id`` in a RU-LSTM split CSV or an EPIC CSV (with timestamps)."""
        from rulstm.resources import resolve_path

        path = resolve_path(path)
        segments = read_annotations(path, fps=fps, vocabulary=vocabulary)
        mine = [s for s in segments if s.video_id == video_id]
        if not mine:
            videos = sorted({s.video_id for s in segments})
            log.warning(
                "%s has no segment for video %r (it annotates %d videos, e.g. %s); pass "
                "--video_id to pick one",
                path,
                video_id,
                len(videos),
                ", ".join(videos[:5]),
            )
        return cls(mine, fps=fps)

    def __len__(self) -> int:
        return len(self.segments)

    def current(self, frame: int) -> Segment | None:
        """The segment under way at ``frame`` (the latest started, when they overlap)."""
        started = bisect.bisect_right(self._starts, frame)
        for segment in reversed(self.segments[:started]):
            if segment.end_frame >= frame:
                return segment
        return None

    def upcoming(self, frame: int) -> Upcoming | None:
        """The next segment starting after ``frame``, and the seconds until its start."""
        index = bisect.bisect_right(self._starts, frame)
        if index == len(self.segments):
            return None
        segment = self.segments[index]
        return Upcoming(segment, (segment.start_frame - frame) / self.fps)
