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
before training with an error naming both values (:func:`check_compatibility`).

Checkpoints of a stage live in ``<default_root_dir>/checkpoints``: ``best.ckpt`` (the best
epoch by the monitored metric) and ``last.ckpt`` (the end of the latest epoch, rewritten every
epoch, with the RNG state, so ``--ckpt_path .../last.ckpt`` continues exactly where training
stopped). ``rulstm fit`` refuses a folder that already holds checkpoints of an earlier run
(later stages would read them by accident): resume it with ``--ckpt_path``, replace it with
``--overwrite true`` (which removes all of the earlier run: checkpoints, ``config.yaml``,
``wandb/`` and ``version_N/`` logs), or pick another ``--trainer.default_root_dir``.

``data.num_workers: auto`` (the default) starts ``min(4, usable CPU cores)`` loader workers.
Lightning warnings that ask nothing of the user are filtered (:data:`QUIET`), and with the
project's evaluator ``rulstm test`` prints its table, not Lightning's.

Bad input ends the run with one line ``rulstm: error: ...`` and exit status 1 (2 for unusable
arguments); ``--debug`` or ``RULSTM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from epic_protocol import precision
from epic_protocol.backbones import CHECKPOINT_KEY as BACKBONES_KEY
from epic_protocol.backbones import backbone_of, check_backbones
from epic_protocol.errors import DataError, cli_main
from rulstm.checkpoints import read_checkpoint
from rulstm.ckpt_path import LAST, TrustedCkptPath
from rulstm.data.datamodule import AnticipationDataModule
from rulstm.evaluation import AnticipationEvaluator, SubmissionWriter
from rulstm.evaluation.callbacks import RunConfigSaver
from rulstm.lightning import AnticipationModule
from rulstm.lta_cli import build_lta_cli, is_lta_command
from rulstm.optimization import compare as compare_optimization
from rulstm.optimization import configured as configured_optimization

log = logging.getLogger(__name__)


def _quiet_wandb(logger: WandbLogger) -> None:
    """No W&B warnings that ask nothing of the user: Lightning passes ``anonymous=None``,
    which W&B >= 0.19 reports as a deprecated setting on every run, and W&B looks for a git
    repository from its ``dir``, warning "git root ... does not exist" while the run folder
    is not created yet."""
    init = getattr(logger, "_wandb_init", None)  # the wandb.init() kwargs, used lazily
    if isinstance(init, dict) and "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]
    if logger.save_dir:
        os.makedirs(logger.save_dir, exist_ok=True)


class RunFolderError(DataError, ValueError):
    """A stage would write into a folder that holds checkpoints of an earlier run."""


class CheckpointKindError(DataError, ValueError):
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


def _accept_auto_precision(parser: LightningArgumentParser) -> None:
    """Let ``trainer.precision`` also take ``auto`` (resolved by :func:`_resolve_precision`
    before the Trainer is built: Lightning never sees it)."""
    for action in parser._actions:
        if getattr(action, "dest", None) == "trainer.precision" and hasattr(action, "_typehint"):
            action._typehint = action._typehint | Literal["auto"]
            action.help = (
                "'auto' (bf16-mixed where bf16 is native: a GPU with bf16, a CPU with AVX-512 "
                "BF16 or AMX; else 32-true), " + (action.help or "")
            )


def _trainer_device(accelerator: Any) -> str:
    """The device type a Trainer with ``accelerator`` runs on (``cpu`` unless it is a GPU)."""
    name = accelerator if isinstance(accelerator, str) else "cpu"
    if name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu" if name in ("auto", "cpu") else name


def _resolve_precision(config) -> None:
    """``trainer.precision: auto`` -> ``bf16-mixed`` or ``32-true`` by the precision rule
    (:mod:`epic_protocol.precision`), written back so the saved ``config.yaml`` records what
    ran; an explicit bf16 on a CPU without native bf16 warns once (emulated, much slower)."""
    value = config.get("trainer.precision")
    device = _trainer_device(config.get("trainer.accelerator", "auto"))
    if value == "auto":
        resolved = precision.auto_precision(device)
        config["trainer.precision"] = resolved
        log.info("precision auto -> %s (%s)", resolved, precision.cpu_description())
    elif isinstance(value, str) and value.startswith("bf16"):
        precision.warn_if_emulated(device, what=f"--trainer.precision {value}")


class RulstmCLI(TrustedCkptPath, LightningCLI):
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
        _accept_auto_precision(parser)
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
                help="Remove an earlier run from the stage folder first: its checkpoints, "
                "config.yaml, wandb/ and version_N/ logs (default: refuse a folder with "
                "checkpoints; --ckpt_path resumes it instead).",
            )
        return parser

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("wandb_online"):
            os.environ["WANDB_MODE"] = "online"
        # W&B must never block on a machine without network: offline unless asked otherwise.
        os.environ.setdefault("WANDB_MODE", "offline")
        self._keep_logs_with_the_run(config)
        _resolve_precision(config)
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
        """Every logger writes into the run folder (``trainer.default_root_dir``), not into the
        current directory: W&B's offline run, a CSV or TensorBoard logger's ``version_N``
        folders, and the ``config.yaml`` that LightningCLI saves in the first logger's folder
        stay with the stage's checkpoints. A logger's ``save_dir`` set to anything other than
        the current directory (``.``) is kept."""
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
            if init_args.get("save_dir") in (None, "", "."):
                init_args["save_dir"] = str(root)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                _quiet_wandb(logger)

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
            check_optimizer_unchanged(ckpt_path, self.model)
        self._claim_run_folders(
            overwrite=bool(config.get("overwrite", False)), resuming=bool(ckpt_path)
        )

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
        """Refuse checkpoint folders of an earlier run; with ``overwrite``, remove that run:
        its checkpoints and, in the stage folder, its ``config.yaml``, W&B runs and logger
        ``version_N`` folders (:meth:`_earlier_run`)."""
        if not self.trainer.is_global_zero:
            return  # rank 0 decided before the other processes were launched
        folders = sorted(
            {
                Path(c.dirpath)
                for c in self.trainer.checkpoint_callbacks
                if getattr(c, "dirpath", None)
            }
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
        stale += self._earlier_run()
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if stale:
            root = Path(self.trainer.default_root_dir).resolve()
            names = [
                str(p.resolve().relative_to(root)) if p.resolve().is_relative_to(root) else str(p)
                for p in stale
            ]
            print(f"--overwrite: removed the earlier run from {root}: {', '.join(names)}")

    def _earlier_run(self) -> list[Path]:
        """What an earlier run left in the stage folder besides checkpoints: the saved
        ``config.yaml``, W&B runs (``wandb/``) and CSV / TensorBoard ``version_N`` folders.
        Only inside an explicit ``--trainer.default_root_dir`` (never the current folder)."""
        if not self.config[self.subcommand].get("trainer.default_root_dir"):
            return []
        root = Path(self.trainer.default_root_dir).resolve()
        # What the default and the usual loggers leave, whichever logger this run uses.
        found = [root / "wandb", root / "lightning_logs"]
        found += sorted(root.glob("config*.yaml")) + sorted(root.glob("version_*"))
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                found.append(Path(logger.save_dir or root) / "wandb")
            elif getattr(logger, "root_dir", None):  # CSV, TensorBoard: root_dir/version_N
                found += sorted(Path(logger.root_dir).glob("version_*"))
        unique = dict.fromkeys(p.resolve() for p in found if p.exists() or p.is_symlink())
        return [p for p in unique if p.is_relative_to(root) and p != root]

    def before_validate(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()
        self._one_table()
        self._check_backbones()

    def before_test(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()
        self._one_table()
        self._check_backbones()

    def before_predict(self) -> None:
        self._check_shapes()
        self._resolve_ckpt_path()
        self._check_backbones()

    def _one_table(self) -> None:
        """With the project's evaluator (which prints its own table and where the reports
        went), Lightning's table of every logged metric (~100 lines) is not printed."""
        if any(isinstance(c, AnticipationEvaluator) for c in self.trainer.callbacks):
            self.config_init[self.subcommand]["verbose"] = False

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
        """Refuse features of another backbone than the checkpoint's (warn when either
        records none); see :mod:`epic_protocol.backbones`."""
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        trained = read_checkpoint(ckpt_path).get(BACKBONES_KEY)
        check_backbones(
            {m: backbone_of(s.info.provenance) for m, s in self.datamodule.stores.items()},
            trained,
            features_name="the feature files of data.features",
            checkpoint_name=str(ckpt_path),
        )

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


def check_optimizer_unchanged(path: str | os.PathLike, model: AnticipationModule) -> None:
    """Refuse, before anything is written, to resume ``path`` with another optimiser or
    scheduler class than it was trained with (:class:`rulstm.optimization.OptimizerChangeError`);
    other hyper-parameters of the same class are applied with a warning when Lightning
    restores the state (``AnticipationModule.on_load_checkpoint``)."""
    if str(path) in {"last", "best", "hpc", "registry"}:
        return
    try:
        checkpoint = read_checkpoint(path)
    except (OSError, ValueError) as error:
        log.debug("not comparing the optimizer of %s: %s", path, error)
        return  # check_resumable / Lightning report unreadable files
    optimizers, schedulers = configured_optimization(model)
    compare_optimization(checkpoint, optimizers, schedulers, path=path)


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


def config_filename(command: Sequence[str]) -> str:
    """The file the run's configuration is saved to: ``config.yaml`` for ``fit`` (what
    trained the stage's checkpoints), ``config_<subcommand>.yaml`` for ``validate``, ``test``
    and ``predict``, which often run in the stage folder and must not replace it."""
    if command and command[0] in ("validate", "test", "predict"):
        return f"config_{command[0]}.yaml"
    return "config.yaml"


#: Lightning warnings that ask nothing of the user here (one screen per stage):
QUIET = (
    # A small training split has fewer batches than log_every_n_steps: the logger then gets
    # no per-step train/loss (the validation metrics still come every epoch). docs/training.md says
    # to lower --trainer.log_every_n_steps for per-step curves on a small own dataset.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # rulstm fit refuses a folder with an earlier run's checkpoints (--overwrite,
    # --ckpt_path); when resuming the folder holds the run's own checkpoints by design.
    r"Checkpoint directory .* exists and is not empty",
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
        before = _active_wandb_run()
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
                _finish_wandb_run(before)


def _active_wandb_run() -> Any:
    wandb = sys.modules.get("wandb")  # never imported here when no W&B logger ran
    return getattr(wandb, "run", None)


def _finish_wandb_run(before: Any) -> None:
    """End the W&B run this command started. Lightning's WandbLogger leaves it open (the
    process exit ends it), so commands run in one process (scripts/train_egtea.py, the
    quickstart, tests) would otherwise all log into the first stage's run and folder."""
    run = _active_wandb_run()
    if run is not None and run is not before:
        run.finish()


@cli_main("rulstm")
def main(args: Sequence[str] | None = None) -> None:
    # Argument errors raise (one line from cli_main) instead of printing the usage block.
    build_cli(args, parser_kwargs={"exit_on_error": False})


if __name__ == "__main__":
    raise SystemExit(main())
