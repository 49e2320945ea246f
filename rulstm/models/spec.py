"""Describe a network as ``{class_path, init_args}`` and rebuild it: checkpoints carry this
(``checkpoint["rulstm_net"]``) so that a ``.ckpt`` alone is enough to run a model (online
anticipator, demo) without its training config."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from rulstm.models.rulstm import RULSTM, RULSTMFusion

NET_KEY = "rulstm_net"


def describe_net(net: nn.Module) -> dict[str, Any] | None:
    """``{class_path, init_args}`` for the RU-LSTM networks; ``None`` for other networks."""
    if isinstance(net, RULSTM):
        return {
            "class_path": "rulstm.models.RULSTM",
            "init_args": {
                "num_classes": net.num_classes,
                "feat_dim": net.feat_dim,
                "hidden": net.hidden,
                "dropout": float(net.input_dropout.p),
                "depth": net.depth,
                "cell": net.cell,
            },
        }
    if isinstance(net, RULSTMFusion):
        first = next(iter(net.branches.values()))
        return {
            "class_path": "rulstm.models.RULSTMFusion",
            "init_args": {
                "num_classes": net.num_classes,
                "feat_dims": {name: branch.feat_dim for name, branch in net.branches.items()},
                "hidden": net.hidden,
                "dropout": float(first.input_dropout.p),
                "depth": first.depth,
                "fusion": net.fusion,
                "cell": first.cell,
            },
        }
    return None


def build_net(spec: dict[str, Any]) -> nn.Module:
    """Instantiate ``spec["class_path"](**spec["init_args"])`` (randomly initialised)."""
    module_name, _, class_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**spec["init_args"])
