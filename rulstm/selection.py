"""Checkpoint selection comes from the evaluation protocol.

The protocol of a run (:class:`~rulstm.evaluation.protocol.EvaluationProtocol`: the top-level
``protocol:`` of a next-action config, ``ego4d_lta`` for ``task: ego4d_lta``) names the
checkpoint-selection metric and its mode (``max`` for accuracy and recall, ``min`` for a
distance). A ``ModelCheckpoint`` in ``trainer.callbacks`` with ``filename: best`` and no
``monitor`` monitors that metric with that mode: :func:`select_by_protocol` writes both into
the parsed config before the callbacks are built, so the saved ``config.yaml`` records what
ran. A config that sets ``monitor`` itself keeps it (an override, e.g. early recognition's
``val/action/top1/100.0%``); the LightningModule then checks at the start of ``fit`` that it
names a logged metric (else a :class:`~epic_protocol.errors.UsageError` listing the valid
names) and that its ``mode`` agrees with the metric's direction (else one line saying which
mode to set): :func:`rulstm.evaluation.names.check_monitors`. The same holds for
``EarlyStopping``, whose ``monitor`` is always explicit.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from rulstm.ckpt_path import BEST
from rulstm.evaluation.names import Mode, fraction_key, metric_name, time_key
from rulstm.evaluation.protocol import PROTOCOLS, NextActionProtocol


@dataclass(frozen=True)
class MonitorChoice:
    """What the best checkpoint monitors: a logged name and whether larger or smaller is
    better."""

    monitor: str
    mode: Mode


def next_action_protocols() -> list[str]:
    """The registered protocols a next-action config may name (``ek55``, ``ek100``, ...)."""
    return sorted(name for name, cls in PROTOCOLS.items() if issubclass(cls, NextActionProtocol))


def next_action_choice(protocol: str, *, task: str = "anticipation") -> MonitorChoice:
    """The validation name and mode of ``protocol``'s selection metric for a next-action run:
    at its time (``val/action/top5/1.00s``), or with the whole action observed for early
    recognition (``val/action/top5/100.0%``).

    Raises:
        ValueError: ``protocol`` is not a registered next-action protocol (lists them).
    """
    if protocol not in next_action_protocols():
        raise ValueError(
            f"protocol: {protocol!r} is not a next-action evaluation protocol; "
            f"choose one of {', '.join(next_action_protocols())}"
        )
    selection = PROTOCOLS[protocol].selection
    if task == "early_recognition":
        when: str | None = fraction_key(1.0)
    else:
        when = None if selection.time is None else time_key(selection.time)
    name = metric_name("val", selection.task, selection.metric, selection.subset, when)
    return MonitorChoice(name, selection.mode)


def is_model_checkpoint(entry: Any) -> bool:
    """Whether a parsed ``trainer.callbacks`` entry (``class_path`` + ``init_args``) builds a
    ``ModelCheckpoint``. The class is looked up among the modules already imported (the
    parser imported it to check the config): nothing is imported here."""
    class_path = entry.get("class_path") if hasattr(entry, "get") else None
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and issubclass(cls, ModelCheckpoint)


def select_by_protocol(callbacks: Any, choice: MonitorChoice) -> list[Any]:
    """Every ``ModelCheckpoint`` entry of a parsed ``trainer.callbacks`` with ``filename:
    best`` and no ``monitor`` gets ``choice``'s monitor and mode (in place). Returns the
    entries it set; entries with a monitor of their own are left as they are."""
    entries: Iterable[Any]
    if callbacks is None or callbacks is True or callbacks is False:
        return []
    entries = callbacks if isinstance(callbacks, list) else [callbacks]
    chosen = []
    for entry in entries:
        if not is_model_checkpoint(entry):
            continue
        init_args = entry.get("init_args")
        if init_args is None or init_args.get("monitor") is not None:
            continue
        if init_args.get("filename") != BEST:
            continue
        init_args["monitor"] = choice.monitor
        init_args["mode"] = choice.mode
        chosen.append(entry)
    return chosen
