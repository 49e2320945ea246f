"""The stochastic "recipe" behind the synthetic kitchen, and the best score any model can get.

The recipe is a first-order Markov chain over actions, i.e. (verb, noun) pairs: a video's
first action is drawn from :attr:`RecipeModel.initial`, every later one from the row of
:attr:`RecipeModel.transition` of the action before it. Each action has 3-8 likely
successors with a skewed distribution (plus a small chance of anything), so the next action
is never determined but the top-5 guess is usually right (see :func:`make_recipe`).

**The Bayes bound.** Anticipating the action that starts at frame ``s`` at ``tau`` seconds
means predicting it from the frames up to ``s - tau`` (exactly the frames that
:func:`epic_protocol.anticipation_frames` returns, the last of which is the ``tau`` one).
Under the generator the pixels up to that frame are a function of

* the actions already started (each rendered with a unique noun colour and a unique verb
  prop and motion, so every started action is identifiable from any of its frames),
* their timing (durations and gaps drawn independently of which actions they are),
* camera jitter and pixel noise (independent of everything else),

and nothing of the next action is drawn before its start frame. So, given the current
action ``a`` (the last one started), the next action is independent of everything else
that is observable, and the Bayes posterior is exactly ``transition[a]``; before a video's
first action (an empty counter) it is ``initial``. This needs the action before ``s`` to
have started by ``s - tau`` for every ``tau`` evaluated: :func:`bayes_bound` checks it and
raises otherwise (the generator guarantees it: every action + gap lasts at least 2.8 s).

The bound is the same at every anticipation time because the current action is already
visible at 2 s; it is reported per time anyway, in the layout of the evaluation.

Two numbers per top-k:

* **expected** accuracy: the posterior mass of the Bayes classifier's top-k set, averaged
  over samples: the accuracy it would get on average over all label draws given the same
  observations. Models are compared against this one (much less noisy than the realised
  accuracy on a few hundred validation samples).
* **realised** accuracy: how often the sampled label is in the Bayes classifier's top-k set
  on this validation split (ties broken towards the lower action id).

Samples that the RU-LSTM protocol drops (no frame at least 1) are scored as wrong, like the
evaluation does; the generator starts every video's first action late enough that there
are none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epic_protocol.annotations import Segment
from epic_protocol.sampling import anticipation_frames, anticipation_times

# The kitchen's vocabulary. Every verb has a distinct motion and prop in render.py; every
# noun a distinct saturated colour and shape.
VERBS: tuple[str, ...] = ("take", "put", "open", "cut", "pour", "stir", "wash")
NOUNS: tuple[str, ...] = (
    "tomato",
    "cheese",
    "lettuce",
    "cucumber",
    "bottle",
    "pan",
    "jar",
    "bowl",
)
# Which verbs each noun takes (20 actions): every verb is used with >= 2 nouns and every
# noun with >= 2 verbs, so neither the verb nor the noun alone identifies the current action.
_NOUN_VERBS: dict[str, tuple[str, ...]] = {
    "tomato": ("take", "cut", "wash"),
    "cheese": ("open", "cut"),
    "lettuce": ("take", "wash"),
    "cucumber": ("put", "cut"),
    "bottle": ("open", "pour"),
    "pan": ("put", "stir", "wash"),
    "jar": ("take", "open", "pour"),
    "bowl": ("put", "stir", "pour"),
}


@dataclass(frozen=True)
class RecipeModel:
    """A first-order Markov chain over actions.

    ``actions[a]`` is the (verb id, noun id) of action ``a``; ``initial`` (A,) is the
    distribution of a video's first action and ``transition`` (A, A) the distribution of the
    next action given the current one (row-stochastic).
    """

    verbs: tuple[str, ...]
    nouns: tuple[str, ...]
    actions: tuple[tuple[int, int], ...]
    initial: np.ndarray
    transition: np.ndarray

    def __post_init__(self) -> None:
        num = len(self.actions)
        if num == 0:
            raise ValueError("a recipe needs at least one action")
        if len(set(self.actions)) != num:
            raise ValueError("actions must be distinct (verb, noun) pairs")
        for a, (verb, noun) in enumerate(self.actions):
            if not (0 <= verb < len(self.verbs) and 0 <= noun < len(self.nouns)):
                raise ValueError(f"action {a} = ({verb}, {noun}) is outside the vocabulary")
        # C order: the same values give the same matrix products (and bound) however they
        # were built, e.g. in the generator or loaded back from recipe.json.
        initial = np.ascontiguousarray(self.initial, dtype=np.float64)
        transition = np.ascontiguousarray(self.transition, dtype=np.float64)
        if initial.shape != (num,) or transition.shape != (num, num):
            raise ValueError(
                f"initial must be ({num},) and transition ({num}, {num}), got "
                f"{initial.shape} and {transition.shape}"
            )
        if (initial < 0).any() or not np.isclose(initial.sum(), 1.0):
            raise ValueError("initial must be a probability distribution")
        if (transition < 0).any() or not np.allclose(transition.sum(axis=1), 1.0):
            raise ValueError("every row of transition must be a probability distribution")
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "transition", transition)

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    @property
    def action_verbs(self) -> np.ndarray:
        """(A,) verb id of each action."""
        return np.array([v for v, _ in self.actions], dtype=np.int64)

    @property
    def action_nouns(self) -> np.ndarray:
        """(A,) noun id of each action."""
        return np.array([n for _, n in self.actions], dtype=np.int64)

    def action_name(self, action: int) -> str:
        verb, noun = self.actions[action]
        return f"{self.verbs[verb]} {self.nouns[noun]}"

    def sample_sequence(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n,) action ids of one video: a draw from the chain."""
        sequence = np.empty(n, dtype=np.int64)
        probs = self.initial
        for i in range(n):
            sequence[i] = rng.choice(self.num_actions, p=probs)
            probs = self.transition[sequence[i]]
        return sequence

    def posterior_next(self, history: Sequence[int]) -> np.ndarray:
        """(A,) distribution of the next action given the actions so far (oldest first).

        The chain is first order, so only the last one matters; an empty history means the
        next action is the video's first.
        """
        if len(history) == 0:
            return self.initial.copy()
        return self.transition[int(history[-1])].copy()

    def marginal(self, position: int) -> np.ndarray:
        """(A,) distribution of the action at 0-based ``position`` in a video,
        ``initial @ transition**position``: what an observer who sees nothing knows."""
        probs = self.initial
        for _ in range(position):
            probs = probs @ self.transition
        return probs

    def to_dict(self) -> dict[str, Any]:
        return {
            "verbs": list(self.verbs),
            "nouns": list(self.nouns),
            "actions": [
                {"id": a, "verb": v, "noun": n, "name": self.action_name(a)}
                for a, (v, n) in enumerate(self.actions)
            ],
            "initial": self.initial.tolist(),
            "transition": self.transition.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecipeModel:
        """Inverse of :meth:`to_dict` (extra keys, e.g. the generator's timing, are ignored)."""
        try:
            actions = tuple((int(a["verb"]), int(a["noun"])) for a in data["actions"])
            return cls(
                verbs=tuple(data["verbs"]),
                nouns=tuple(data["nouns"]),
                actions=actions,
                initial=np.asarray(data["initial"], dtype=np.float64),
                transition=np.asarray(data["transition"], dtype=np.float64),
            )
        except KeyError as error:
            raise ValueError(f"recipe is missing the key {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> RecipeModel:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as error:
            raise ValueError(f"{path}: not a recipe ({error})") from error


def _geometric(count: int, decay: float) -> np.ndarray:
    weights = decay ** np.arange(count, dtype=np.float64)
    return weights / weights.sum()


def _factor(
    rng: np.random.Generator, size: int, *, successors: int, decay: float, allow_self: bool
) -> np.ndarray:
    """(size, size) row-stochastic matrix: each row has ``successors`` entries with
    probabilities proportional to ``decay**rank``. The rank-j successors of all rows form a
    random permutation, so every class is about equally often a successor."""
    matrix = np.zeros((size, size))
    rows = np.arange(size)
    weights = _geometric(successors, decay)
    for rank in range(successors):
        for _ in range(10_000):
            target = rng.permutation(size)
            if (allow_self or (target != rows).all()) and not (matrix[rows, target] > 0).any():
                break
        else:
            raise RuntimeError(f"could not draw {successors} distinct successors of {size}")
        matrix[rows, target] = weights[rank]
    return matrix


def make_recipe(
    rng: np.random.Generator,
    *,
    verb_successors: int = 3,
    noun_successors: int = 4,
    decay: float = 0.5,
    slip: float = 0.06,
    min_successors: int = 3,
    max_successors: int = 8,
    num_first: int = 5,
) -> RecipeModel:
    """The kitchen recipe over the fixed vocabulary of :data:`VERBS` x :data:`NOUNS` actions.

    The chain is a product of a verb chain and a noun chain, plus a slip::

        transition[a, b] = (1 - slip) * V[verb(a), verb(b)] * N[noun(a), noun(b)] / Z(a)
                           + slip / A

    ``V`` gives each verb ``verb_successors`` other verbs, ``N`` each noun
    ``noun_successors`` nouns (possibly itself: take tomato -> cut tomato), both with
    probabilities proportional to ``decay**rank``; ``Z(a)`` renormalises over the actions
    that exist; ``slip`` is the chance of an unexpected step (any action). ``V`` and ``N``
    are redrawn until every action has between ``min_successors`` and ``max_successors``
    likely successors.

    Why this shape: the next action depends on both the current verb and the current noun,
    so neither alone is enough, but it does so through a product of experts, which is
    exactly what a late fusion of a verb-aware branch (flow) and a noun-aware branch (obj)
    can represent: learnable from a few hundred samples. With the defaults, top-1 of the
    Bayes posterior is ~0.5 and top-5 ~0.95.
    """
    if not 1 <= min_successors <= max_successors:
        raise ValueError("need 1 <= min_successors <= max_successors")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    if not 0 <= slip < 1:
        raise ValueError(f"slip must be in [0, 1), got {slip}")
    verb_id = {name: i for i, name in enumerate(VERBS)}
    actions = tuple(
        (verb_id[verb], noun)
        for noun, name in enumerate(NOUNS)
        for verb in sorted(_NOUN_VERBS[name], key=verb_id.__getitem__)
    )
    num = len(actions)
    verbs = np.array([v for v, _ in actions])
    nouns = np.array([n for _, n in actions])
    for _ in range(10_000):
        verb_chain = _factor(
            rng, len(VERBS), successors=verb_successors, decay=decay, allow_self=False
        )
        noun_chain = _factor(
            rng, len(NOUNS), successors=noun_successors, decay=decay, allow_self=True
        )
        # (A, A): V[verb(a), verb(b)] * N[noun(a), noun(b)]
        likely = verb_chain[verbs][:, verbs] * noun_chain[nouns][:, nouns]
        counts = (likely > 0).sum(axis=1)
        if counts.min() >= min_successors and counts.max() <= max_successors:
            break
    else:
        raise RuntimeError("no verb/noun chains give every action the requested successors")
    transition = (1 - slip) * likely / likely.sum(axis=1, keepdims=True) + slip / num
    initial = np.zeros(num)
    first = min(num_first, num)
    initial[rng.choice(num, size=first, replace=False)] = _geometric(first, decay)
    return RecipeModel(
        verbs=VERBS, nouns=NOUNS, actions=actions, initial=initial, transition=transition
    )


# ---------------------------------------------------------------------------- Bayes bound


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-5 accuracy, as fractions in [0, 1]."""

    top1: float
    top5: float


@dataclass(frozen=True)
class BoundAtTime:
    """The Bayes classifier at one anticipation time (seconds before the action).

    ``action`` is for the action label; ``verb`` / ``noun`` for the verb / noun posteriors
    obtained by summing the action posterior over the actions sharing a verb / noun (the
    same marginalisation the RU-LSTM evaluation uses).
    """

    time: float
    action_expected: Accuracy
    action_realised: Accuracy
    verb_expected: Accuracy
    verb_realised: Accuracy
    noun_expected: Accuracy
    noun_realised: Accuracy


@dataclass(frozen=True)
class ChanceLevel:
    """What a predictor that ignores the video gets, for actions.

    ``uniform``: guessing uniformly, ``k / A``. ``prior_expected`` / ``prior_realised``: the
    best observation-free predictor, which always answers the top-k of the average marginal
    ``mean_i initial @ transition**position_i`` over the samples (expected: that set's mass
    under the average marginal; realised: how often the sampled label is in it).
    """

    uniform: Accuracy
    prior_expected: Accuracy
    prior_realised: Accuracy


@dataclass(frozen=True)
class BayesBound:
    """The best accuracy any model can reach on a split, per anticipation time."""

    per_time: tuple[BoundAtTime, ...]
    chance: ChanceLevel
    num_samples: int
    num_dropped: int  # samples the RU-LSTM protocol drops, scored as wrong

    def at(self, time: float) -> BoundAtTime:
        """The entry for ``time`` seconds before the action (e.g. 1.0)."""
        for entry in self.per_time:
            if np.isclose(entry.time, time):
                return entry
        raise KeyError(f"no bound at {time} s; have {[e.time for e in self.per_time]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BayesBound:
        def accuracy(value: Mapping[str, float]) -> Accuracy:
            return Accuracy(top1=float(value["top1"]), top5=float(value["top5"]))

        per_time = tuple(
            BoundAtTime(
                time=float(entry["time"]),
                **{
                    key: accuracy(entry[key])
                    for key in (
                        "action_expected",
                        "action_realised",
                        "verb_expected",
                        "verb_realised",
                        "noun_expected",
                        "noun_realised",
                    )
                },
            )
            for entry in data["per_time"]
        )
        chance = data["chance"]
        return cls(
            per_time=per_time,
            chance=ChanceLevel(
                uniform=accuracy(chance["uniform"]),
                prior_expected=accuracy(chance["prior_expected"]),
                prior_realised=accuracy(chance["prior_realised"]),
            ),
            num_samples=int(data["num_samples"]),
            num_dropped=int(data["num_dropped"]),
        )

    @classmethod
    def load(cls, path: str | Path) -> BayesBound:
        """Read a ``bayes.json`` written by the generator."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a Bayes-bound file ({error!r})") from error


def _top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries, ties towards the lower index."""
    return np.argsort(-probs, kind="stable")[:k]


def _scores(posteriors: np.ndarray, labels: np.ndarray) -> tuple[Accuracy, Accuracy]:
    """(expected, realised) top-1/top-5 of the Bayes classifier; rows of zeros = dropped."""
    expected, realised = [], []
    for k in (1, 5):
        mass = hit = 0.0
        for probs, label in zip(posteriors, labels):
            if not probs.any():
                continue  # dropped sample: scored as wrong
            chosen = _top_k(probs, k)
            mass += float(probs[chosen].sum())
            hit += float(label in chosen)
        expected.append(mass / len(labels))
        realised.append(hit / len(labels))
    return Accuracy(*expected), Accuracy(*realised)


def _step_indices(times: Sequence[float], *, alpha: float, steps: int) -> list[int]:
    """Index into :func:`anticipation_frames`' output of each anticipation time."""
    indices = []
    for time in times:
        back = round(time / alpha)
        if not (np.isclose(back * alpha, time) and 1 <= back <= steps):
            raise ValueError(f"time {time} is not a multiple of alpha={alpha} within {steps} steps")
        indices.append(steps - back)
    return indices


def bayes_posteriors(
    recipe: RecipeModel,
    segments: Sequence[Segment],
    *,
    times: Sequence[float] | None = None,
    fps: float = 30.0,
    alpha: float = 0.25,
    steps: int = 14,
) -> tuple[np.ndarray, np.ndarray]:
    """The Bayes posterior over the next action of every segment, at every time.

    Returns ``(posteriors, positions)``: (num_times, N, A) in the order of ``segments``,
    all zeros for samples the protocol drops, and (N,) each segment's 0-based position in
    its video. ``segments`` must hold whole videos with ``action`` labels of ``recipe``;
    raises ``ValueError`` where the current action is not observable (module docstring).
    """
    if times is None:
        times = anticipation_times(alpha=alpha)
    step_of_time = _step_indices(times, alpha=alpha, steps=steps)
    if not segments:
        raise ValueError("no segments")
    by_video: dict[str, list[int]] = {}
    for index, segment in enumerate(segments):
        by_video.setdefault(segment.video_id, []).append(index)
    posteriors = np.zeros((len(times), len(segments), recipe.num_actions))
    positions = np.zeros(len(segments), dtype=np.int64)
    for video, indices in by_video.items():
        indices.sort(key=lambda i: segments[i].start_frame)
        for position, index in enumerate(indices):
            segment = segments[index]
            positions[index] = position
            _action(segment)
            frames = anticipation_frames(segment.start_frame, fps=fps, alpha=alpha, steps=steps)
            if frames is None:
                continue  # dropped by the protocol: scored as wrong
            previous = segments[indices[position - 1]] if position > 0 else None
            for time, step in zip(times, step_of_time):
                if previous is not None and previous.start_frame > frames[step]:
                    raise ValueError(
                        f"{video}: segment {segment.uid} (start {segment.start_frame}) follows "
                        f"{previous.uid}, which starts at frame {previous.start_frame}, after "
                        f"the frame {frames[step]} observed {time} s before: the current "
                        "action is not observable there and the bound would not be exact"
                    )
            history = [] if previous is None else [_action(previous)]
            posteriors[:, index] = recipe.posterior_next(history)
    return posteriors, positions


def bayes_bound(
    recipe: RecipeModel,
    segments: Sequence[Segment],
    *,
    times: Sequence[float] | None = None,
    fps: float = 30.0,
    alpha: float = 0.25,
    steps: int = 14,
) -> BayesBound:
    """The Bayes-optimal top-1/top-5 accuracy for anticipating each segment.

    ``segments`` must hold whole videos (every action of each video, so that each sample's
    current action is known), labelled with ``action`` ids of ``recipe``. ``times`` are the
    anticipation times in seconds (default: 2.0, 1.75, ..., 0.25), each a multiple of
    ``alpha`` within the ``steps`` observed steps. See the module docstring for why the
    posterior is ``transition[current action]``; this raises ``ValueError`` when a segment's
    previous action starts after the observed frame of some time, where that does not hold.
    """
    if times is None:
        times = anticipation_times(alpha=alpha)
    if not segments:
        raise ValueError("no segments to bound")
    posteriors, positions = bayes_posteriors(
        recipe, segments, times=times, fps=fps, alpha=alpha, steps=steps
    )
    labels = np.array([_action(s) for s in segments])
    verbs, nouns = recipe.action_verbs, recipe.action_nouns
    dropped = int((~posteriors[0].any(axis=1)).sum())

    per_time = []
    for t, time in enumerate(times):
        post = posteriors[t]  # (N, A)
        verb_post = post @ np.eye(len(recipe.verbs))[verbs]  # (N, A) @ (A, V) -> (N, V)
        noun_post = post @ np.eye(len(recipe.nouns))[nouns]  # (N, A) @ (A, Nn) -> (N, Nn)
        action_e, action_r = _scores(post, labels)
        verb_e, verb_r = _scores(verb_post, verbs[labels])
        noun_e, noun_r = _scores(noun_post, nouns[labels])
        per_time.append(
            BoundAtTime(
                time=float(time),
                action_expected=action_e,
                action_realised=action_r,
                verb_expected=verb_e,
                verb_realised=verb_r,
                noun_expected=noun_e,
                noun_realised=noun_r,
            )
        )

    # (N, A) marginal of each sample's action given only its position, averaged over samples
    average_prior = np.mean([recipe.marginal(int(p)) for p in positions], axis=0)
    prior_expected = Accuracy(
        *(float(average_prior[_top_k(average_prior, k)].sum()) for k in (1, 5))
    )
    _, prior_realised = _scores(np.repeat(average_prior[None], len(segments), axis=0), labels)
    num = recipe.num_actions
    chance = ChanceLevel(
        uniform=Accuracy(top1=min(1, num) / num, top5=min(5, num) / num),
        prior_expected=prior_expected,
        prior_realised=prior_realised,
    )
    return BayesBound(
        per_time=tuple(per_time),
        chance=chance,
        num_samples=len(segments),
        num_dropped=dropped,
    )


def expected_accuracy(
    recipe: RecipeModel,
    segments: Sequence[Segment],
    scores: np.ndarray,
    *,
    fps: float = 30.0,
    alpha: float = 0.25,
    steps: int = 14,
) -> Accuracy:
    """A model's expected top-1/top-5 action accuracy: the true posterior mass of its top-k
    guesses, averaged over samples (ties towards the lower action id).

    This is what the model would score on average over all label draws for the same videos,
    so it compares with :attr:`BoundAtTime.action_expected` without the sampling noise of
    the realised labels. ``scores`` is (N, A), one row per segment in the order of
    ``segments`` (whole videos, labelled); rows of dropped samples count as wrong.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(segments), recipe.num_actions):
        raise ValueError(
            f"scores must be ({len(segments)}, {recipe.num_actions}) for {len(segments)} "
            f"segments and {recipe.num_actions} actions, got {scores.shape}"
        )
    posteriors, _ = bayes_posteriors(recipe, segments, fps=fps, alpha=alpha, steps=steps)
    posterior = posteriors[0]  # (N, A): the same at every time (module docstring)
    masses = []
    for k in (1, 5):
        mass = 0.0
        for row, probs in zip(scores, posterior):
            mass += float(probs[_top_k(row, k)].sum())  # zero for dropped samples
        masses.append(mass / len(segments))
    return Accuracy(*masses)


def _action(segment: Segment) -> int:
    if segment.action is None or segment.action < 0:
        raise ValueError(f"segment {segment.uid} of {segment.video_id} has no action label")
    return int(segment.action)
