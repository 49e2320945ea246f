"""A procedural first-person kitchen: videos whose actions follow a known stochastic recipe,
so that the best achievable anticipation accuracy (the Bayes bound) is known exactly.

``python -m synthetic_kitchen --out DIR --preset tiny`` writes a dataset; see
:func:`generate_dataset` for the layout and :mod:`synthetic_kitchen.recipe` for the bound.
"""

from synthetic_kitchen.generate import (
    PRESETS,
    DatasetPaths,
    DatasetSize,
    TimingModel,
    generate_dataset,
    main,
)
from synthetic_kitchen.recipe import (
    Accuracy,
    BayesBound,
    BoundAtTime,
    ChanceLevel,
    RecipeModel,
    bayes_bound,
    bayes_posteriors,
    expected_accuracy,
    make_recipe,
)
from synthetic_kitchen.render import RenderSettings, ScheduledAction, palette_rgb, render_video

__all__ = [
    "PRESETS",
    "Accuracy",
    "BayesBound",
    "BoundAtTime",
    "ChanceLevel",
    "DatasetPaths",
    "DatasetSize",
    "RecipeModel",
    "RenderSettings",
    "ScheduledAction",
    "TimingModel",
    "bayes_bound",
    "bayes_posteriors",
    "expected_accuracy",
    "generate_dataset",
    "main",
    "make_recipe",
    "palette_rgb",
    "render_video",
]
