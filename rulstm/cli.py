"""``rulstm fit|validate|test|predict -c CONFIG``: LightningCLI over the module and DataModule.

Configs are plain YAML under ``configs/``; every argument is typed by the constructors'
signatures (see ``rulstm fit --help``). W&B logs offline by default so nothing ever blocks on
the network; ``WANDB_MODE=online`` or ``--wandb-online`` syncs; ``--trainer.logger``
switches to CSV or anything else. ``--ckpt_path best`` / ``last`` name the stage's ``checkpoints/best.ckpt`` /
``last.ckpt`` for ``validate``, ``test`` and ``predict``, also in a new process.

Values the data and the model must agree on are set once, on the data side, and reach the
model through jsonargparse links applied when the classes are instantiated:

* the sampling protocol: ``data.alpha`` -> ``model.alpha``, ``data.task`` -> ``model.task``,
  the scored steps (``data.anticipation_steps``, or ``data.early_recognition_steps`` for early
  recognition) -> ``model.anticipation_steps``;
* the sizes: ``num_classes`` from the action vocabulary, ``feat_dim`` (single branch) or
  ``feat_dims`` (fusion) from the HDF5 files' ``dim`` attribute.

A config may still set a model-side value; if it disagrees with the data, the run stops
before training with an error naming both values (:func:`check_compatibility`).

Checkpoints of a stage live in ``<default_root_dir>/checkpoints``: ``best.ckpt`` (the best
epoch by the monitored metric) and ``last.ckpt`` (the end of the latest epoch, rewritten every
epoch, with the RNG state, so ``--ckpt_path .../last.ckpt`` continues exactly where training
stopped). ``rulstm fit`` refuses a folder that already holds checkpoints of an earlier run
(later stages would read them by accident): resume it with ``--ckpt_path``, replace it with
``--overwrite true``, or pick another ``--trainer.default_root_dir``.

Bad input ends the run with one line ``rulstm: error: ...`` and exit status 1 (2 for unusable
arguments); ``--debug`` or ``RULSTM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from epic_protocol.errors import UserError, cli_main
from rulstm.checkpoints import check_lightning_checkpoint, read_checkpoint
from rulstm.data.datamodule import AnticipationDataModule
from rulstm.lightning import AnticipationModule

log = logging.getLogger(__name__)

#: File names of the two checkpoints every stage writes.
BEST, LAST = "best", "last"


class RunFolderError(UserError, ValueError):
    """A stage would write into a folder that holds checkpoints of an earlier run."""


class CheckpointKindError(UserError, ValueError):
    """A checkpoint that does not belong to the model being trained or evaluated."""


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


# No ``offline`` here: WandbLogger(offline=True) would force offline even under
# WANDB_MODE=online. The mode comes from WANDB_MODE, which defaults to offline below.
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"project": "rulstm"},
}


def _scored_steps(datamodule: AnticipationDataModule) -> int:
    if datamodule.task == "anticipation":
        return datamodule.anticipation_steps
    return datamodule.steps  # early recognition: every observation is scored


def _module_default(name: str) -> Any:
    return inspect.signature(AnticipationModule.__init__).parameters[name].default


# Link target -> (what the data says, the value that means "not set by the config").
DERIVED: dict[str, tuple[Callable[[AnticipationDataModule], Any], Any]] = {
    "model.alpha": (lambda dm: dm.alpha, _module_default("alpha")),
    "model.task": (lambda dm: dm.task, _module_default("task")),
    "model.anticipation_steps": (_scored_steps, _module_default("anticipation_steps")),
    "model.net.init_args.num_classes": (lambda dm: dm.num_actions, None),
}


class RulstmCLI(LightningCLI):
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
        parser.add_argument(
            "--wandb-online",
            action="store_true",
            help="sync the W&B logger online (same as WANDB_MODE=online; default: offline)",
        )

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        parser: LightningArgumentParser = super()._prepare_subcommand_parser(
            klass, subcommand, **kwargs
        )
        if subcommand == "fit":
            parser.add_argument(
                "--overwrite",
                type=bool,
                default=False,
                help="Replace the checkpoints an earlier run left in the stage folder "
                "(default: refuse such a folder; --ckpt_path resumes it instead).",
            )
        return parser

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

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("wandb_online"):
            os.environ["WANDB_MODE"] = "online"
        # W&B must never block on a machine without network: offline unless asked otherwise.
        os.environ.setdefault("WANDB_MODE", "offline")
        self._keep_logs_with_the_run(config)
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

    @staticmethod
    def _keep_logs_with_the_run(config) -> None:
        """The W&B logger writes into the run folder (``trainer.default_root_dir``), not into
        the current directory: its offline run, and the ``config.yaml`` that LightningCLI saves
        in the first logger's ``save_dir``, stay with the stage's checkpoints instead of one
        stage overwriting the previous stage's config in the working directory."""
        root = config.get("trainer.default_root_dir")
        logger = config.get("trainer.logger")
        if not root or not hasattr(logger, "get"):
            return  # no run folder, or no logger / a list of loggers (configured explicitly)
        if str(logger.get("class_path", "")).rsplit(".", 1)[-1] != "WandbLogger":
            return
        init_args = logger.get("init_args")
        if init_args is not None and init_args.get("save_dir") in (None, "", "."):
            init_args["save_dir"] = str(root)

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
        self._setup_checkpoints()
        config = self.config[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path:
            check_resumable(ckpt_path, self.model)
        self._claim_run_folders(
            overwrite=bool(config.get("overwrite", False)), resuming=bool(ckpt_path)
        )

    def _checkpoint_dirs(self) -> None:
        # Stages chain through runs/<stage>/checkpoints/best.ckpt: keep checkpoints there
        # whatever the logger (Lightning would otherwise nest them in the logger's run folder).
        for callback in self.trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) is None:
                callback.dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")

    def _setup_checkpoints(self) -> None:
        """``best.ckpt`` and ``last.ckpt`` in ``<default_root_dir>/checkpoints``."""
        self._checkpoint_dirs()
        default_dir = os.path.join(self.trainer.default_root_dir, "checkpoints")
        callbacks = self.trainer.checkpoint_callbacks
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.save_last:
                # Lightning rewrites this one only on a new best: the every-epoch one owns it.
                callback.save_last = False
        has_last = any(
            isinstance(c, ModelCheckpoint) and c.monitor is None and c.filename == LAST
            for c in callbacks
        )
        if not has_last and self.trainer.max_epochs != 0:
            self.trainer.callbacks.append(last_checkpoint(default_dir))

    def _claim_run_folders(self, *, overwrite: bool, resuming: bool) -> None:
        """Refuse (or, with ``overwrite``, empty) checkpoint folders of an earlier run."""
        if not self.trainer.is_global_zero:
            return  # rank 0 decided before the other processes were launched
        folders = sorted(
            {
                Path(c.dirpath)
                for c in self.trainer.checkpoint_callbacks
                if getattr(c, "dirpath", None)
            }
        )
        for folder in folders:
            stale = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
            if not stale or resuming:
                continue
            if not overwrite:
                names = ", ".join(p.name for p in stale[:4]) + (" ..." if len(stale) > 4 else "")
                raise RunFolderError(
                    f"{folder} already holds checkpoints of an earlier run ({names}); pass "
                    "--overwrite true to replace them, --ckpt_path "
                    f"{folder / (LAST + '.ckpt')} to resume, or another "
                    "--trainer.default_root_dir"
                )
            for path in stale:
                path.unlink()
            log.info("removed %d checkpoint(s) of an earlier run from %s", len(stale), folder)

    def before_validate(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()

    def before_test(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()

    def before_predict(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()

    def _resolve_ckpt_path(self) -> None:
        """``--ckpt_path best|last`` -> the checkpoint file (see :func:`resolve_ckpt_path`)."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") in ("best", "last"):
            self._checkpoint_dirs()
            config["ckpt_path"] = resolve_ckpt_path(config["ckpt_path"], self.trainer)
            # The same checks as a file given by name (see _parse_ckpt_path).
            path = config["ckpt_path"]
            check_lightning_checkpoint(path, read_checkpoint(path))

    def _check_shapes(self) -> None:
        """Fail before training if the net does not fit the data (classes, feature dims), or
        an evaluation callback times its steps with another alpha than the data."""
        check_compatibility(self.model, self.datamodule)
        for callback in self.trainer.callbacks:
            alpha = getattr(callback, "alpha", None)
            if isinstance(alpha, float) and abs(alpha - self.datamodule.alpha) > 1e-9:
                raise ValueError(
                    f"trainer.callbacks {type(callback).__name__}.alpha is {alpha} but "
                    f"data.alpha is {self.datamodule.alpha}; set init_args.alpha to match"
                )


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
        raise FileNotFoundError(
            f"--ckpt_path {which}: the config has no ModelCheckpoint callback with a fixed "
            f"file name (the stage configs with base.yaml have one); {hint}"
        )
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
        raise FileNotFoundError(
            f"--ckpt_path {which}: no checkpoint at {path} (run `rulstm fit` with the same "
            f"config and trainer.default_root_dir first, or pass the checkpoint file)"
        )
    return str(path)


def check_compatibility(model: AnticipationModule, datamodule: AnticipationDataModule) -> None:
    """Fail with one line naming both values when the model and the data disagree: the
    sampling protocol (alpha, task, scored steps), the classes, or a modality's feature size."""
    hparams = model.hparams
    for name, have, want in (
        ("alpha", hparams.get("alpha"), datamodule.alpha),
        ("task", hparams.get("task"), datamodule.task),
        ("anticipation_steps", hparams.get("anticipation_steps"), _scored_steps(datamodule)),
    ):
        if have is not None and have != want:
            raise ValueError(
                f"model.{name} is {have!r} but the data gives {want!r} (set it once, under "
                f"data: alpha, task, anticipation_steps / early_recognition_steps)"
            )
    net = model.net
    num_classes = getattr(net, "num_classes", None)
    if num_classes is not None and num_classes != datamodule.num_actions:
        raise ValueError(
            f"the net predicts {num_classes} classes but the action vocabulary "
            f"({datamodule.actions_path or 'built from the training split'}) has "
            f"{datamodule.num_actions}; set num_classes to {datamodule.num_actions}"
        )
    expected = None
    if hasattr(net, "branches"):
        expected = {name: branch.feat_dim for name, branch in net.branches.items()}
    elif getattr(net, "feat_dim", None) is not None:
        modality = model.modality or next(iter(datamodule.feature_dims))
        expected = {modality: net.feat_dim}
    for modality, dim in (expected or {}).items():
        have = datamodule.feature_dims.get(modality)
        if have is None:
            raise KeyError(
                f"the net reads modality {modality!r} but data.features only has "
                f"{list(datamodule.feature_dims)}"
            )
        if have != dim:
            raise ValueError(
                f"{datamodule.feature_paths[modality]}: {modality} features are {have}-d but "
                f"the net expects {dim}-d"
            )


def check_resumable(path: str | os.PathLike, model: AnticipationModule) -> None:
    """Fail before training if ``--ckpt_path`` is not a training checkpoint of this model.

    Raises:
        FileNotFoundError: no such file.
        CheckpointKindError: not a Lightning training checkpoint (e.g. one written by
            ``rulstm-import checkpoint``), or its weights belong to another network.
    """
    if str(path) in {"last", "best", "hpc", "registry"}:
        return  # Lightning resolves these names itself
    try:
        checkpoint = read_checkpoint(path)  # weights_only: tensors and plain containers
    except ValueError as error:
        # Entries beyond plain data (a custom logger's hyperparameters...): Lightning loads
        # the file itself and reports what it finds.
        log.debug("not checking %s before resuming: %s", path, error)
        return
    if "state_dict" not in checkpoint or "optimizer_states" not in checkpoint:
        raise CheckpointKindError(
            f"{path} is not a training checkpoint of `rulstm fit` (no optimizer state): "
            "start from its weights with --model.init_checkpoint instead of --ckpt_path"
        )
    have = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if hasattr(v, "shape")}
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    resized = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or resized:
        details = "; ".join(
            f"{label} {names[:3]}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("other shapes", resized),
            )
            if names
        )
        raise CheckpointKindError(
            f"{path} is a checkpoint of another network than the configured "
            f"{type(model.net).__name__} ({details})"
        )


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


def build_cli(args: Sequence[str] | None = None, **kwargs) -> RulstmCLI:
    """Parse ``args`` (default: the command line) and run the subcommand, if any."""
    with warnings.catch_warnings():
        # Given args while sys.argv holds the same command (the console script, or the
        # quickstart's own options), LightningCLI warns; passing them is intended here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # A deprecation inside torch's pytree that Lightning triggers on every run.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        command = list(sys.argv[1:] if args is None else args)[:1]
        if command and command[0] in ("validate", "test", "predict"):
            # Evaluating a checkpoint needs none of the callbacks that wrote it.
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
        return RulstmCLI(
            AnticipationModule,
            AnticipationDataModule,
            args=None if args is None else list(args),
            trainer_defaults={"logger": DEFAULT_LOGGER},
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )


@cli_main("rulstm")
def main(args: Sequence[str] | None = None) -> None:
    # Argument errors raise (one line from cli_main) instead of printing the usage block.
    build_cli(args, parser_kwargs={"exit_on_error": False})


if __name__ == "__main__":
    raise SystemExit(main())
