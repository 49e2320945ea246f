"""Reading checkpoints without Lightning: weights into a module, or a whole network from the
``rulstm_net`` description that ``rulstm fit`` and ``rulstm-import checkpoint`` write.

Kept free of Lightning imports so that the demo and the online anticipator start quickly.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from epic_protocol.backbones import CHECKPOINT_KEY, describe
from rulstm.models.spec import NET_KEY, allowed_net, build_net, describe_net, refusal

log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        if named:  # a pickle naming a function or class: what an attack looks like
            raise ValueError(
                f"{path}: refused: it holds Python objects beyond tensors and plain data (it "
                f"names {named.group(1)}); only checkpoints of `rulstm fit` and `rulstm-import "
                "checkpoint` load"
            ) from None
        raise ValueError(
            f"{path}: not a readable checkpoint ({_unpickler_reason(error)})"
        ) from None
    except Exception as error:  # truncated or not a checkpoint: many error types
        raise ValueError(
            f"{path}: not a readable checkpoint (truncated, or not a PyTorch file: {error})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def _unpickler_reason(error: BaseException) -> str:
    """The informative part of torch's weights-only refusal (its message is a screen of
    advice around one line saying what it met)."""
    advice = ("Weights only load failed", "(1)", "(2)", "Check the documentation", "Please file")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(advice)]
    text = " ".join(kept).split("WeightsUnpickler error:")[-1].strip()
    return text or type(error).__name__


#: Lightning's record of its version: present in every checkpoint it writes.
LIGHTNING_VERSION_KEY = "pytorch-lightning_version"


def check_lightning_checkpoint(
    path: str | Path, checkpoint: Mapping[str, Any], *, training: bool = False
) -> None:
    """Fail with one line naming ``path`` and the missing entries when ``checkpoint`` is not
    one Lightning can restore (``training``: resume, which also needs the optimizer and
    scheduler states), and refuse a class its hyper-parameters name that may not be built
    (:func:`check_hyperparameter_classes`).

    Raises:
        ValueError: the missing entries, or the refused class.
    """
    needed = [LIGHTNING_VERSION_KEY, "state_dict"]
    if training:
        needed += ["optimizer_states", "lr_schedulers"]
    missing = [key for key in needed if key not in checkpoint]
    if missing:
        listed = ", ".join(repr(key) for key in missing)
        hint = (
            "start from its weights with --model.init_checkpoint instead of --ckpt_path"
            if "state_dict" in checkpoint
            else "it holds no weights ('state_dict')"
        )
        kind = "a training checkpoint" if training else "a checkpoint written by Lightning"
        raise ValueError(f"{path} is not {kind} (`rulstm fit`): it lacks {listed}; {hint}")
    check_hyperparameter_classes(path, checkpoint.get("hyper_parameters"))


#: Modules whose optimizer / LR scheduler classes hyper-parameters may name.
_OPTIMISATION_MODULES = ("torch.optim", "torch.optim.lr_scheduler", "lightning.pytorch.cli")
#: The LightningModules that ``rulstm fit`` saves (LightningCLI records them as ``_class_path``):
#: next-action anticipation and Ego4D long-term anticipation.
_MODULE_CLASS_PATHS = frozenset(
    {"rulstm.lightning.AnticipationModule", "rulstm.lightning_lta.LTAModule"}
)


def _allowed_optimisation_class(class_path: str) -> bool:
    """An optimizer or LR scheduler class of an already imported module (nothing imported)."""
    module_name, _, name = class_path.rpartition(".")
    modules = [module_name] if module_name else list(_OPTIMISATION_MODULES)
    for candidate in modules:
        if candidate not in _OPTIMISATION_MODULES or candidate not in sys.modules:
            continue
        cls = getattr(sys.modules[candidate], name, None)
        if isinstance(cls, type) and issubclass(
            cls,
            (
                torch.optim.Optimizer,
                torch.optim.lr_scheduler.LRScheduler,
                torch.optim.lr_scheduler.ReduceLROnPlateau,
            ),
        ):
            return True
    return False


def check_hyperparameter_classes(path: str | Path, hparams: Any, where: str = "") -> None:
    """Refuse hyper-parameters (as LightningCLI reads them back from ``--ckpt_path``) that
    name a class other than this project's networks (:data:`rulstm.models.spec.NETWORKS`),
    its LightningModule, or a torch optimizer / LR scheduler: jsonargparse would import and
    call it. Nothing is imported here.

    Raises:
        UntrustedClassError: naming ``path``, the entry and the class path.
    """
    if isinstance(hparams, Mapping):
        for key, value in hparams.items():
            entry = f"{where}.{key}" if where else str(key)
            if key in ("class_path", "_class_path", "_instantiator"):
                if key == "_instantiator" and value in (
                    "lightning.pytorch.cli.instantiate_module",
                    "pytorch_lightning.cli.instantiate_module",
                ):
                    continue
                if (
                    allowed_net(value) is None
                    and value not in _MODULE_CLASS_PATHS
                    and not (isinstance(value, str) and _allowed_optimisation_class(value))
                ):
                    raise refusal(path, value, where=f"hyper_parameters.{entry}")
            else:
                check_hyperparameter_classes(path, value, entry)
    elif isinstance(hparams, list | tuple):
        for index, value in enumerate(hparams):
            check_hyperparameter_classes(path, value, f"{where}[{index}]")


def load_net(path: str | Path, *, checkpoint: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild a network and its weights from a checkpoint written by training or by
    ``rulstm-import checkpoint`` (both record the network under ``rulstm_net``)."""
    if checkpoint is None:
        checkpoint = read_checkpoint(path)
    spec = checkpoint.get(NET_KEY)
    if spec is None:
        raise ValueError(
            f"{path} does not describe its network (no {NET_KEY!r} entry): it was not written "
            "by `rulstm fit` or `rulstm-import checkpoint`"
        )
    try:
        net = build_net(spec, source=path)  # UntrustedClassError names the file and class
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: cannot rebuild the network {spec!r} ({error})") from None
    load_weights(net, path, checkpoint=checkpoint)
    return net.eval()


def load_weights(
    module: nn.Module, path: str | Path, *, checkpoint: dict[str, Any] | None = None
) -> None:
    """Load ``module``'s weights from a Lightning checkpoint (keys under ``net.``) or a plain
    state dict, with an error that names the file and the mismatched keys."""
    if checkpoint is None:
        checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint)
    if any(key.startswith("net.") for key in state):
        state = {
            key[len("net.") :]: value for key, value in state.items() if key.startswith("net.")
        }
    mismatched = _shape_mismatches(module, state)
    if mismatched:
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: "
            f"{_mismatch_summary(module, checkpoint, mismatched)}"
        )
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # anything load_state_dict refuses beyond shapes
        raise ValueError(f"{path} does not fit {type(module).__name__}: {error}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: missing {result.missing_keys[:6]}, "
            f"unexpected {result.unexpected_keys[:6]}"
        )
    log.info("initialised %s from %s", type(module).__name__, path)


#: Network arguments that do not change any tensor's shape (stages may differ in them).
_SHAPELESS = frozenset({"dropout"})


def _shape_mismatches(
    module: nn.Module, state: dict[str, Any]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(key, shape in the file, shape in the module)`` for every tensor present in both."""
    own = module.state_dict()
    return [
        (key, tuple(value.shape), tuple(own[key].shape))
        for key, value in state.items()
        if key in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[key].shape)
    ]


def _option_value(value: Any) -> str:
    """A command-line value: a mapping (e.g. per-branch hidden sizes) as quoted JSON."""
    if isinstance(value, Mapping):
        return f"'{json.dumps(dict(value))}'"
    return str(value)


def _mismatch_summary(
    module: nn.Module,
    checkpoint: dict[str, Any],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    """Name the hyper-parameters that differ when both sides describe their network (a
    checkpoint of a smaller ``hidden`` otherwise reads as a screen of tensor shapes), else the
    first mismatched tensors."""
    saved, here = checkpoint.get(NET_KEY), describe_net(module)
    if saved and here and saved.get("class_path") == here["class_path"]:
        differ = {
            name: (value, here["init_args"].get(name))
            for name, value in saved.get("init_args", {}).items()
            if name in here["init_args"]
            and name not in _SHAPELESS
            and here["init_args"][name] != value
        }
        sizes = {n: differ.pop(n) for n in ("feat_dim", "feat_dims") if n in differ}
        if sizes and not differ:
            # Read from the feature files: the features are not those it was trained on.
            return _feature_size_summary(checkpoint, sizes)
        if differ:
            differ.update(sizes)
            listed = ", ".join(f"{n} {a} (this network: {b})" for n, (a, b) in differ.items())
            options = " ".join(
                f"--model.net.init_args.{n} {_option_value(a)}" for n, (a, _) in differ.items()
            )
            return f"it was trained with {listed}; give the network the same ({options})"
    first = "; ".join(
        f"{key} is {list(saved_shape)} in the file, {list(own_shape)} here"
        for key, saved_shape, own_shape in mismatched[:3]
    )
    more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
    return f"{first}{more}"


def _feature_size_summary(checkpoint: dict[str, Any], sizes: dict[str, tuple[Any, Any]]) -> str:
    """A checkpoint trained on features of another size than data.features' files (the
    network's ``feat_dim(s)`` are read from them): name both sizes and, where the checkpoint
    records it, the backbone of its training features. Setting ``feat_dim`` cannot help."""
    recorded = checkpoint.get(CHECKPOINT_KEY) or {}
    parts = []
    for trained, here in sizes.values():
        if isinstance(trained, Mapping):  # fusion: {modality: dim}
            here = here if isinstance(here, Mapping) else {}
            pairs = [(m, d, here.get(m)) for m, d in trained.items() if here.get(m) != d]
        else:
            pairs = [(next(iter(recorded), None) if len(recorded) == 1 else None, trained, here)]
        for modality, dim, given in pairs:
            record = recorded.get(modality) if modality else None
            of = f" of {describe(record)}" if isinstance(record, Mapping) else ""
            kind = f"{modality} " if modality else ""
            parts.append(f"{dim}-d {kind}features{of}, data.features gives {given}-d")
    return (
        f"it was trained on {'; '.join(parts)}: give data.features the features it was "
        "trained on (the same extraction config, backbone and weights)"
    )
