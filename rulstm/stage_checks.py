"""Checks a ``rulstm`` stage makes before it runs: the model fits the data, and a
``--ckpt_path`` to resume is a training checkpoint of this model and optimiser.

Each fails with one line naming both values (or the file), before anything is trained or
written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from epic_protocol.errors import DataError
from rulstm.checkpoints import read_checkpoint
from rulstm.data.datamodule import AnticipationDataModule
from rulstm.lightning import AnticipationModule
from rulstm.optimization import compare as compare_optimization
from rulstm.optimization import configured as configured_optimization

log = logging.getLogger(__name__)

#: ``--ckpt_path`` values Lightning resolves itself.
SPECIAL_CKPT_PATHS = frozenset({"last", "best", "hpc", "registry"})


class CheckpointKindError(DataError, ValueError):
    """A checkpoint that does not belong to the model being trained or evaluated."""


def scored_steps(datamodule: AnticipationDataModule) -> int:
    """How many outputs per segment are scored: the anticipation steps, or every observation
    for early recognition."""
    if datamodule.task == "anticipation":
        return datamodule.anticipation_steps
    return datamodule.steps


def check_compatibility(model: AnticipationModule, datamodule: AnticipationDataModule) -> None:
    """Fail with one line naming both values when the model and the data disagree: the
    sampling protocol (alpha, task, scored steps), the classes, or a modality's feature size."""
    hparams = model.hparams
    for name, have, want in (
        ("alpha", hparams.get("alpha"), datamodule.alpha),
        ("task", hparams.get("task"), datamodule.task),
        ("anticipation_steps", hparams.get("anticipation_steps"), scored_steps(datamodule)),
    ):
        if have is not None and have != want:
            raise ValueError(
                f"model.{name} is {have!r} but the data gives {want!r} (set it once, under "
                f"data: alpha, task, anticipation_steps / early_recognition_steps)"
            )
    net = model.net
    num_classes = getattr(net, "num_classes", None)
    if num_classes is not None and num_classes != datamodule.num_actions:
        raise ValueError(
            f"the net predicts {num_classes} classes but the action vocabulary "
            f"({datamodule.actions_path or 'built from the training split'}) has "
            f"{datamodule.num_actions}; set num_classes to {datamodule.num_actions}"
        )
    expected = None
    if hasattr(net, "branches"):
        expected = {name: branch.feat_dim for name, branch in net.branches.items()}
    elif getattr(net, "feat_dim", None) is not None:
        modality = model.modality or next(iter(datamodule.feature_dims))
        expected = {modality: net.feat_dim}
    for modality, dim in (expected or {}).items():
        have = datamodule.feature_dims.get(modality)
        if have is None:
            raise KeyError(
                f"the net reads modality {modality!r} but data.features only has "
                f"{list(datamodule.feature_dims)}"
            )
        if have != dim:
            raise ValueError(
                f"{datamodule.feature_paths[modality]}: {modality} features are {have}-d but "
                f"the net expects {dim}-d"
            )


def check_callback_alpha(callbacks: Iterable[Any], datamodule: AnticipationDataModule) -> None:
    """An evaluation callback that times its steps with another ``alpha`` than the data stops
    the run, naming both."""
    for callback in callbacks:
        alpha = getattr(callback, "alpha", None)
        if isinstance(alpha, float) and abs(alpha - datamodule.alpha) > 1e-9:
            raise ValueError(
                f"trainer.callbacks {type(callback).__name__}.alpha is {alpha} but "
                f"data.alpha is {datamodule.alpha}; set init_args.alpha to match"
            )


def check_resumable(path: str | os.PathLike, model: AnticipationModule) -> None:
    """Fail before training if ``--ckpt_path`` is not a training checkpoint of this model.

    Raises:
        FileNotFoundError: no such file.
        CheckpointKindError: not a Lightning training checkpoint (e.g. one written by
            ``rulstm-import checkpoint``), or its weights belong to another network.
    """
    if str(path) in SPECIAL_CKPT_PATHS:
        return  # Lightning resolves these names itself
    try:
        checkpoint = read_checkpoint(path)  # weights_only: tensors and plain containers
    except ValueError as error:
        # Entries beyond plain data (a custom logger's hyperparameters...): Lightning loads
        # the file itself and reports what it finds.
        log.debug("not checking %s before resuming: %s", path, error)
        return
    if "state_dict" not in checkpoint or "optimizer_states" not in checkpoint:
        raise CheckpointKindError(
            f"{path} is not a training checkpoint of `rulstm fit` (no optimizer state): "
            "start from its weights with --model.init_checkpoint instead of --ckpt_path"
        )
    have = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if hasattr(v, "shape")}
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    resized = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or resized:
        details = "; ".join(
            f"{label} {names[:3]}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("other shapes", resized),
            )
            if names
        )
        raise CheckpointKindError(
            f"{path} is a checkpoint of another network than the configured "
            f"{type(model.net).__name__} ({details})"
        )


def check_optimizer_unchanged(path: str | os.PathLike, model: AnticipationModule) -> None:
    """Refuse, before anything is written, to resume ``path`` with another optimiser or
    scheduler class than it was trained with (:class:`rulstm.optimization.OptimizerChangeError`);
    other hyper-parameters of the same class are applied with a warning when Lightning
    restores the state (``AnticipationModule.on_load_checkpoint``)."""
    if str(path) in SPECIAL_CKPT_PATHS:
        return
    try:
        checkpoint = read_checkpoint(path)
    except (OSError, ValueError) as error:
        log.debug("not comparing the optimizer of %s: %s", path, error)
        return  # check_resumable / Lightning report unreadable files
    optimizers, schedulers = configured_optimization(model)
    compare_optimization(checkpoint, optimizers, schedulers, path=path)
