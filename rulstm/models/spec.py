"""Describe a network as ``{class_path, init_args}`` and rebuild it: checkpoints carry this
(``checkpoint["rulstm_net"]``) so that a ``.ckpt`` alone is enough to run a model (online
anticipator, demo) without its training config.

A checkpoint is data: the class it names is looked up in :data:`NETWORKS`, the allow-list of
the classes that may be built from a file, and never imported. Anything else is refused
(:class:`UntrustedClassError`) before any import or call. A new network class of this project
joins with one line in :data:`NETWORKS`; a user's own class with :func:`register_net`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from epic_protocol.errors import DataError
from rulstm.models.baselines import (
    AttentiveProbe,
    LSTMBaseline,
    TCNBaseline,
    TransformerBaseline,
)
from rulstm.models.lta import LTABaseline, RULSTMForecaster
from rulstm.models.rulstm import RULSTM, RULSTMFusion

NET_KEY = "rulstm_net"

#: The network classes a checkpoint (or a checkpoint's hyper-parameters) may name, by the
#: public class path it is written under. Add a network of this project here (one line);
#: its module path (``rulstm.models.<module>.<Class>``) is accepted as well.
NETWORKS: dict[str, type[nn.Module]] = {
    "rulstm.models.RULSTM": RULSTM,
    "rulstm.models.RULSTMFusion": RULSTMFusion,
    "rulstm.models.LSTMBaseline": LSTMBaseline,
    "rulstm.models.TCNBaseline": TCNBaseline,
    "rulstm.models.TransformerBaseline": TransformerBaseline,
    "rulstm.models.AttentiveProbe": AttentiveProbe,
    # Ego4D long-term anticipation (configs/ego4d_lta)
    "rulstm.models.lta.RULSTMForecaster": RULSTMForecaster,
    "rulstm.models.lta.LTABaseline": LTABaseline,
}


class UntrustedClassError(DataError, ValueError):
    """A file names a class that is not allow-listed; the message names the file and the
    class path. Nothing was imported or called."""


def register_net(cls: type[nn.Module], class_path: str | None = None) -> type[nn.Module]:
    """Allow checkpoints to name ``cls`` (a network class of your own), under ``class_path``
    (default: ``module.QualifiedName``, as jsonargparse writes it). Call it in your code
    before loading such a checkpoint; usable as a class decorator.

    Raises:
        TypeError: ``cls`` is not an ``nn.Module`` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_net takes an nn.Module subclass, got {cls!r}")
    NETWORKS[class_path or f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def allowed_net(class_path: Any) -> type[nn.Module] | None:
    """The allow-listed class ``class_path`` names (its public or its module path), else
    ``None``. A dictionary lookup: nothing is imported."""
    if not isinstance(class_path, str):
        return None
    if class_path in NETWORKS:
        return NETWORKS[class_path]
    for cls in NETWORKS.values():
        if class_path == f"{cls.__module__}.{cls.__qualname__}":
            return cls
    return None


def refusal(source: Any, class_path: Any, where: str = NET_KEY) -> UntrustedClassError:
    """The error for a file ``source`` whose ``where`` names ``class_path``."""
    return UntrustedClassError(
        f"{source}: refused to build {class_path!r} named by its {where!r} entry: not one of "
        "this project's network classes (a checkpoint is data; register a class of your own "
        "with rulstm.models.spec.register_net)"
    )


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


def build_net(spec: Mapping[str, Any], *, source: Any = "the checkpoint") -> nn.Module:
    """Instantiate ``spec["class_path"](**spec["init_args"])`` (randomly initialised) when the
    class is allow-listed (:data:`NETWORKS`).

    Raises:
        UntrustedClassError: any other class path (nothing imported or called); names
            ``source`` (the file) and the class path.
        ValueError: ``spec`` is not ``{class_path, init_args}``.
        TypeError: arguments the class does not take.
    """
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise ValueError(f"{source}: {NET_KEY!r} is not {{class_path, init_args}}: {spec!r}")
    cls = allowed_net(spec["class_path"])
    if cls is None:
        raise refusal(source, spec["class_path"])
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ValueError(f"{source}: {NET_KEY!r} init_args is not a mapping: {init_args!r}")
    return cls(**init_args)
