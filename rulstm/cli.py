"""``rulstm fit|validate|test|predict -c CONFIG``: LightningCLI over the module and DataModule.

Configs are plain YAML under ``configs/``; every argument is typed by the constructors'
signatures (see ``rulstm fit --help``). W&B logs offline by default so nothing ever blocks on
the network; ``WANDB_MODE=online`` or ``--wandb-online`` syncs; ``--trainer.logger``
switches to CSV or anything else; every logger writes into the stage folder
(``trainer.default_root_dir``) unless its ``save_dir`` is set. ``--ckpt_path best`` / ``last``
name the stage's ``checkpoints/best.ckpt`` / ``last.ckpt`` for ``validate``, ``test`` and
``predict``, also in a new process. Resuming with ``--ckpt_path`` and other optimiser or
scheduler settings applies them (same class) or refuses (another class): see
:mod:`rulstm.optimization`.

Values the data and the model must agree on are set once, on the data side, and reach the
model through jsonargparse links applied when the classes are instantiated:

* the sampling protocol: ``data.alpha`` -> ``model.alpha``, ``data.task`` -> ``model.task``,
  the scored steps (``data.anticipation_steps``, or ``data.early_recognition_steps`` for early
  recognition) -> ``model.anticipation_steps``;
* the sizes: ``num_classes`` from the action vocabulary, ``feat_dim`` (single branch) or
  ``feat_dims`` (fusion) from the HDF5 files' ``dim`` attribute.

A config may still set a model-side value; if it disagrees with the data, the run stops
before training with an error naming both values
(:func:`rulstm.stage_checks.check_compatibility`).

The top-level ``protocol:`` (``ek55``, ``ek100``, ``egtea``, ``custom``; default ``custom``)
names the evaluation protocol; the best checkpoint monitors its selection metric with its mode
unless the config sets a ``monitor`` (:mod:`rulstm.selection`).

Checkpoints of a stage live in ``<default_root_dir>/checkpoints``: ``best.ckpt`` (the best
epoch by the monitored metric) and ``last.ckpt`` (the end of the latest epoch, rewritten every
epoch, with the RNG state, so ``--ckpt_path .../last.ckpt`` continues exactly where training
stopped). ``rulstm fit`` refuses a folder that already holds checkpoints of an earlier run
unless resumed (``--ckpt_path``) or replaced (``--overwrite true``): :mod:`rulstm.run_folder`.

Modules: this one (the CLI class, its links and hooks), :mod:`rulstm.run_folder` (what a
stage leaves where), :mod:`rulstm.stage_checks` (model vs data, resumable checkpoints),
:mod:`rulstm.trainer_precision` (``--trainer.precision auto``), :mod:`rulstm.selection`
(checkpoint selection), :mod:`rulstm.ckpt_path` (``--ckpt_path``) and
:mod:`rulstm.lta_cli` (Ego4D long-term anticipation).

``data.num_workers: auto`` (the default) starts ``min(4, usable CPU cores)`` loader workers;
an explicit number above the usable cores warns once, naming the option.
Lightning warnings that ask nothing of the user are filtered (:data:`QUIET`), and with the
project's evaluator ``rulstm test`` prints its table, not Lightning's.

Bad input ends the run with one line ``rulstm: error: ...`` and exit status 1 (2 for unusable
arguments); ``--debug`` or ``RULSTM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger

from epic_protocol.backbones import CHECKPOINT_KEY as BACKBONES_KEY
from epic_protocol.backbones import backbone_of, check_backbones
from epic_protocol.errors import cli_main
from rulstm.checkpoints import read_checkpoint
from rulstm.ckpt_path import TrustedCkptPath
from rulstm.data.datamodule import AnticipationDataModule
from rulstm.evaluation import SubmissionWriter
from rulstm.evaluation.callbacks import RunConfigSaver
from rulstm.lightning import AnticipationModule
from rulstm.lta_cli import build_lta_cli, is_lta_command
from rulstm.run_folder import (
    DEFAULT_LOGGER,
    RunFolderPolicy,
    active_wandb_run,
    config_filename,
    finish_wandb_run,
    keep_logs_with_the_run,
    quiet_wandb,
)
from rulstm.selection import (
    WrittenConfig,
    next_action_choice,
    next_action_protocols,
    select_by_protocol,
)
from rulstm.stage_checks import (
    check_callback_alpha,
    check_compatibility,
    check_optimizer_unchanged,
    check_resumable,
    scored_steps,
)
from rulstm.trainer_precision import accept_auto_precision, resolve_precision

log = logging.getLogger(__name__)


def _module_default(name: str) -> Any:
    return inspect.signature(AnticipationModule.__init__).parameters[name].default


# Link target -> (what the data says, the value that means "not set by the config").
DERIVED: dict[str, tuple[Callable[[AnticipationDataModule], Any], Any]] = {
    "model.alpha": (lambda dm: dm.alpha, _module_default("alpha")),
    "model.task": (lambda dm: dm.task, _module_default("task")),
    "model.anticipation_steps": (scored_steps, _module_default("anticipation_steps")),
    "model.net.init_args.num_classes": (lambda dm: dm.num_actions, None),
}

#: The evaluation protocol of a config without a top-level ``protocol:``.
DEFAULT_PROTOCOL = "custom"


class RulstmCLI(WrittenConfig, RunFolderPolicy, TrustedCkptPath, LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        self._configured: dict[str, Any] = {}
        self._net_args: set[str] = set()
        for target, (derive, unset) in DERIVED.items():
            compute = partial(self._from_data, target, derive, unset)
            compute.__name__ = "from_the_data"  # what --help shows for the link
            parser.link_arguments("data", target, compute_fn=compute, apply_on="instantiate")
        # Nets without these arguments (fusion has feat_dims, branches feat_dim) skip the link.
        parser.link_arguments(
            "data",
            "model.net.init_args.feat_dim",
            self.feat_dim_from_the_files,
            apply_on="instantiate",
        )
        parser.link_arguments(
            "data",
            "model.net.init_args.feat_dims",
            self.feat_dims_from_the_files,
            apply_on="instantiate",
        )
        accept_auto_precision(parser)
        parser.add_argument(
            "--protocol",
            type=Literal[tuple(next_action_protocols())],  # type: ignore[valid-type]
            default=DEFAULT_PROTOCOL,
            help="the evaluation protocol (rulstm.evaluation.protocol): the best checkpoint "
            "(a ModelCheckpoint with filename best and no monitor) monitors its selection "
            "metric with its mode (rulstm.selection)",
        )
        parser.add_argument(
            "--wandb-online",
            action="store_true",
            help="sync the W&B logger online (same as WANDB_MODE=online; default: offline)",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("wandb_online"):
            os.environ["WANDB_MODE"] = "online"
        # W&B must never block on a machine without network: offline unless asked otherwise.
        os.environ.setdefault("WANDB_MODE", "offline")
        keep_logs_with_the_run(config)
        resolve_precision(config)
        choice = next_action_choice(
            config.get("protocol") or DEFAULT_PROTOCOL,
            task=config.get("data.task") or "anticipation",
        )
        select_by_protocol(
            config.get("trainer.callbacks"), choice, written=self.written("trainer.callbacks")
        )
        # What the config itself says, before the links overwrite it at instantiation.
        self._configured = {
            key: config.get(key)
            for key in (
                *DERIVED,
                "model.modality",
                "model.net.init_args.feat_dim",
                "model.net.init_args.feat_dims",
            )
        }
        self._net_args = set(vars(config.get("model.net.init_args") or {}))

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                quiet_wandb(logger)

    def _from_data(
        self,
        target: str,
        derive: Callable[[AnticipationDataModule], Any],
        unset: Any,
        datamodule: AnticipationDataModule,
    ) -> Any:
        configured = self._configured.get(target)
        if configured is not None and configured != unset:
            return configured  # a disagreement is reported by check_compatibility
        return derive(datamodule)

    def feat_dim_from_the_files(self, datamodule: AnticipationDataModule) -> int | None:
        """A single-branch net's ``feat_dim``: the ``dim`` of ``model.modality``'s file (of
        the only file when there is one); the configured value when the config sets one."""
        configured = self._configured.get("model.net.init_args.feat_dim")
        if configured is not None or "feat_dim" not in self._net_args:
            return configured
        dims = datamodule.feature_dims
        modality = self._configured.get("model.modality")
        if modality is None and len(dims) != 1:
            raise ValueError(
                f"data.features holds {list(dims)}: set model.modality to the one this "
                "single-branch net reads (its feat_dim is then read from that file)"
            )
        modality = modality or next(iter(dims))
        if modality not in dims:
            raise KeyError(
                f"model.modality is {modality!r} but data.features only has {list(dims)}"
            )
        return dims[modality]

    def feat_dims_from_the_files(self, datamodule: AnticipationDataModule) -> dict[str, int] | None:
        """A fusion net's ``feat_dims``: every feature file's ``dim``, in ``data.features``
        order; the configured value when the config sets one."""
        configured = self._configured.get("model.net.init_args.feat_dims")
        if configured is not None or "feat_dims" not in self._net_args:
            return configured
        return dict(datamodule.feature_dims)

    def before_fit(self) -> None:
        self._check_shapes()
        self._check_backbones()
        self._checkpoint_dirs()
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path:
            check_resumable(ckpt_path, self.model)
            check_optimizer_unchanged(ckpt_path, self.model)
        self.claim_run_folder()

    def before_validate(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()
        self.one_table()
        self._check_backbones()

    def before_test(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()
        self.one_table()
        self._check_backbones()

    def before_predict(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()
        self._check_backbones()

    def after_fit(self) -> None:
        """Where the stage's files went (one line each)."""
        if not self.trainer.is_global_zero:
            return
        for callback in self.trainer.checkpoint_callbacks:
            path = getattr(callback, "best_model_path", "") or getattr(
                callback, "last_model_path", ""
            )
            if path:
                print(f"checkpoint written: {path}", flush=True)
        if self.trainer.loggers:
            print(f"logs written to: {self.trainer.log_dir}", flush=True)

    def after_predict(self) -> None:
        """No silent nothing: without a prediction writer, ``rulstm predict`` writes no file."""
        writers = (SubmissionWriter, BasePredictionWriter)
        if any(isinstance(c, writers) for c in self.trainer.callbacks):
            return  # the writer says where its file went
        warnings.warn(
            "rulstm predict wrote no file: the config has no prediction writer callback, so "
            "the scores were computed and dropped. For a predictions file add a predict "
            "config with rulstm.evaluation.SubmissionWriter (its init_args protocol and "
            "path), e.g. -c configs/ek55/predict_seen.yaml (docs/evaluation.md: Challenge files)",
            UserWarning,
            stacklevel=1,
        )

    def _check_backbones(self) -> None:
        """Refuse features of another backbone than a checkpoint's (warn when either records
        none); see :mod:`epic_protocol.backbones`. Every checkpoint the run reads is checked:
        ``--ckpt_path``, ``--model.init_checkpoint`` (how the docs evaluate a stage) against
        all of ``data.features``, and each ``--model.branch_checkpoints`` entry against its
        own modality's file."""
        config = self.config[self.subcommand]  # the model's arguments, not the instance
        stores = self.datamodule.stores
        features = {m: backbone_of(s.info.provenance) for m, s in stores.items()}
        whole = [config.get("model.init_checkpoint")]
        if self.subcommand != "fit":  # resolved by _resolve_ckpt_path (best, last)
            whole.append(self.config_init[self.subcommand].get("ckpt_path"))
        checks = [(path, features) for path in whole]
        for modality, path in (config.get("model.branch_checkpoints") or {}).items():
            if modality in features:
                checks.append((path, {modality: features[modality]}))
        for path, given in checks:
            if not path or not Path(path).is_file():
                continue
            trained = read_checkpoint(path).get(BACKBONES_KEY)
            files = ", ".join(str(stores[m].path) for m in given)
            check_backbones(
                given,
                trained,
                features_name=f"the features of data.features ({files})",
                checkpoint_name=str(path),
            )

    def _check_shapes(self) -> None:
        """Fail before training if the net does not fit the data (classes, feature dims), or
        an evaluation callback times its steps with another alpha than the data."""
        check_compatibility(self.model, self.datamodule)
        check_callback_alpha(self.trainer.callbacks, self.datamodule)


class _NoAdverts(logging.Filter):
    """Drop Lightning's "Tip: try installing ..." product adverts (printed on every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in record.getMessage()


for _name in (
    "lightning_utilities.core.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
):
    logging.getLogger(_name).addFilter(_NoAdverts())


#: Lightning warnings that ask nothing of the user here (one screen per stage):
QUIET = (
    # A small training split has fewer batches than log_every_n_steps: the logger then gets
    # no per-step train/loss (the validation metrics still come every epoch). docs/training.md says
    # to lower --trainer.log_every_n_steps for per-step curves on a small own dataset.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # rulstm fit refuses a folder with an earlier run's checkpoints (--overwrite,
    # --ckpt_path); when resuming the folder holds the run's own checkpoints by design.
    r"Checkpoint directory .* exists and is not empty",
    # PyTorch's "might freeze" warning for more loader workers than cores, once per loader:
    # data.num_workers auto never starts more, and an explicit number above the usable cores
    # gets one warning of its own naming the option (rulstm.data.datamodule).
    r"This DataLoader will create \d+ worker processes in total",
)


def build_cli(args: Sequence[str] | None = None, **kwargs) -> RulstmCLI:
    """Parse ``args`` (default: the command line) and run the subcommand, if any."""
    with warnings.catch_warnings():
        # Given args while sys.argv holds the same command (the console script, or the
        # quickstart's own options), LightningCLI warns; passing them is intended here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # A deprecation inside torch's pytree that Lightning triggers on every run.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        arguments = list(sys.argv[1:] if args is None else args)
        command = arguments[:1]
        if command and command[0] in ("validate", "test", "predict"):
            # Evaluating a checkpoint needs none of the callbacks that wrote it.
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
        if is_lta_command(arguments):  # Ego4D long-term anticipation (configs/ego4d_lta)
            return build_lta_cli(args, **kwargs)
        before = active_wandb_run()
        try:
            return RulstmCLI(
                AnticipationModule,
                AnticipationDataModule,
                args=None if args is None else list(args),
                trainer_defaults={"logger": DEFAULT_LOGGER},
                save_config_callback=RunConfigSaver,
                save_config_kwargs={
                    "overwrite": True,
                    "config_filename": config_filename(command),
                },
                **kwargs,
            )
        finally:
            if kwargs.get("run", True):
                finish_wandb_run(before)


@cli_main("rulstm")
def main(args: Sequence[str] | None = None) -> None:
    # Argument errors raise (one line from cli_main) instead of printing the usage block.
    build_cli(args, parser_kwargs={"exit_on_error": False})


if __name__ == "__main__":
    raise SystemExit(main())
