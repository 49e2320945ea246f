"""Reading checkpoints without Lightning: weights into a module, or a whole network from the
``rulstm_net`` description that ``rulstm fit`` and ``rulstm-import checkpoint`` write.

Kept free of Lightning imports so that the demo and the online anticipator start quickly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rulstm.models.spec import NET_KEY, build_net, describe_net

log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from None


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
        net = build_net(spec)
    except (KeyError, TypeError, ImportError, AttributeError) as error:
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
        if differ:
            listed = ", ".join(f"{n} {a} (this network: {b})" for n, (a, b) in differ.items())
            options = " ".join(f"--model.net.init_args.{n} {a}" for n, (a, _) in differ.items())
            return f"it was trained with {listed}; give the network the same ({options})"
    first = "; ".join(
        f"{key} is {list(saved_shape)} in the file, {list(own_shape)} here"
        for key, saved_shape, own_shape in mismatched[:3]
    )
    more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
    return f"{first}{more}"
