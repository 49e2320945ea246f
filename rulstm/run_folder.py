"""What a stage leaves in its run folder (``trainer.default_root_dir``), and what it refuses.

* Checkpoints live in ``<default_root_dir>/checkpoints``: ``best.ckpt`` (the best epoch by the
  monitored metric, :mod:`rulstm.selection`) and ``last.ckpt`` (the end of the latest epoch,
  rewritten every epoch, with the RNG state: :func:`add_last_checkpoint`).
* ``rulstm fit`` refuses a folder that already holds checkpoints of an earlier run (later
  stages would read them by accident): resume it with ``--ckpt_path``, replace it with
  ``--overwrite true`` (which removes all of the earlier run: checkpoints, ``config*.yaml``,
  ``wandb/``, ``mlruns/`` and ``version_N/`` logs, :func:`claim_run_folders`), or pick
  another ``--trainer.default_root_dir``.
* Every logger writes into the run folder unless its ``save_dir`` is set
  (:func:`keep_logs_with_the_run`); the run's configuration is saved as ``config.yaml`` by
  ``fit`` and ``config_<subcommand>.yaml`` otherwise (:func:`config_filename`).
* W&B logs offline by default (:data:`DEFAULT_LOGGER`), quietly (:func:`quiet_wandb`), and a
  command ends the W&B run it started (:func:`finish_wandb_run`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from epic_protocol.errors import DataError
from rulstm.ckpt_path import LAST
from rulstm.evaluation.names import logged_table
from rulstm.evaluation.records import evaluator_owns_test_metrics


class RunFolderError(DataError, ValueError):
    """A stage would write into a folder that holds checkpoints of an earlier run."""


# No ``offline`` here: WandbLogger(offline=True) would force offline even under
# WANDB_MODE=online. The mode comes from WANDB_MODE, which the CLI defaults to offline.
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"project": "rulstm"},
}


class RunFolderPolicy:
    """Mixin for a ``LightningCLI`` subclass (placed before ``LightningCLI``): ``rulstm fit
    --overwrite``, :meth:`claim_run_folder` for its ``before_fit`` and :meth:`one_table` for
    ``before_test``. Used by the next-action CLI and the long-term anticipation one alike."""

    def _prepare_subcommand_parser(self, klass: Any, subcommand: str, **kwargs: Any) -> Any:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)  # type: ignore[misc]
        if subcommand == "fit":
            parser.add_argument(
                "--overwrite",
                type=bool,
                default=False,
                help="Remove an earlier run from the stage folder first: its checkpoints, "
                "config*.yaml, wandb/, mlruns/ and version_N/ logs (default: refuse a folder with "
                "checkpoints; --ckpt_path resumes it instead).",
            )
        return parser

    def one_table(self) -> None:
        """Lightning's table of every logged metric is not printed by ``validate`` and
        ``test``: :meth:`after_validate` / :meth:`after_test` print the project's (the
        evaluator's report, or :func:`~rulstm.evaluation.names.logged_table`). Call it in
        ``before_validate`` / ``before_test``."""
        self.config_init[self.subcommand]["verbose"] = False  # type: ignore[attr-defined]

    def after_validate(self) -> None:
        """The logged ``val/...`` values under their logged names (a compact table)."""
        self._print_logged("val")

    def after_test(self) -> None:
        """Without an evaluator, the logged ``test/...`` values as :meth:`after_validate`
        prints them; with one (it printed its report), the names it did not log
        (``test/loss``, the fusion weights)."""
        self._print_logged("test")

    def _print_logged(self, stage: str) -> None:
        trainer = self.trainer  # type: ignore[attr-defined]
        if not trainer.is_global_zero:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        if stage == "test" and evaluator_owns_test_metrics(trainer):
            for callback in trainer.callbacks:
                for name in getattr(callback, "logged_names", lambda: [])():
                    metrics.pop(name, None)
        table = logged_table(metrics, stage=stage)
        if table:
            print(table, flush=True)

    def claim_run_folder(self) -> None:
        """``last.ckpt`` every epoch (:func:`add_last_checkpoint`), and the stage folder
        claimed for this run (:func:`claim_run_folders`). Call it in ``before_fit`` once the
        checkpoint folders are set."""
        config = self.config[self.subcommand]  # type: ignore[attr-defined]
        trainer = self.trainer  # type: ignore[attr-defined]
        add_last_checkpoint(trainer)
        claim_run_folders(
            trainer,
            overwrite=bool(config.get("overwrite", False)),
            resuming=bool(config.get("ckpt_path")),
            explicit_root=bool(config.get("trainer.default_root_dir")),
        )


def last_checkpoint(dirpath: str | None = None) -> ModelCheckpoint:
    """``last.ckpt``: the state at the end of every training epoch, whatever the monitored
    metric did (Lightning's ``save_last`` only rewrites it when a top-k checkpoint is saved)."""
    return ModelCheckpoint(
        dirpath=dirpath,
        filename=LAST,
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )


def add_last_checkpoint(trainer: L.Trainer) -> None:
    """``last.ckpt`` in ``<default_root_dir>/checkpoints`` every epoch: the configured
    every-epoch checkpoint, else one added here; a monitored checkpoint's ``save_last`` is
    turned off (Lightning rewrites that one only on a new best)."""
    default_dir = os.path.join(trainer.default_root_dir, "checkpoints")
    callbacks = trainer.checkpoint_callbacks
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.save_last:
            callback.save_last = False
    has_last = any(
        isinstance(c, ModelCheckpoint) and c.monitor is None and c.filename == LAST
        for c in callbacks
    )
    if not has_last and trainer.max_epochs != 0:
        trainer.callbacks.append(last_checkpoint(default_dir))


def claim_run_folders(
    trainer: L.Trainer, *, overwrite: bool, resuming: bool, explicit_root: bool
) -> None:
    """Refuse checkpoint folders of an earlier run; with ``overwrite``, remove that run: its
    checkpoints and, in an explicit stage folder (``explicit_root``: the config sets
    ``trainer.default_root_dir``), its ``config.yaml``, W&B runs and logger ``version_N``
    folders (:func:`earlier_run`). Only process 0 acts (it decides before the others start).

    Raises:
        RunFolderError: a checkpoint folder holds ``*.ckpt`` files, neither ``resuming`` nor
            ``overwrite``; the message says how to resume, replace or move on.
    """
    if not trainer.is_global_zero:
        return
    folders = sorted(
        {Path(c.dirpath) for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)}
    )
    stale: list[Path] = []
    for folder in folders:
        found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
        if not found or resuming:
            continue
        if not overwrite:
            names = ", ".join(p.name for p in found[:4]) + (" ..." if len(found) > 4 else "")
            raise RunFolderError(
                f"{folder} already holds checkpoints of an earlier run ({names}); pass "
                "--overwrite true to replace them, --ckpt_path "
                f"{folder / (LAST + '.ckpt')} to resume, or another "
                "--trainer.default_root_dir"
            )
        stale += found
    if not overwrite or resuming:
        return
    if explicit_root:
        stale += earlier_run(trainer)
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if stale:
        root = Path(trainer.default_root_dir).resolve()
        names = [
            str(p.resolve().relative_to(root)) if p.resolve().is_relative_to(root) else str(p)
            for p in stale
        ]
        print(f"--overwrite: removed the earlier run from {root}: {', '.join(names)}")


def earlier_run(trainer: L.Trainer) -> list[Path]:
    """What an earlier run left in the stage folder besides checkpoints: the saved
    ``config*.yaml``, W&B runs (``wandb/``), MLflow's ``mlruns/`` and CSV / TensorBoard
    ``version_N`` folders, inside
    ``trainer.default_root_dir`` only (call it only for an explicit one, never the current
    folder)."""
    root = Path(trainer.default_root_dir).resolve()
    # What the default and the usual loggers leave, whichever logger this run uses.
    found = [root / "wandb", root / "lightning_logs", root / "mlruns"]
    found += sorted(root.glob("config*.yaml")) + sorted(root.glob("version_*"))
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            found.append(Path(logger.save_dir or root) / "wandb")
        elif getattr(logger, "root_dir", None):  # CSV, TensorBoard: root_dir/version_N
            found += sorted(Path(logger.root_dir).glob("version_*"))
    unique = dict.fromkeys(p.resolve() for p in found if p.exists() or p.is_symlink())
    return [p for p in unique if p.is_relative_to(root) and p != root]


def keep_logs_with_the_run(config: Any) -> None:
    """Every logger writes into the run folder (``trainer.default_root_dir``), not into the
    current directory: W&B's offline run, a CSV or TensorBoard logger's ``version_N``
    folders, MLflow's ``mlruns/``, and the ``config.yaml`` that LightningCLI saves in the
    first logger's folder stay with the stage's checkpoints. An unset ``save_dir`` (or ``.``)
    becomes the run folder, the logger's own relative default (MLflow's ``./mlruns``) a
    folder inside it; any other ``save_dir`` is kept. ``config``: the parsed subcommand
    config."""
    root = config.get("trainer.default_root_dir")
    loggers = config.get("trainer.logger")
    if not root or not loggers or loggers is True:
        return  # no run folder, or no logger / Lightning's default (already in root)
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not hasattr(logger, "get") or not logger.get("class_path"):
            continue
        init_args = logger.get("init_args")
        if init_args is None or "save_dir" not in init_args:
            continue  # a logger without a save_dir argument (e.g. Neptune)
        save_dir = init_args.get("save_dir")
        if save_dir in (None, "", "."):
            init_args["save_dir"] = str(root)
        elif save_dir == _default_save_dir(logger["class_path"]) and not os.path.isabs(save_dir):
            init_args["save_dir"] = os.path.normpath(os.path.join(str(root), save_dir))


def _default_save_dir(class_path: str) -> Any:
    """The ``save_dir`` default of the logger class ``class_path`` (the user's own config
    names it, and jsonargparse has imported it already); ``None`` when it has none."""
    module, _, name = class_path.rpartition(".")
    try:
        logger_class = getattr(importlib.import_module(module), name)
        parameter = inspect.signature(logger_class).parameters.get("save_dir")
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def config_filename(command: Sequence[str]) -> str:
    """The file the run's configuration is saved to: ``config.yaml`` for ``fit`` (what
    trained the stage's checkpoints), ``config_<subcommand>.yaml`` for ``validate``, ``test``
    and ``predict``, which often run in the stage folder and must not replace it."""
    if command and command[0] in ("validate", "test", "predict"):
        return f"config_{command[0]}.yaml"
    return "config.yaml"


def quiet_wandb(logger: WandbLogger) -> None:
    """No W&B output that asks nothing of the user: Lightning passes ``anonymous=None``,
    which W&B >= 0.19 reports as a deprecated setting on every run; W&B looks for a git
    repository from its ``dir``, warning "git root ... does not exist" while the run folder
    is not created yet; and at the end of every run W&B prints a ~30-line history and
    summary of the logged metrics below the stage's own lines (where its files went). The
    run is made ``quiet`` (W&B still names the folder of an offline run, or the URL of an
    online one) unless the logger's ``settings`` or ``WANDB_QUIET`` say otherwise."""
    init = getattr(logger, "_wandb_init", None)  # the wandb.init() kwargs, used lazily
    if isinstance(init, dict):
        if "anonymous" in init and init["anonymous"] is None:
            del init["anonymous"]
        if init.get("settings") is None and "WANDB_QUIET" not in os.environ:
            init["settings"] = {"quiet": True}
    if logger.save_dir:
        os.makedirs(logger.save_dir, exist_ok=True)


def active_wandb_run() -> Any:
    """The W&B run of this process, if any (``wandb`` is never imported here)."""
    wandb = sys.modules.get("wandb")
    return getattr(wandb, "run", None)


def finish_wandb_run(before: Any) -> None:
    """End the W&B run this command started (``before``: :func:`active_wandb_run` before the
    command). Lightning's WandbLogger leaves it open (the process exit ends it), so commands
    run in one process (scripts/train_egtea.py, the quickstart, tests) would otherwise all log
    into the first stage's run and folder."""
    run = active_wandb_run()
    if run is not None and run is not before:
        run.finish()
