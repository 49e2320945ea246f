"""The recipe chain and its Bayes bound, checked against a chain worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from epic_protocol import Segment
from synthetic_kitchen.recipe import (
    Accuracy,
    BayesBound,
    RecipeModel,
    bayes_bound,
    expected_accuracy,
    make_recipe,
)

# Six actions: verbs [0, 0, 1, 1, 2, 2], nouns [0, 1, 0, 1, 0, 1].
HAND_ACTIONS = ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1))
HAND_INITIAL = np.array([0.5, 0.3, 0.2, 0.0, 0.0, 0.0])
HAND_TRANSITION = np.array(
    [
        [0.05, 0.40, 0.30, 0.10, 0.10, 0.05],
        [0.30, 0.00, 0.20, 0.20, 0.20, 0.10],
        [0.20, 0.20, 0.20, 0.20, 0.10, 0.10],
        [1 / 6] * 6,
        [0.00, 0.00, 0.00, 0.00, 0.00, 1.00],
        [1.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    ]
)


@pytest.fixture
def hand_recipe() -> RecipeModel:
    return RecipeModel(
        verbs=("v0", "v1", "v2"),
        nouns=("n0", "n1"),
        actions=HAND_ACTIONS,
        initial=HAND_INITIAL,
        transition=HAND_TRANSITION,
    )


def _segment(video: str, index: int, start: int, action: int) -> Segment:
    verb, noun = HAND_ACTIONS[action]
    return Segment(f"{video}_{index}", video, start, start + 89, verb, noun, action)


def _video(video: str, actions: list[int], *, first_start: int = 100) -> list[Segment]:
    return [_segment(video, i, first_start + 100 * i, a) for i, a in enumerate(actions)]


def test_bayes_bound_matches_the_hand_worked_chain(hand_recipe: RecipeModel) -> None:
    # Video a0 -> a1 -> a2. Posteriors: initial, row 0, row 1.
    #   sample 0 (first): top-1 mass 0.5 (a0: hit), top-5 mass 1.0 (hit)
    #   sample 1 (after a0): top-1 0.4 (a1: hit), top-5 1 - 0.05 = 0.95 (hit)
    #   sample 2 (after a1): top-1 0.3 (a0, label a2: miss), top-5 1.0 (hit)
    # Verbs (by action: 0 0 1 1 2 2): posteriors [.8 .2 0], [.45 .4 .15], [.3 .4 .3];
    #   labels v0, v0, v1 -> top-1 masses .8, .45, .4 and all three hits.
    # Nouns (by action: 0 1 0 1 0 1): [.7 .3], [.45 .55], [.7 .3]; labels n0, n1, n0.
    segments = _video("P01_01", [0, 1, 2])
    bound = bayes_bound(hand_recipe, segments)

    assert bound.num_samples == 3 and bound.num_dropped == 0
    assert [entry.time for entry in bound.per_time] == [2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25]
    for entry in bound.per_time:  # the current action is visible at every time
        assert entry.action_expected.top1 == pytest.approx((0.5 + 0.4 + 0.3) / 3)
        assert entry.action_expected.top5 == pytest.approx((1.0 + 0.95 + 1.0) / 3)
        assert entry.action_realised == Accuracy(top1=pytest.approx(2 / 3), top5=1.0)
        assert entry.verb_expected.top1 == pytest.approx((0.8 + 0.45 + 0.4) / 3)
        assert entry.verb_expected.top5 == pytest.approx(1.0)
        assert entry.verb_realised == Accuracy(top1=1.0, top5=1.0)
        assert entry.noun_expected.top1 == pytest.approx((0.7 + 0.55 + 0.7) / 3)
        assert entry.noun_realised == Accuracy(top1=1.0, top5=1.0)


def test_chance_levels(hand_recipe: RecipeModel) -> None:
    bound = bayes_bound(hand_recipe, _video("P01_01", [0, 1, 2]))
    assert bound.chance.uniform == Accuracy(top1=pytest.approx(1 / 6), top5=pytest.approx(5 / 6))
    # Marginals at positions 0, 1, 2, averaged: the best guess that ignores the video.
    marginals = [
        HAND_INITIAL,
        HAND_INITIAL @ HAND_TRANSITION,
        HAND_INITIAL @ HAND_TRANSITION @ HAND_TRANSITION,
    ]
    average = np.mean(marginals, axis=0)
    assert bound.chance.prior_expected.top1 == pytest.approx(average.max())
    assert bound.chance.prior_expected.top5 == pytest.approx(np.sort(average)[-5:].sum())
    best = int(np.argmax(average))
    assert bound.chance.prior_realised.top1 == pytest.approx(
        np.mean([best == a for a in (0, 1, 2)])
    )


def test_dropped_samples_score_zero(hand_recipe: RecipeModel) -> None:
    # A first action at frame 5 has no anticipation frame >= 1: the protocol drops it and
    # the evaluation scores it as wrong, so the bound does too.
    kept = _video("P01_01", [0, 1, 2])
    dropped = [_segment("P01_02", 0, 5, 0)]
    bound = bayes_bound(hand_recipe, kept + dropped)
    assert bound.num_samples == 4 and bound.num_dropped == 1
    entry = bound.at(1.0)
    assert entry.action_expected.top1 == pytest.approx((0.5 + 0.4 + 0.3) / 4)
    assert entry.action_realised.top5 == pytest.approx(3 / 4)


def test_rejects_a_current_action_that_is_not_yet_visible(hand_recipe: RecipeModel) -> None:
    # The next action starts 40 frames after the previous one: 2 s before it (frame 130)
    # the previous action (frame 150) has not started, so transition[prev] is not the
    # posterior there.
    segments = [_segment("P01_01", 0, 150, 0), _segment("P01_01", 1, 190, 1)]
    with pytest.raises(ValueError, match="not observable"):
        bayes_bound(hand_recipe, segments)


def test_bayes_bound_needs_labels(hand_recipe: RecipeModel) -> None:
    with pytest.raises(ValueError, match="no action label"):
        bayes_bound(hand_recipe, [Segment("P01_01_0", "P01_01", 100, 189)])


def test_expected_accuracy_of_a_model(hand_recipe: RecipeModel) -> None:
    segments = _video("P01_01", [0, 1, 2])
    bound = bayes_bound(hand_recipe, segments).at(1.0)
    # The Bayes posterior itself as the model's scores reaches the bound.
    optimal = np.stack([HAND_INITIAL, HAND_TRANSITION[0], HAND_TRANSITION[1]])
    assert expected_accuracy(hand_recipe, segments, optimal) == bound.action_expected
    # A model that always ranks a5 first, then a4, a3, a2, a1: top-1 mass is the posterior
    # of a5 (0, 0.05, 0.1); top-5 misses a0 (0.5, 0.05, 0.3).
    fixed = np.tile(np.arange(6, dtype=float), (3, 1))
    accuracy = expected_accuracy(hand_recipe, segments, fixed)
    assert accuracy.top1 == pytest.approx((0 + 0.05 + 0.1) / 3)
    assert accuracy.top5 == pytest.approx((0.5 + 0.95 + 0.7) / 3)
    with pytest.raises(ValueError, match="scores must be"):
        expected_accuracy(hand_recipe, segments, fixed[:2])


def test_bound_round_trips_through_json(hand_recipe: RecipeModel) -> None:
    bound = bayes_bound(hand_recipe, _video("P01_01", [0, 1, 2]))
    assert BayesBound.from_dict(bound.to_dict()) == bound
    with pytest.raises(KeyError, match="no bound at 3.0"):
        bound.at(3.0)


def test_recipe_validation() -> None:
    with pytest.raises(ValueError, match="row of transition"):
        RecipeModel(
            verbs=("v",),
            nouns=("a", "b"),
            actions=((0, 0), (0, 1)),
            initial=np.array([1.0, 0.0]),
            transition=np.array([[0.5, 0.4], [0.0, 1.0]]),
        )
    with pytest.raises(ValueError, match="distinct"):
        RecipeModel(
            verbs=("v",),
            nouns=("a",),
            actions=((0, 0), (0, 0)),
            initial=np.array([1.0, 0.0]),
            transition=np.eye(2),
        )


def test_sampling_follows_the_chain(hand_recipe: RecipeModel) -> None:
    rng = np.random.default_rng(0)
    sequences = [hand_recipe.sample_sequence(rng, 3) for _ in range(2000)]
    assert all(s[0] in (0, 1, 2) for s in sequences)
    # rows 4 and 5 are deterministic: 4 -> 5 -> 0
    follow = [s[i + 1] for s in sequences for i in range(2) if s[i] == 4]
    assert follow and set(follow) == {5}
    after_zero = [s[1] for s in sequences if s[0] == 0]
    assert np.mean([a == 1 for a in after_zero]) == pytest.approx(0.4, abs=0.06)
    np.testing.assert_array_equal(hand_recipe.posterior_next([]), HAND_INITIAL)
    np.testing.assert_array_equal(hand_recipe.posterior_next([3, 1]), HAND_TRANSITION[1])


def test_make_recipe_shape_and_difficulty() -> None:
    recipe = make_recipe(np.random.default_rng(0))
    again = make_recipe(np.random.default_rng(0))
    np.testing.assert_array_equal(recipe.transition, again.transition)
    assert recipe.num_actions == len(set(recipe.actions)) == 20
    np.testing.assert_allclose(recipe.transition.sum(axis=1), 1.0)
    likely = (recipe.transition > 0.06 / 20 + 1e-9).sum(axis=1)  # above the slip floor
    assert likely.min() >= 3 and likely.max() <= 8
    # Neither the verb nor the noun alone identifies the current action.
    verbs, nouns = recipe.action_verbs, recipe.action_nouns
    assert all((verbs == v).sum() >= 2 for v in set(verbs.tolist()))
    assert all((nouns == n).sum() >= 2 for n in set(nouns.tolist()))
    # Top-1 clearly below top-5, top-5 high but below 1, for every action.
    ordered = -np.sort(-recipe.transition, axis=1)
    assert (ordered[:, 0] < 0.8).all()
    assert (ordered[:, :5].sum(axis=1) < 0.99).all()
    assert (ordered[:, :5].sum(axis=1) > 0.85).all()


def test_recipe_round_trips_through_json(tmp_path: Path) -> None:
    recipe = make_recipe(np.random.default_rng(1))
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({**recipe.to_dict(), "timing": {"fps": 30}}))
    loaded = RecipeModel.load(path)
    assert loaded.actions == recipe.actions and loaded.verbs == recipe.verbs
    np.testing.assert_array_equal(loaded.transition, recipe.transition)
    np.testing.assert_array_equal(loaded.initial, recipe.initial)
