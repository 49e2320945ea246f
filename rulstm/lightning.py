"""The LightningModule: losses, metrics and optimisers around a pure network.

One shared step serves training, validation and test. Metric names come from the one registry
(:mod:`rulstm.evaluation.names`): ``val/action/top5/1.00s``, ``val/action/recall5/1.00s``,
``train/loss`` ...
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from epic_protocol.backbones import CHECKPOINT_KEY as BACKBONES_KEY
from epic_protocol.backbones import backbone_of
from epic_protocol.errors import UsageError
from epic_protocol.sampling import HEADLINE_SECONDS, anticipation_step, anticipation_times
from rulstm.checkpoints import load_weights
from rulstm.data.datamodule import AnticipationBatch
from rulstm.evaluation.names import (
    check_monitors,
    fraction_key,
    metric_name,
    module_metric_names,
    time_key,
)
from rulstm.evaluation.ranking import uid_index
from rulstm.evaluation.records import evaluator_owns_test_metrics, report_partial
from rulstm.evaluation.split_metrics import SplitMetrics
from rulstm.losses import early_recognition_loss
from rulstm.models.spec import NET_KEY, describe_net
from rulstm.optimization import OPTIMIZATION_KEY, apply_configured, configured, describe

log = logging.getLogger(__name__)

Task = Literal["anticipation", "early_recognition"]
Ranking = Literal["none", "detection", "margin"]


#: Checkpoint entry holding the random number generators' states (see :func:`rng_states`).
RNG_KEY = "rulstm_rng_states"


def rng_states() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain numbers
    (loadable with ``torch.load(weights_only=True)``)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss],
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_states` saved (CUDA only on as many devices as saved)."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))


class AnticipationModule(L.LightningModule):
    """Trains and evaluates an anticipation network (RU-LSTM branch, MATT fusion, baselines).

    Args:
        net: the network. A single-branch net gets ``features[modality]`` (B, T, D); a net with
            a ``branches`` attribute (fusion) gets the whole ``features`` dict.
        modality: which feature key a single-branch net reads (default: the only one).
        task: ``anticipation`` (loss on the last ``anticipation_steps`` outputs) or
            ``early_recognition`` (loss on every observation, plus the ranking loss).
        sequence_completion: the sequence-completion pre-training mode of RU-LSTM.
        anticipation_steps, alpha: the protocol; outputs are at ``alpha*k`` s, k = S..1.
        ranking_loss, ranking_weight: early recognition only; weight 0 gives plain CE.
        init_checkpoint: initialise ``net`` from a checkpoint (e.g. the best sequence-completion
            checkpoint of the same branch). Lightning ``.ckpt`` files and raw state dicts work.
        branch_checkpoints: modality -> checkpoint of a trained branch, loaded into
            ``net.branches[modality]`` (MATT fusion starts from the branch bests). Not with
            ``init_checkpoint`` (UsageError): they would replace the branches it holds.
        freeze_branches: train only the fusion attention.
        discarded: how validation/test metrics treat samples the reference discards: ``drop``
            them (EK55 reference) or score them as ``zeros`` (EK100 reference).
        optimizer / scheduler: any torch optimiser / LR scheduler; defaults to the reference
            SGD(lr=0.01, momentum=0.9) and no scheduler.
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        modality: str | None = None,
        task: Task = "anticipation",
        sequence_completion: bool = False,
        anticipation_steps: int = 8,
        alpha: float = 0.25,
        ranking_loss: Ranking = "none",
        ranking_weight: float = 0.0,
        init_checkpoint: str | None = None,
        branch_checkpoints: dict[str, str] | None = None,
        freeze_branches: bool = False,
        discarded: Literal["drop", "zeros"] = "drop",
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.modality = modality
        self.task = task
        self.sequence_completion = sequence_completion
        self.anticipation_steps = anticipation_steps
        self.ranking_loss, self.ranking_weight = ranking_loss, ranking_weight
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.is_fusion = hasattr(net, "branches")
        if task == "anticipation":
            self.output_times = anticipation_times(
                alpha=alpha, anticipation_steps=anticipation_steps
            )
            # Model selection reads 1 s before the action (-4 for the reference, -2 at 0.5 s).
            self.headline_index = anticipation_step(
                HEADLINE_SECONDS, alpha=alpha, anticipation_steps=anticipation_steps
            )
        else:
            # Early recognition: observed fraction of the action at each step.
            self.output_times = tuple(
                (i + 1) / anticipation_steps for i in range(anticipation_steps)
            )
            self.headline_index = -1
        # One metric per split; torchmetrics syncs their cat states across processes.
        self.val_metrics = SplitMetrics(discarded=discarded)
        self.test_metrics = SplitMetrics(discarded=discarded)
        if init_checkpoint and branch_checkpoints:
            # Loaded after it, the branch checkpoints would silently replace the branches of
            # the (fused) network the init checkpoint holds: e.g. `rulstm test` on fusion.yaml,
            # which names the branch bests, with --model.init_checkpoint of the fusion.
            raise UsageError(
                f"model.init_checkpoint ({init_checkpoint}) and model.branch_checkpoints "
                f"({', '.join(branch_checkpoints)}) are both given; the branch checkpoints would "
                "replace the branches it holds: give one (--model.branch_checkpoints null to "
                "keep the init checkpoint's)"
            )
        if init_checkpoint:
            load_weights(self.net, init_checkpoint)
        for modality_name, path in (branch_checkpoints or {}).items():
            if not self.is_fusion or modality_name not in self.net.branches:
                raise KeyError(
                    f"branch_checkpoints names {modality_name!r}, but the net has branches "
                    f"{list(getattr(self.net, 'branches', {}))}"
                )
            load_weights(self.net.branches[modality_name], path)
        if freeze_branches:
            if not self.is_fusion:
                raise ValueError("freeze_branches needs a fusion net")
            self.net.branches.requires_grad_(False)

    # ------------------------------------------------------------------ forward
    def _inputs(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor | dict:
        if self.is_fusion:
            return dict(features)
        modality = self.modality
        if modality is None:
            if len(features) != 1:
                raise KeyError(
                    f"the batch holds modalities {list(features)}; set model.modality to pick "
                    "the one this single-branch net reads"
                )
            modality = next(iter(features))
        if modality not in features:
            raise KeyError(f"modality {modality!r} is not in the batch ({list(features)})")
        return features[modality]

    def forward(
        self, features: Mapping[str, torch.Tensor], *, all_steps: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, S, C) for the scored steps (the last ``anticipation_steps``; every step
        with ``all_steps``) and, for MATT fusion, the modality weights (B, S, M)."""
        last_steps = None if all_steps else self.anticipation_steps
        kwargs: dict[str, Any] = {"last_steps": last_steps}
        if self.sequence_completion:
            kwargs["sequence_completion"] = True
        if self.is_fusion:
            logits, weights = self.net(self._inputs(features), return_weights=True, **kwargs)
            return logits, weights
        return self.net(self._inputs(features), **kwargs), None

    # ------------------------------------------------------------------ steps
    def _loss(
        self, logits: torch.Tensor, labels: torch.Tensor, *, per_sample: bool = False
    ) -> torch.Tensor:
        """The batch loss, or each sample's loss (B,) whose mean it is."""
        if self.task == "early_recognition":
            ranking = self.ranking_loss if self.ranking_weight > 0 else "none"
            return early_recognition_loss(
                logits,
                labels,
                ranking=ranking,
                weight=self.ranking_weight,
                reduction="none" if per_sample else "mean",
            )
        # (B, S, C) -> (B*S, C): every anticipation step predicts the same label.
        flat_logits = logits.reshape(-1, logits.shape[-1])
        flat_labels = labels[:, None].expand(-1, logits.shape[1]).reshape(-1)  # (B*S,)
        if not per_sample:
            return F.cross_entropy(flat_logits, flat_labels, ignore_index=-1)
        losses = F.cross_entropy(flat_logits, flat_labels, reduction="none")  # (B*S,)
        return losses.view(logits.shape[:2]).mean(dim=1)  # (B*S,) -> (B, S) -> (B,)

    def _split_metrics(self, stage: str) -> SplitMetrics | None:
        return {"val": self.val_metrics, "test": self.test_metrics}.get(stage)

    def _shared_step(self, batch: AnticipationBatch, stage: str) -> dict[str, Any]:
        logits, weights = self(batch["features"])
        # Under bf16-mixed precision the network's outputs are bf16; losses, metrics and the
        # attention weights logged below are computed in float32.
        logits = logits.float()
        weights = None if weights is None else weights.float()
        labels = batch["action"]
        batch_size = len(labels)
        out: dict[str, Any] = {"logits": logits, "weights": weights}
        # Discarded samples (valid=False) carry zero features; they never enter the loss.
        train_mask = batch["valid"] & (labels >= 0)
        metrics = self._split_metrics(stage)
        if metrics is None:
            if train_mask.any():
                loss = self._loss(logits[train_mask], labels[train_mask])
                self.log(f"{stage}/loss", loss, batch_size=batch_size, prog_bar=True)
                out["loss"] = loss
            return out
        # Validation and test: per-segment records, each segment counted once (see
        # SplitMetrics); logged at the end of the epoch.
        losses = torch.full((batch_size,), float("nan"), device=logits.device)
        if train_mask.any():
            losses[train_mask] = self._loss(
                logits[train_mask], labels[train_mask], per_sample=True
            ).float()
        index = batch.get("index")
        metrics.update(
            logits,
            action=labels,
            verb=batch["verb"],
            noun=batch["noun"],
            valid=batch["valid"],
            index=uid_index(batch["uid"]) if index is None else index,
            losses=losses,
            weights=weights,
        )
        return out

    def training_step(self, batch: AnticipationBatch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")["loss"]

    def validation_step(self, batch: AnticipationBatch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: AnticipationBatch, batch_idx: int) -> dict[str, Any]:
        out = self._shared_step(batch, "test")
        return self._prediction_record(batch, out["logits"], out["weights"])

    def predict_step(self, batch: AnticipationBatch, batch_idx: int) -> dict[str, Any]:
        logits, weights = self(batch["features"])
        return self._prediction_record(batch, logits, weights)

    def _prediction_record(
        self, batch: AnticipationBatch, logits: torch.Tensor, weights: torch.Tensor | None
    ) -> dict[str, Any]:
        """What evaluation callbacks consume: scores of the scored steps, oldest first."""
        return {
            "scores": logits.detach().float().cpu(),  # (B, S, A)
            "weights": None if weights is None else weights.detach().float().cpu(),
            "valid": batch["valid"].cpu(),
            "action": batch["action"].cpu(),
            "verb": batch["verb"].cpu(),
            "noun": batch["noun"].cpu(),
            "uid": list(batch["uid"]),
        }

    # ------------------------------------------------------------------ metrics
    def metric_whens(self) -> list[str]:
        """The ``when`` of each scored step's name: ``1.00s`` (anticipation) or ``100.0%``
        (early recognition)."""
        if self.task == "anticipation":
            return [time_key(when) for when in self.output_times]
        return [fraction_key(when) for when in self.output_times]

    def logged_metric_names(self, stage: str) -> list[str]:
        """Every metric name this module logs for ``stage`` (``train``, ``val``, ``test``)."""
        if stage == "train":
            return [f"{stage}/loss"]
        modalities = list(self.net.branches) if self.is_fusion else []
        return module_metric_names(stage, whens=self.metric_whens(), modalities=modalities)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.check_monitors()

    def check_monitors(self) -> None:
        """A checkpoint or early-stopping ``monitor`` that names no logged metric stops the run
        at start (a :class:`UsageError` listing the valid names), not after the first epoch."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return
        valid = self.logged_metric_names("train") + self.logged_metric_names("val")
        check_monitors(trainer.callbacks, valid)

    def _owned_test_metrics(self) -> bool:
        """Whether a callback (the evaluator) logs the test metrics itself."""
        return evaluator_owns_test_metrics(getattr(self, "_trainer", None))

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()

    def _log_split(self, stage: str) -> None:
        metrics = self._split_metrics(stage)
        # compute() gathers every process's records (torchmetrics) and drops repeats, so
        # every process holds the same values; the max over processes returns them bit for
        # bit (a mean of three equal floats need not) and keeps Lightning from warning.
        # Python floats: Lightning puts them on the module's device, as NCCL needs.
        values = metrics.compute() if metrics.update_called else {}
        metrics.reset()
        log = functools.partial(self.log, sync_dist=True, reduce_fx="max")
        if "num_seen" in values:
            # Discarded segments went through too: a full split is not partial.
            report_partial(self.trainer, stage, int(values["num_seen"]))
        if "loss" in values:
            log(f"{stage}/loss", values["loss"].item())
        if "weights" in values:
            for name, weight in zip(self.net.branches, values["weights"].tolist()):
                log(f"{stage}/attention/{name}", weight)
        if stage == "test" and self._owned_test_metrics():
            # One name per metric: the evaluator logs the test metrics from its report.
            return
        for metric in ("top1", "top5", "recall5"):
            if metric not in values:
                continue
            per_step = values[metric].tolist()
            for when, value in zip(self.metric_whens(), per_step):
                log(metric_name(stage, "action", metric, when=when), value)
            log(
                metric_name(stage, "action", metric),
                per_step[self.headline_index],
                prog_bar=stage == "val" and metric == "top5",
            )

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_split("val")
        else:
            self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A .ckpt alone can then rebuild the network (online anticipator, demo).
        spec = describe_net(self.net)
        if spec is not None:
            checkpoint[NET_KEY] = spec
        # Resuming from last.ckpt then shuffles and drops out exactly as the uninterrupted run.
        checkpoint[RNG_KEY] = rng_states()
        # Resuming compares the configured optimiser / scheduler classes with these.
        trainer = self._trainer
        if trainer is not None:
            schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
            checkpoint[OPTIMIZATION_KEY] = describe(trainer.optimizers, schedulers)
        # The backbones of the training features: evaluation and the demo check theirs.
        stores = getattr(getattr(self._trainer, "datamodule", None), "stores", None)
        if isinstance(stores, dict):
            checkpoint[BACKBONES_KEY] = {
                modality: backbone_of(store.info.provenance) for modality, store in stores.items()
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RNG_KEY in checkpoint:
            set_rng_states(checkpoint[RNG_KEY])
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "fit" and "optimizer_states" in checkpoint:
            # Resuming: the configured hyper-parameters win over the saved ones (Lightning
            # restores the states from this dict after this hook).
            path = trainer.ckpt_path or "the checkpoint"
            optimizers, schedulers = configured(self)
            changes = apply_configured(checkpoint, optimizers, schedulers, path=path)
            if changes:
                rank_zero_warn(
                    f"resuming {path} with the configured hyper-parameters, not the "
                    f"checkpoint's: {'; '.join(map(str, changes))}"
                )

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        parameters = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9)
        else:
            optimizer = self.optimizer_factory(parameters)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
