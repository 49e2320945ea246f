"""The LightningModule: losses, metrics and optimisers around a pure network.

One shared step serves training, validation and test. Metric names are slash-separated:
``val/action/top5/1.00s``, ``val/action/recall5/1.00s``, ``train/loss`` ...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from epic_protocol.sampling import anticipation_times
from rulstm.checkpoints import load_weights
from rulstm.data.datamodule import AnticipationBatch
from rulstm.losses import early_recognition_loss
from rulstm.metrics import accuracy_from_ranks, class_mean_recall_from_ranks, true_class_rank
from rulstm.models.spec import NET_KEY, describe_net

log = logging.getLogger(__name__)

Task = Literal["anticipation", "early_recognition"]
Ranking = Literal["none", "detection", "margin"]


def time_key(seconds: float) -> str:
    """``1.0 -> "1.00s"``: the suffix of per-anticipation-time metric names."""
    return f"{seconds:.2f}s"


class RankMeter:
    """Streaming top-1/top-5 accuracy and class-mean top-5 recall per scored step.

    Keeps only the rank of the true class per sample and step (never the (N, S, C) scores),
    so validation on EK55/EK100 (thousands of classes) stays light. Discarded samples
    (``valid=False``) are dropped (EK55 reference) or scored as all-zero scores, which never
    rank the true class in the top k (EK100 reference).
    """

    def __init__(self, *, discarded: Literal["drop", "zeros"] = "drop") -> None:
        self.discarded = discarded
        self.reset()

    def reset(self) -> None:
        self.ranks: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> None:
        keep = labels >= 0  # unknown labels (test split) cannot be scored
        if self.discarded == "drop":
            keep &= valid
        logits, labels, valid = logits[keep].detach(), labels[keep], valid[keep]
        ranks = torch.from_numpy(true_class_rank(logits.float(), labels))  # (B, S)
        ranks[~valid.cpu()] = logits.shape[-1]  # all-zero scores: the true class ranks last
        self.ranks.append(ranks)
        self.labels.append(labels.cpu())

    def compute(self) -> dict[str, torch.Tensor]:
        """``top1``, ``top5`` and ``recall5`` in percent, each of shape (S,)."""
        if not self.ranks or sum(len(r) for r in self.ranks) == 0:
            return {}
        ranks, labels = torch.cat(self.ranks).numpy(), torch.cat(self.labels).numpy()
        return {
            "top1": torch.as_tensor(accuracy_from_ranks(ranks, k=1) * 100),
            "top5": torch.as_tensor(accuracy_from_ranks(ranks, k=5) * 100),
            "recall5": torch.as_tensor(class_mean_recall_from_ranks(ranks, labels, k=5) * 100),
        }


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
            ``net.branches[modality]`` (MATT fusion starts from the branch bests).
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
            # Model selection reads 1 s before the action (index -4 for the reference).
            self.headline_index = len(self.output_times) - round(1.0 / alpha)
        else:
            # Early recognition: observed fraction of the action at each step.
            self.output_times = tuple(
                (i + 1) / anticipation_steps for i in range(anticipation_steps)
            )
            self.headline_index = anticipation_steps - 1
        self.meters = {
            "val": RankMeter(discarded=discarded),
            "test": RankMeter(discarded=discarded),
        }
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
    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.task == "early_recognition":
            ranking = self.ranking_loss if self.ranking_weight > 0 else "none"
            return early_recognition_loss(
                logits, labels, ranking=ranking, weight=self.ranking_weight
            )
        # (B, S, C) -> (B*S, C): every anticipation step predicts the same label.
        flat_logits = logits.reshape(-1, logits.shape[-1])
        flat_labels = labels[:, None].expand(-1, logits.shape[1]).reshape(-1)  # (B*S,)
        return F.cross_entropy(flat_logits, flat_labels, ignore_index=-1)

    def _shared_step(self, batch: AnticipationBatch, stage: str) -> dict[str, Any]:
        logits, weights = self(batch["features"])
        labels = batch["action"]
        batch_size = len(labels)
        out: dict[str, Any] = {"logits": logits, "weights": weights}
        # Discarded samples (valid=False) carry zero features; they never enter the loss.
        train_mask = batch["valid"] & (labels >= 0)
        if train_mask.any():
            loss = self._loss(logits[train_mask], labels[train_mask])
            self.log(
                f"{stage}/loss",
                loss,
                batch_size=batch_size,
                prog_bar=stage == "train",
                sync_dist=stage != "train",
            )
            out["loss"] = loss
        if stage in self.meters:
            self.meters[stage].update(logits, labels, batch["valid"])
        if weights is not None and stage != "train":
            for index, name in enumerate(self.net.branches):
                self.log(
                    f"{stage}/attention/{name}",
                    weights[..., index].mean(),
                    batch_size=batch_size,
                    sync_dist=True,
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
    def on_validation_epoch_start(self) -> None:
        self.meters["val"].reset()

    def on_test_epoch_start(self) -> None:
        self.meters["test"].reset()

    def _log_meter(self, stage: str) -> None:
        meter = self.meters[stage]
        if self.trainer.world_size > 1:
            # Each process holds its share of the split; gather the (small) rank records.
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, (meter.ranks, meter.labels))
            meter.ranks = [r for ranks, _ in gathered for r in ranks]
            meter.labels = [label for _, labels in gathered for label in labels]
        values = meter.compute()
        for metric, per_step in values.items():
            for when, value in zip(self.output_times, per_step.tolist()):
                suffix = time_key(when) if self.task == "anticipation" else f"{when:.1%}"
                self.log(f"{stage}/action/{metric}/{suffix}", value, rank_zero_only=True)
            self.log(
                f"{stage}/action/{metric}",
                per_step[self.headline_index].item(),
                rank_zero_only=True,
                prog_bar=stage == "val" and metric == "top5",
            )
        meter.reset()

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_meter("val")
        else:
            self.meters["val"].reset()

    def on_test_epoch_end(self) -> None:
        self._log_meter("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A .ckpt alone can then rebuild the network (online anticipator, demo).
        spec = describe_net(self.net)
        if spec is not None:
            checkpoint[NET_KEY] = spec

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
