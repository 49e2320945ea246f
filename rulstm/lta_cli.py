"""``rulstm fit|validate|test|predict`` for Ego4D long-term anticipation.

A config with ``task: ego4d_lta`` at its top (``configs/ego4d_lta/``) makes ``rulstm`` run this
CLI instead of the next-action one: :class:`~rulstm.lightning_lta.LTAModule` over
:class:`~rulstm.data.lta.LTADataModule`. The network's ``num_verbs``/``num_nouns`` come from the
taxonomy, ``feat_dim`` from the feature file and ``num_future_actions`` from ``data`` (a config
that sets them must agree).

What the next-action CLI does around a stage holds here too, through the same code: the run
folder (``--overwrite``, ``last.ckpt``, loggers in the stage folder:
:class:`rulstm.run_folder.RunFolderPolicy`), ``--trainer.precision auto``
(:mod:`rulstm.trainer_precision`), ``--ckpt_path`` (:class:`rulstm.ckpt_path.TrustedCkptPath`)
and checkpoint selection from the protocol: the best checkpoint monitors
:class:`~rulstm.evaluation.lta_protocol.Ego4DLTAProtocol`'s ``val/verb/ED@Z`` with ``mode: min``
unless the config sets a ``monitor`` (:mod:`rulstm.selection`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningCLI

from epic_protocol.ego4d_lta import NUM_FUTURE_ACTIONS
from rulstm.ckpt_path import TrustedCkptPath
from rulstm.data.lta import LTADataModule
from rulstm.evaluation.callbacks import RunConfigSaver
from rulstm.evaluation.lta_protocol import Ego4DLTAProtocol
from rulstm.lightning_lta import LTAModule
from rulstm.run_folder import RunFolderPolicy, config_filename, keep_logs_with_the_run
from rulstm.selection import MonitorChoice, WrittenConfig, select_by_protocol
from rulstm.trainer_precision import accept_auto_precision, resolve_precision

TASK = "ego4d_lta"

#: net argument <- datamodule attribute
DERIVED: dict[str, str] = {
    "num_verbs": "num_verbs",
    "num_nouns": "num_nouns",
    "feat_dim": "feat_dim",
    "num_future_actions": "num_future_actions",
}


def _config_files(args: Sequence[str]) -> list[str]:
    files: list[str] = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def is_lta_command(args: Sequence[str]) -> bool:
    """True when the command line asks for ``--task ego4d_lta`` or a ``--config`` file says
    ``task: ego4d_lta`` (unreadable files are left to the CLI to report)."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg == f"--task={TASK}" or (arg == "--task" and args[i + 1 : i + 2] == [TASK]):
            return True
    for name in _config_files(args):
        try:
            data = yaml.safe_load(Path(name).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("task") == TASK:
            return True
    return False


class LTACLI(WrittenConfig, RunFolderPolicy, TrustedCkptPath, LightningCLI):
    """``--ckpt_path`` (a file, ``best`` or ``last``) is checked as for the next-action CLI
    (:class:`rulstm.ckpt_path.TrustedCkptPath`) before jsonargparse sees its hyper-parameters."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--task", default=TASK, choices=[TASK], help="long-term anticipation (Ego4D FHO LTA)"
        )
        self._configured: dict[str, Any] = {}
        for target, attribute in DERIVED.items():

            def derive(datamodule: LTADataModule, target=target, attribute=attribute) -> Any:
                configured = self._configured.get(target)
                value = getattr(datamodule, attribute)
                if configured is not None and configured != value:
                    raise ValueError(
                        f"model.net.init_args.{target} is {configured} but the data give "
                        f"{value}: drop it from the config (it is read from the data)"
                    )
                return value

            derive.__name__ = "from_the_data"
            parser.link_arguments(
                "data", f"model.net.init_args.{target}", derive, apply_on="instantiate"
            )
        accept_auto_precision(parser)

    def before_fit(self) -> None:
        # Stages chain through <default_root_dir>/checkpoints/best.ckpt, whatever the logger
        # (Lightning would otherwise nest the checkpoints in the logger's run folder).
        self._checkpoint_dirs()
        self.claim_run_folder()

    def before_validate(self) -> None:
        self._resolve_ckpt_path()
        self.one_table()

    before_test = before_validate

    def before_predict(self) -> None:
        self._resolve_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._configured = {t: config.get(f"model.net.init_args.{t}") for t in DERIVED}
        keep_logs_with_the_run(config)
        resolve_precision(config)
        protocol = Ego4DLTAProtocol(
            num_future_actions=config.get("data.num_future_actions") or NUM_FUTURE_ACTIONS
        )
        choice = MonitorChoice(protocol.headline_metric("val"), protocol.mode)
        select_by_protocol(
            config.get("trainer.callbacks"), choice, written=self.written("trainer.callbacks")
        )


def build_lta_cli(args: Sequence[str] | None = None, **kwargs: Any) -> LTACLI:
    """Parse ``args`` (default: the command line) and run the subcommand, if any. The run's
    configuration is saved as the next-action CLI saves it
    (:class:`rulstm.evaluation.callbacks.RunConfigSaver`, :func:`rulstm.run_folder.config_filename`):
    next to the evaluator's report for ``rulstm test`` without a run folder."""
    arguments = list(sys.argv[1:] if args is None else args)
    return LTACLI(
        LTAModule,
        LTADataModule,
        args=None if args is None else list(args),
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True, "config_filename": config_filename(arguments[:1])},
        **kwargs,
    )
