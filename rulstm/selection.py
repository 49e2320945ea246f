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
mode to set): :func:`rulstm.evaluation.names.check_monitors`.

``EarlyStopping`` stops on the same metric: a :class:`ProtocolEarlyStopping` (Lightning's
``EarlyStopping`` whose ``monitor`` may be left out; Lightning's own requires one) without
``monitor`` gets the protocol's metric and mode too. A ``ModelCheckpoint`` or
``EarlyStopping`` that names a ``monitor`` but no ``mode`` gets the metric's direction
(``max`` for ``val/action/top1/100.0%``) instead of Lightning's default ``min``: whether the
config wrote a ``mode`` is read from the configuration parsed without defaults
(:class:`WrittenConfig`), since a written ``mode: min`` and Lightning's default look the same
once parsed. A written ``mode`` is kept, and checked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from epic_protocol.errors import UsageError
from rulstm.ckpt_path import BEST
from rulstm.evaluation.names import Mode, fraction_key, metric_mode, metric_name, time_key
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


def _callback_class(entry: Any) -> type | None:
    """The class a parsed ``trainer.callbacks`` entry (``class_path`` + ``init_args``) builds,
    looked up among the modules already imported (the parser imported it to check the
    config): nothing is imported here."""
    class_path = entry.get("class_path") if hasattr(entry, "get") else None
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)
    return cls if isinstance(cls, type) else None


def is_model_checkpoint(entry: Any) -> bool:
    """Whether a parsed ``trainer.callbacks`` entry builds a ``ModelCheckpoint``."""
    cls = _callback_class(entry)
    return cls is not None and issubclass(cls, ModelCheckpoint)


def is_early_stopping(entry: Any) -> bool:
    """Whether a parsed ``trainer.callbacks`` entry builds an ``EarlyStopping``."""
    cls = _callback_class(entry)
    return cls is not None and issubclass(cls, EarlyStopping)


def _entries(callbacks: Any) -> list[Any]:
    if callbacks is None or callbacks is True or callbacks is False:
        return []
    return list(callbacks) if isinstance(callbacks, list) else [callbacks]


def _wrote_mode(entry: Any, written: Any) -> bool:
    """Whether the config wrote ``entry``'s ``mode`` (``written``: the same entry parsed
    without defaults; ``None`` when unknown, taken as written)."""
    if written is None:
        return True
    if not hasattr(written, "get") or written.get("class_path") != entry.get("class_path"):
        return True  # not the same entry: assume nothing
    init_args = written.get("init_args")
    return init_args is not None and init_args.get("mode") is not None


def select_by_protocol(callbacks: Any, choice: MonitorChoice, *, written: Any = None) -> list[Any]:
    """Fill the monitored callbacks of a parsed ``trainer.callbacks`` (in place):

    * a ``ModelCheckpoint`` with ``filename: best`` and no ``monitor``, and an
      ``EarlyStopping`` (:class:`ProtocolEarlyStopping`) without ``monitor``, get
      ``choice``'s monitor and mode;
    * one with a ``monitor`` of its own but no written ``mode`` gets the metric's direction
      (:func:`~rulstm.evaluation.names.metric_mode`), when the registry knows it.

    ``written``: the same ``trainer.callbacks`` parsed without defaults
    (:meth:`WrittenConfig.written`), which says whether a ``mode`` was written; ``None``:
    unknown (every mode is kept). Returns the entries given ``choice``."""
    entries = _entries(callbacks)
    written_entries = _entries(written)
    if len(written_entries) != len(entries):
        written_entries = [None] * len(entries)
    chosen = []
    for entry, as_written in zip(entries, written_entries):
        checkpoint, stopping = is_model_checkpoint(entry), is_early_stopping(entry)
        if not (checkpoint or stopping):
            continue
        init_args = entry.get("init_args")
        if init_args is None:
            continue
        monitor = init_args.get("monitor")
        if monitor is None:
            if stopping or init_args.get("filename") == BEST:
                init_args["monitor"] = choice.monitor
                init_args["mode"] = choice.mode
                chosen.append(entry)
            continue
        better = metric_mode(monitor) if isinstance(monitor, str) else None
        if better is not None and not _wrote_mode(entry, as_written):
            init_args["mode"] = better
    return chosen


class ProtocolEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping`` whose ``monitor`` and ``mode`` may be left out: under
    ``rulstm fit`` the run's protocol fills them (:func:`select_by_protocol`), so training
    stops on the metric the best checkpoint is chosen by::

        - class_path: rulstm.selection.ProtocolEarlyStopping
          init_args: {patience: 10}

    Args:
        monitor: a logged name (:mod:`rulstm.evaluation.names`); ``None``: the protocol's
            selection metric (set by the CLI).
        mode: ``max`` or ``min``; ``None``: the metric's direction.
        **kwargs: the other ``EarlyStopping`` arguments (``patience``, ``min_delta`` ...).

    Raises:
        UsageError: built without a ``monitor`` outside the CLI, or with a ``monitor`` whose
            direction is unknown and no ``mode``.
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: Literal["min", "max"] | None = None,
        **kwargs: Any,
    ) -> None:
        if monitor is None:
            raise UsageError(
                "ProtocolEarlyStopping: no monitor (rulstm fit fills it from the config's "
                "protocol); set init_args.monitor to a logged name"
            )
        mode = mode or metric_mode(monitor)
        if mode is None:
            raise UsageError(
                f"ProtocolEarlyStopping(monitor={monitor!r}): set init_args.mode (max or min)"
            )
        super().__init__(monitor=monitor, mode=mode, **kwargs)


class WrittenConfig:
    """Mixin for a ``LightningCLI`` subclass (placed before ``LightningCLI``): keeps the
    configuration as written, parsed a second time without defaults, so that a ``mode`` the
    config wrote is told apart from Lightning's default (:func:`select_by_protocol`)."""

    _written_config: Any = None

    def parse_arguments(self, parser: Any, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)  # type: ignore[misc]
        except Exception as error:
            text = " ".join(str(error).split())
            if "EarlyStopping': the following arguments are required: monitor" in text:
                raise UsageError(
                    "lightning.pytorch.callbacks.EarlyStopping needs init_args.monitor; leave "
                    "it out with class_path rulstm.selection.ProtocolEarlyStopping to stop on "
                    "the protocol's selection metric (the best checkpoint's)"
                ) from error
            raise
        self._written_config = None
        if isinstance(args, dict) or hasattr(args, "as_dict"):
            return  # a dict or Namespace of values: nothing says what was written
        exit_on_error = getattr(parser, "exit_on_error", True)
        parser.exit_on_error = False  # never print a usage screen from this second parse
        try:
            self._written_config = parser.parse_args(args, defaults=False)
        except (Exception, SystemExit):  # unknown: every mode is taken as written
            self._written_config = None
        finally:
            parser.exit_on_error = exit_on_error

    def written(self, key: str) -> Any:
        """``key`` (``trainer.callbacks``) of the running subcommand as the config wrote it;
        ``None`` when unknown."""
        config = self._written_config
        if config is None:
            return None
        subcommand = getattr(self, "subcommand", None)
        try:
            return (config[subcommand] if subcommand else config).get(key)
        except (KeyError, AttributeError, TypeError):
            return None
