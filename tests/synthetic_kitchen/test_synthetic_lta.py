"""The procedural kitchen in Ego4D's LTA format (read by the real reader) and its oracle."""

from __future__ import annotations

import numpy as np

from epic_protocol.annotations import read_rulstm_split
from epic_protocol.ego4d_lta import read_lta_annotations, read_lta_windows, read_taxonomy
from synthetic_kitchen.generate import PRESETS
from synthetic_kitchen.lta import oracle_sequences
from synthetic_kitchen.recipe import RecipeModel


def test_lta_files_agree_with_the_rulstm_split(tiny_dataset):
    taxonomy = read_taxonomy(tiny_dataset.lta_taxonomy_json)
    recipe = RecipeModel.load(tiny_dataset.recipe_json)
    assert taxonomy.verbs == recipe.verbs and taxonomy.nouns == recipe.nouns
    clips = read_lta_annotations(tiny_dataset.lta_val_json, taxonomy=taxonomy)
    segments = read_rulstm_split(tiny_dataset.validation_csv)
    actions = [a for clip in clips.values() for a in clip]
    assert len(actions) == len(segments)
    for action, segment in zip(actions, segments):
        assert action.clip_uid == action.video_uid == segment.video_id
        assert action.parent_start_frame == 0
        # 1-based RU-LSTM frames -> 0-based clip frames
        assert (action.start_frame, action.end_frame) == (
            segment.start_frame - 1,
            segment.end_frame - 1,
        )
        assert (action.verb, action.noun) == (segment.verb, segment.noun)
    # tiny videos have 6 actions: too short for N + Z = 22, so no window
    assert read_lta_windows(tiny_dataset.lta_val_json) == []


def test_the_lta_preset_renders_enough_actions_for_windows():
    assert PRESETS["lta"].actions_per_video >= 60


def test_oracle_follows_the_recipe_chain(tiny_dataset):
    recipe = RecipeModel.load(tiny_dataset.recipe_json)
    last = [recipe.actions[0], recipe.actions[3]]
    verbs, nouns = oracle_sequences(
        recipe, np.array([v for v, _ in last]), np.array([n for _, n in last]),
        num_future_actions=6, k=4, seed=1,
    )  # fmt: skip
    assert verbs.shape == nouns.shape == (2, 4, 6)
    index = {pair: a for a, pair in enumerate(recipe.actions)}
    for w, start in enumerate((0, 3)):
        for k in range(4):
            previous = start
            for z in range(6):
                current = index[(int(verbs[w, k, z]), int(nouns[w, k, z]))]
                assert recipe.transition[previous, current] > 0
                previous = current
    again = oracle_sequences(
        recipe, np.array([v for v, _ in last]), np.array([n for _, n in last]),
        num_future_actions=6, k=4, seed=1,
    )  # fmt: skip
    assert np.array_equal(again[0], verbs)
