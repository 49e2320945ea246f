"""A procedural first-person kitchen: videos whose actions follow a known stochastic recipe,
so that the best achievable anticipation accuracy (the Bayes bound) is known exactly.

``python -m rulstm.synthetic --out DIR --preset tiny`` writes a dataset; see
:func:`generate_dataset` for the layout and :mod:`rulstm.synthetic.recipe` for the bound.
"""

from rulstm.synthetic.generate import (
    PRESETS,
    DatasetPaths,
    DatasetSize,
    TimingModel,
    generate_dataset,
    main,
)
from rulstm.synthetic.recipe import (
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
from rulstm.synthetic.render import RenderSettings, ScheduledAction, palette_rgb, render_video

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
