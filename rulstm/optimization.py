"""Resuming with a changed optimiser or scheduler: refuse another class, apply new values.

``rulstm fit --ckpt_path last.ckpt`` restores the optimiser and scheduler states the checkpoint
holds; Lightning would load their saved hyper-parameters over the configured ones (so
``--model.optimizer.init_args.lr 0.1`` silently kept the checkpoint's lr while the run's
``config.yaml`` recorded 0.1), and a state of another optimiser class breaks the first step
(Adam's state in SGD fails on ``momentum``). The rules here make the configuration win:

* another optimiser or scheduler class than the checkpoint's is refused before the run starts
  (:class:`OptimizerChangeError`, one line naming the option, both classes and the file);
* the same class with other hyper-parameters (lr, momentum, weight_decay, a scheduler's
  step_size / gamma ...) resumes with the configured values written into the restored state
  (:func:`apply_configured`), and one warning names each value and both settings. The
  optimiser's momentum buffers / moments and the scheduler's position are kept.

Under a scheduler the saved ``lr`` is the scheduled one: the configured lr is compared with the
group's ``initial_lr``, and a new lr rescales the current one by new / old (the schedule goes
on from where it was, from the new base).

Checkpoints record the classes under :data:`OPTIMIZATION_KEY` (written by
``AnticipationModule.on_save_checkpoint``); for older ones the class is inferred from the
saved hyper-parameter names (another set of names: another class).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from epic_protocol.errors import DataError

#: Checkpoint entry: ``{"optimizers": [class path, ...], "schedulers": [class path, ...]}``.
OPTIMIZATION_KEY = "rulstm_optimization"

# Saved per-group entries that are not hyper-parameters of the optimiser class.
_GROUP_STATE = frozenset({"params", "initial_lr"})
# Scheduler constructor arguments that are positions or plumbing, not hyper-parameters.
_SCHEDULER_PLUMBING = frozenset({"self", "optimizer", "last_epoch", "verbose"})


class OptimizerChangeError(DataError, ValueError):
    """``--ckpt_path`` names a checkpoint trained with another optimiser or scheduler class."""


@dataclass(frozen=True, slots=True)
class Change:
    """One hyper-parameter whose configured value differs from the checkpoint's."""

    option: str  # e.g. "model.optimizer.init_args.lr"
    saved: Any
    configured: Any

    def __str__(self) -> str:
        return f"{self.option} {self.saved!r} -> {self.configured!r}"


def class_path(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def describe(optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[Any]) -> dict:
    """The :data:`OPTIMIZATION_KEY` entry for a checkpoint of a run with these objects."""
    return {
        "optimizers": [class_path(o) for o in optimizers],
        "schedulers": [class_path(s) for s in schedulers],
    }


def configured(module: Any) -> tuple[list[torch.optim.Optimizer], list[Any]]:
    """Throwaway instances of what ``module.configure_optimizers()`` builds (no step taken):
    the configured classes and hyper-parameters to compare with a checkpoint's."""
    built = module.configure_optimizers()
    if isinstance(built, torch.optim.Optimizer):
        return [built], []
    if isinstance(built, Mapping):
        built = [built]
    optimizers, schedulers = [], []
    for item in built if isinstance(built, Sequence) else [built]:
        if isinstance(item, torch.optim.Optimizer):
            optimizers.append(item)
        elif isinstance(item, Mapping):
            optimizers.append(item["optimizer"])
            scheduler = item.get("lr_scheduler")
            if isinstance(scheduler, Mapping):
                scheduler = scheduler.get("scheduler")
            if scheduler is not None:
                schedulers.append(scheduler)
    return optimizers, schedulers


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, float) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def _refuse(option: str, saved: str, configured_class: str, path: str | os.PathLike) -> None:
    raise OptimizerChangeError(
        f"--{option} is {configured_class} but {path} was trained with {saved}: resume with "
        f"the same class (other hyper-parameters are applied with a warning), or start a new "
        f"run from its weights with --model.init_checkpoint {path} instead of --ckpt_path"
    )


def _group_keys(group: Mapping[str, Any]) -> set[str]:
    return set(group) - _GROUP_STATE


def _scheduler_hparams(scheduler: Any) -> list[str]:
    try:
        parameters = inspect.signature(type(scheduler).__init__).parameters
    except (TypeError, ValueError):
        return []
    return [name for name in parameters if name not in _SCHEDULER_PLUMBING]


def compare(
    checkpoint: Mapping[str, Any],
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[Any],
    *,
    path: str | os.PathLike,
) -> list[Change]:
    """The configured hyper-parameters that differ from ``checkpoint``'s saved ones.

    Raises:
        OptimizerChangeError: another optimiser / scheduler class (or number of them) than the
            checkpoint's, naming the option, both classes and ``path``.
    """
    saved_states = list(checkpoint.get("optimizer_states") or [])
    saved_schedulers = list(checkpoint.get("lr_schedulers") or [])
    recorded = checkpoint.get(OPTIMIZATION_KEY) or {}
    changes: list[Change] = []
    for index, (optimizer, state) in enumerate(zip(optimizers, saved_states)):
        option = "model.optimizer" if len(optimizers) == 1 else f"model.optimizer[{index}]"
        names = recorded.get("optimizers") or []
        saved_class = names[index] if index < len(names) else None
        groups = state.get("param_groups") or []
        if saved_class is not None and saved_class != class_path(optimizer):
            _refuse(option, saved_class, class_path(optimizer), path)
        if saved_class is None and groups:  # an older checkpoint: infer from the names
            have, want = _group_keys(groups[0]), _group_keys(optimizer.param_groups[0])
            if have != want:
                _refuse(
                    option,
                    f"another optimizer (hyper-parameters {', '.join(sorted(have))})",
                    class_path(optimizer),
                    path,
                )
        for group, saved in zip(optimizer.param_groups, groups):
            for key in sorted(_group_keys(group)):
                if key not in saved:
                    continue
                old = saved.get("initial_lr", saved[key]) if key == "lr" else saved[key]
                if not _same(old, group[key]):
                    changes.append(Change(f"{option}.init_args.{key}", old, group[key]))
        changes = _unique(changes)  # one line per option, whatever the number of groups
    if len(optimizers) != len(saved_states) and saved_states:
        raise OptimizerChangeError(
            f"--model.optimizer configures {len(optimizers)} optimizer(s) but {path} holds "
            f"the state of {len(saved_states)}: resume with the same configuration"
        )
    names = recorded.get("schedulers")
    for index, scheduler in enumerate(schedulers):
        option = "model.scheduler" if len(schedulers) == 1 else f"model.scheduler[{index}]"
        if index >= len(saved_schedulers):
            _refuse(option, "no scheduler", class_path(scheduler), path)
        saved = saved_schedulers[index]
        saved_class = names[index] if names is not None and index < len(names) else None
        if saved_class is not None and saved_class != class_path(scheduler):
            _refuse(option, saved_class, class_path(scheduler), path)
        if saved_class is None and set(saved) != set(scheduler.state_dict()):
            _refuse(option, "another scheduler", class_path(scheduler), path)
        state = scheduler.state_dict()
        for key in _scheduler_hparams(scheduler):
            if key in saved and key in state and not _same(saved[key], state[key]):
                changes.append(Change(f"{option}.init_args.{key}", saved[key], state[key]))
    if len(saved_schedulers) > len(schedulers):
        saved_class = (names or ["a scheduler"] * len(saved_schedulers))[len(schedulers)]
        option = "model.scheduler"
        raise OptimizerChangeError(
            f"--{option} is not set but {path} was trained with {saved_class}: resume with "
            f"the same scheduler, or start a new run from its weights with "
            f"--model.init_checkpoint {path} instead of --ckpt_path"
        )
    return changes


def _unique(changes: list[Change]) -> list[Change]:
    seen, unique = set(), []
    for change in changes:
        if change.option not in seen:
            seen.add(change.option)
            unique.append(change)
    return unique


def apply_configured(
    checkpoint: dict[str, Any],
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[Any],
    *,
    path: str | os.PathLike,
) -> list[Change]:
    """Write the configured hyper-parameters into ``checkpoint``'s optimiser and scheduler
    states (in place, before Lightning restores them); returns what changed.

    Raises OptimizerChangeError as :func:`compare`.
    """
    changes = compare(checkpoint, optimizers, schedulers, path=path)
    if not changes:
        return changes
    for optimizer, state in zip(optimizers, checkpoint["optimizer_states"]):
        for group, saved in zip(optimizer.param_groups, state["param_groups"]):
            for key in _group_keys(group):
                if key not in saved:
                    continue
                if key == "lr" and "initial_lr" in saved:
                    old_base = saved["initial_lr"]
                    if not _same(old_base, group["lr"]):
                        scale = group["lr"] / old_base if old_base else 1.0
                        saved["lr"] = saved["lr"] * scale if old_base else group["lr"]
                        saved["initial_lr"] = group["lr"]
                else:
                    saved[key] = group[key]
    for scheduler, saved in zip(schedulers, checkpoint.get("lr_schedulers") or []):
        state = scheduler.state_dict()
        for key in _scheduler_hparams(scheduler):
            if key in saved and key in state:
                saved[key] = state[key]
        if "base_lrs" in saved and "base_lrs" in state:
            saved["base_lrs"] = list(state["base_lrs"])
    return changes
