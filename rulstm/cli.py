"""``rulstm fit|validate|test|predict -c CONFIG``: LightningCLI over the module and DataModule.

Configs are plain YAML under ``configs/``; every argument is typed by the constructors'
signatures (see ``rulstm fit --help``). W&B logs offline by default so nothing ever blocks on
the network; ``--trainer.logger`` switches to CSV or anything else.
"""

from __future__ import annotations

import os

from lightning.pytorch.cli import LightningCLI

from rulstm.data.datamodule import AnticipationDataModule
from rulstm.lightning import AnticipationModule

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"project": "rulstm", "offline": True},
}


class RulstmCLI(LightningCLI):
    def before_instantiate_classes(self) -> None:
        # W&B must never block on a machine without network: offline unless asked otherwise.
        os.environ.setdefault("WANDB_MODE", "offline")

    def before_fit(self) -> None:
        self._check_shapes()
        # Stages chain through runs/<stage>/checkpoints/best.ckpt: keep checkpoints there
        # whatever the logger (Lightning would otherwise nest them in the logger's run folder).
        for callback in self.trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) is None:
                callback.dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")

    def before_validate(self) -> None:
        self._check_shapes()

    def before_test(self) -> None:
        self._check_shapes()

    def before_predict(self) -> None:
        self._check_shapes()

    def _check_shapes(self) -> None:
        """Fail before training if the net does not fit the data (classes, feature dims)."""
        check_compatibility(self.model, self.datamodule)


def check_compatibility(model: AnticipationModule, datamodule: AnticipationDataModule) -> None:
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


def build_cli(args: list[str] | None = None, **kwargs) -> RulstmCLI:
    """Parse ``args`` (default: the command line) and run the subcommand, if any."""
    return RulstmCLI(
        AnticipationModule,
        AnticipationDataModule,
        args=args,
        trainer_defaults={"logger": DEFAULT_LOGGER},
        save_config_kwargs={"overwrite": True},
        **kwargs,
    )


def main(args: list[str] | None = None) -> None:
    build_cli(args)


if __name__ == "__main__":
    main()
