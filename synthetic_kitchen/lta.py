"""The procedural kitchen in Ego4D's long-term anticipation format, and its oracle.

:func:`write_lta_files` writes ``ego4d/fho_lta_{train,val}.json`` and
``ego4d/fho_lta_taxonomy.json`` next to the RU-LSTM files: each video is one clip
(``clip_uid = video_uid =`` the video id, ``clip_parent_start_frame = 0``), actions keep their
order (``action_idx``), frames become 0-based clip frames (``start_frame - 1``).

:func:`oracle_sequences` draws K continuations of Z actions from the true recipe (a first-order
Markov chain) given the last observed action: a reference for a model's edit distance, not a
bound (the minimum over K samples is itself random, and a model can beat it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from epic_protocol.annotations import Segment
from epic_protocol.ego4d_lta import LTAAction, LTATaxonomy, write_lta_annotations, write_taxonomy
from synthetic_kitchen.recipe import RecipeModel


def lta_actions(segments: Sequence[Segment]) -> list[LTAAction]:
    """The segments of one split as LTA actions (one clip per video, in segment order)."""
    counters: dict[str, int] = {}
    actions = []
    for segment in segments:
        index = counters.get(segment.video_id, 0)
        counters[segment.video_id] = index + 1
        actions.append(
            LTAAction(
                clip_uid=segment.video_id,
                video_uid=segment.video_id,
                action_idx=index,
                start_frame=segment.start_frame - 1,  # 1-based -> 0-based clip frames
                end_frame=segment.end_frame - 1,
                parent_start_frame=0,
                verb=segment.verb,
                noun=segment.noun,
            )
        )
    return actions


def write_lta_files(
    paths: Any, recipe: RecipeModel, segments: Mapping[str, Sequence[Segment]]
) -> None:
    """Write the LTA train/val files and the taxonomy (``paths``: the generator's
    ``DatasetPaths``; ``segments``: ``{"training": [...], "validation": [...]}``)."""
    paths.lta_taxonomy_json.parent.mkdir(parents=True, exist_ok=True)
    taxonomy = LTATaxonomy(verbs=tuple(recipe.verbs), nouns=tuple(recipe.nouns))
    write_taxonomy(paths.lta_taxonomy_json, taxonomy)
    for split, path in (("training", paths.lta_train_json), ("validation", paths.lta_val_json)):
        write_lta_annotations(path, lta_actions(segments[split]), taxonomy=taxonomy)


def oracle_sequences(
    recipe: RecipeModel,
    last_verbs: np.ndarray,
    last_nouns: np.ndarray,
    *,
    num_future_actions: int,
    k: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """K sequences of Z actions per window, sampled from the recipe's chain after each
    window's last observed action: verb and noun int64 (W, K, Z)."""
    index = {pair: a for a, pair in enumerate(recipe.actions)}
    rng = np.random.default_rng(seed)
    w = len(last_verbs)
    verbs = np.empty((w, k, num_future_actions), dtype=np.int64)
    nouns = np.empty_like(verbs)
    for i, (verb, noun) in enumerate(zip(last_verbs, last_nouns)):
        last = index[(int(verb), int(noun))]
        for j in range(k):
            current = last
            for z in range(num_future_actions):
                current = int(rng.choice(recipe.num_actions, p=recipe.transition[current]))
                verbs[i, j, z], nouns[i, j, z] = recipe.actions[current]
    return verbs, nouns
