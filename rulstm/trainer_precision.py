"""``--trainer.precision auto`` for the ``rulstm`` command line: resolved by the precision rule
of :mod:`epic_protocol.precision` before the Trainer is built (Lightning never sees ``auto``),
and written back so the saved ``config.yaml`` records what ran."""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LightningArgumentParser

from epic_protocol import precision

log = logging.getLogger(__name__)


def accept_auto_precision(parser: LightningArgumentParser) -> None:
    """Let ``trainer.precision`` also take ``auto`` (resolved by :func:`resolve_precision`)."""
    for action in parser._actions:
        if getattr(action, "dest", None) == "trainer.precision" and hasattr(action, "_typehint"):
            action._typehint = action._typehint | Literal["auto"]
            action.help = (
                "'auto' (bf16-mixed where bf16 is native: a GPU with bf16, a CPU with AVX-512 "
                "BF16 or AMX; else 32-true), " + (action.help or "")
            )


def trainer_device(accelerator: Any) -> str:
    """The device type a Trainer with ``accelerator`` runs on (``cpu`` unless it is a GPU)."""
    name = accelerator if isinstance(accelerator, str) else "cpu"
    if name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu" if name in ("auto", "cpu") else name


def resolve_precision(config: Any) -> None:
    """``trainer.precision: auto`` -> ``bf16-mixed`` or ``32-true`` by the precision rule,
    written back into ``config`` (the parsed subcommand config); an explicit bf16 on a CPU
    without native bf16 warns once (emulated, much slower)."""
    value = config.get("trainer.precision")
    device = trainer_device(config.get("trainer.accelerator", "auto"))
    if value == "auto":
        resolved = precision.auto_precision(device)
        config["trainer.precision"] = resolved
        log.info("precision auto -> %s (%s)", resolved, precision.cpu_description())
    elif isinstance(value, str) and value.startswith("bf16"):
        precision.warn_if_emulated(device, what=f"--trainer.precision {value}")
