"""``--ckpt_path`` for every ``rulstm`` CLI (next action and long-term anticipation): the
file is trusted only as far as :mod:`rulstm.checkpoints` checks it.

LightningCLI reads a ``--ckpt_path``'s hyper-parameters into the config before the classes
are built, and jsonargparse imports whatever ``class_path`` they name. :class:`TrustedCkptPath`
(a mixin placed before ``LightningCLI``) reads the file once with ``weights_only``, refuses it
with one line naming the file when it is unreadable, not a Lightning checkpoint, or when its
hyper-parameters name a class outside the allow-list (this project's networks,
:data:`rulstm.models.spec.NETWORKS`; its LightningModules; torch optimizers and schedulers),
before anything is imported; ``best`` / ``last`` resolve to the stage's files and get the same
checks (:meth:`TrustedCkptPath._resolve_ckpt_path`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from rulstm.checkpoints import check_lightning_checkpoint, read_checkpoint

#: File names of the two checkpoints every stage writes.
BEST, LAST = "best", "last"


class TrustedCkptPath:
    """Mixin for a ``LightningCLI`` subclass: ``--ckpt_path`` checked before use."""

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads ``--ckpt_path``'s hyper-parameters into the config before the
        classes are built. Here the file is read once, safely, and refused with one line
        naming it when it is unreadable, not a Lightning checkpoint (what is missing), or when
        its hyper-parameters name a class that may not be built (before jsonargparse would
        import it); then its hyper-parameters are applied as Lightning does."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return  # best / last / none: resolved (and checked by Lightning) later
        checkpoint = read_checkpoint(ckpt_path)
        check_lightning_checkpoint(ckpt_path, checkpoint, training=subcommand == "fit")
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except argparse.ArgumentError as error:
            raise ValueError(
                f"{ckpt_path}: its hyper_parameters do not fit the model's options ({error})"
            ) from None

    def _checkpoint_dirs(self) -> None:
        # Stages chain through runs/<stage>/checkpoints/best.ckpt: keep checkpoints there
        # whatever the logger (Lightning would otherwise nest them in the logger's run folder).
        for callback in self.trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) is None:
                callback.dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")

    def _resolve_ckpt_path(self) -> None:
        """``--ckpt_path best|last`` -> the checkpoint file (see :func:`resolve_ckpt_path`)."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") in ("best", "last"):
            self._checkpoint_dirs()
            config["ckpt_path"] = resolve_ckpt_path(config["ckpt_path"], self.trainer)
            # The same checks as a file given by name (see _parse_ckpt_path).
            path = config["ckpt_path"]
            check_lightning_checkpoint(path, read_checkpoint(path))


def resolve_ckpt_path(which: str, trainer) -> str:
    """The file ``--ckpt_path best`` or ``last`` means for ``trainer``'s ModelCheckpoint.

    ``best``: the callback's ``best_model_path`` (set after ``fit`` in this process), else
    ``{dirpath}/{filename}.ckpt`` (the stage configs: ``runs/<stage>/checkpoints/best.ckpt``);
    ``last``: ``{dirpath}/last.ckpt``. Without such a callback (the test configs replace the
    callback list), the stage layout ``<default_root_dir>/checkpoints/{best,last}.ckpt``.
    Raises FileNotFoundError (one line, saying which path to pass) when the file names carry a
    template or the file does not exist.
    """
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    hint = (
        f"pass the checkpoint file instead, e.g. --ckpt_path "
        f"{Path(trainer.default_root_dir) / 'checkpoints' / (which + '.ckpt')}"
    )
    configured = [c for c in callbacks if c.dirpath is not None and (which == "last" or c.filename)]
    if which == "best":  # the monitored callback writes best.ckpt, the other one last.ckpt
        configured.sort(key=lambda c: c.monitor is None)
    if not configured:
        stage_layout = Path(trainer.default_root_dir) / "checkpoints" / f"{which}.ckpt"
        if stage_layout.is_file():
            return str(stage_layout)
        raise FileNotFoundError(_missing_checkpoint(which, stage_layout))
    callback = configured[0]
    if which == "best" and callback.best_model_path:
        return callback.best_model_path
    name = callback.CHECKPOINT_NAME_LAST if which == "last" else callback.filename
    if "{" in name:
        raise FileNotFoundError(
            f"--ckpt_path {which}: the ModelCheckpoint file name {name!r} is a template; {hint}"
        )
    path = Path(callback.dirpath) / f"{name}{callback.FILE_EXTENSION}"
    if not path.is_file():
        raise FileNotFoundError(_missing_checkpoint(which, path))
    return str(path)


def _missing_checkpoint(which: str, path: Path) -> str:
    """One line: the file ``--ckpt_path best|last`` looked for, the folder searched and what
    it holds, and how to get the file."""
    folder = path.parent
    if folder.is_dir():
        held = sorted(p.name for p in folder.glob("*.ckpt"))
        holds = f"it holds {', '.join(held[:4])}" if held else "it holds no checkpoint"
    else:
        holds = "the folder does not exist"
    return (
        f"--ckpt_path {which}: no {path.name} in {folder} ({holds}); train the stage there "
        f"first (rulstm fit with --trainer.default_root_dir {folder.parent}), or pass the "
        "checkpoint file to --ckpt_path"
    )
