"""Training and evaluation of an Ego4D long-term anticipation forecaster (Lightning).

:class:`LTAModule` trains a network that maps observed features (B, T, D) to verb and noun
logits for Z future actions ((B, Z, V), (B, Z, N)), e.g.
:class:`rulstm.models.lta.RULSTMForecaster`, with cross-entropy per future step (verb + noun,
averaged over steps). Validation and test draw K sequences per window (sampled from each
step's softmax, the official ``generate``; argmax for K = 1), seeded per window id so that one
or several processes give the same sequences, and score ED@Z and AUED over all windows at
once (:mod:`rulstm.evaluation.lta`). Metrics are logged as ``<stage>/<head>/ED@<Z>`` and
``<stage>/<head>/AUED`` (head: verb, noun, and the project's own action); lower is better,
so checkpoint selection uses ``mode: min``. With
:class:`rulstm.evaluation.AnticipationEvaluator` (``protocol: ego4d_lta``, as in
``configs/ego4d_lta/test.yaml``) the evaluator logs the test metrics, under the same names, and
writes the report files (``{name}.json``, ``.csv``, ``.png``).

:class:`LTAOutputsWriter` (a callback for ``trainer.predict``) writes the challenge's
``outputs.json`` in the official layout.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from epic_protocol.ego4d_lta import NUM_FUTURE_ACTIONS
from rulstm.checkpoints import read_checkpoint
from rulstm.evaluation.lta import write_predictions
from rulstm.evaluation.lta_protocol import Ego4DLTAProtocol, LTARecords
from rulstm.evaluation.names import check_monitors
from rulstm.evaluation.records import evaluator_owns_test_metrics, gather_objects, gather_records
from rulstm.models.lta import sample_sequences


def window_seed(window_id: str, head: str, seed: int = 0) -> int:
    """A per-window, per-head seed (CRC-32 of ``"<seed>/<id>/<head>"``): the same in every
    process, batch and run."""
    return zlib.crc32(f"{seed}/{window_id}/{head}".encode())


class LTAModule(L.LightningModule):
    """Trains and evaluates a long-term anticipation network.

    Args:
        net: maps features (B, T, D) to ``(verb logits (B, Z, V), noun logits (B, Z, N))``.
        num_sequences: ``K`` sequences per window at validation, test and predict (official:
            5; 1 gives the argmax sequence).
        seed: mixed into every window's sampling seed.
        init_checkpoint: initialise ``net`` from a Lightning checkpoint of this module.
        optimizer / scheduler: any torch optimiser / LR scheduler (default Adam, lr 1e-3).
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        num_sequences: int = 5,
        seed: int = 0,
        init_checkpoint: str | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if num_sequences < 1:
            raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.num_sequences = num_sequences
        self.seed = seed
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self._collected: list[LTARecords] = []
        #: How validation and test are scored and named (``<stage>/<head>/ED@Z``, ``AUED``).
        self.protocol = Ego4DLTAProtocol(
            num_future_actions=getattr(net, "num_future_actions", NUM_FUTURE_ACTIONS),
            num_sequences=num_sequences,
        )
        if init_checkpoint:
            state = read_checkpoint(init_checkpoint)  # tensors and plain data; names the file
            weights = state.get("state_dict", state)
            prefix = "net."
            self.net.load_state_dict(
                {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(features)

    def generate(self, features: torch.Tensor, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """K sequences per window: verb and noun int64 (B, K, Z)."""
        verb_logits, noun_logits = self(features)
        return (
            sample_sequences(
                verb_logits, self.num_sequences, [window_seed(i, "verb", self.seed) for i in ids]
            ),
            sample_sequences(
                noun_logits, self.num_sequences, [window_seed(i, "noun", self.seed) for i in ids]
            ),
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        verb_logits, noun_logits = self(batch["features"])  # (B, Z, V), (B, Z, N)
        verb_loss = F.cross_entropy(verb_logits.flatten(0, 1), batch["verbs"].flatten())
        noun_loss = F.cross_entropy(noun_logits.flatten(0, 1), batch["nouns"].flatten())
        loss = verb_loss + noun_loss
        size = len(batch["features"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/verb_loss", verb_loss, batch_size=size)
        self.log("train/noun_loss", noun_loss, batch_size=size)
        return loss

    def _outputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """K sampled sequences of a batch with its labels: ``{"ids": B window ids, "verb" /
        "noun": int64 (B, K, Z), "verb_labels" / "noun_labels": int64 (B, Z)}`` (on the CPU),
        what :meth:`Ego4DLTAProtocol.records` takes."""
        verbs, nouns = self.generate(batch["features"], list(batch["id"]))
        return {
            "ids": list(batch["id"]),
            "verb": verbs.cpu(),
            "noun": nouns.cpu(),
            "verb_labels": batch["verbs"].cpu(),
            "noun_labels": batch["nouns"].cpu(),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collected.append(self.protocol.records(self._outputs(batch)))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The batch's sequences and labels (see :meth:`_outputs`), for an evaluation callback
        (:class:`rulstm.evaluation.AnticipationEvaluator` with ``protocol: ego4d_lta``, which
        then logs the test metrics and writes the report files); without one, this module
        scores and logs them at the end of the epoch under the same names."""
        outputs = self._outputs(batch)
        if not self._owned_test_metrics():
            self._collected.append(self.protocol.records(outputs))
        return outputs

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        verbs, nouns = self.generate(batch["features"], list(batch["id"]))
        return {"ids": list(batch["id"]), "verb": verbs.cpu(), "noun": nouns.cpu()}

    def on_validation_epoch_start(self) -> None:
        self._collected = []

    on_test_epoch_start = on_validation_epoch_start

    def logged_metric_names(self, stage: str) -> list[str]:
        """Every metric name this module logs for ``stage`` (``train``, ``val``, ``test``)."""
        if stage == "train":
            return ["train/loss", "train/verb_loss", "train/noun_loss"]
        return self.protocol.logged_names(stage)

    def setup(self, stage: str) -> None:
        trainer = getattr(self, "_trainer", None)
        if stage == "fit" and trainer is not None:
            # A monitor naming no logged metric, or with the wrong mode, stops the run now.
            valid = self.logged_metric_names("train") + self.logged_metric_names("val")
            check_monitors(trainer.callbacks, valid)

    def _log_scores(self, stage: str) -> dict[str, float]:
        records = gather_records(self._collected)  # every process's windows, each id once
        self._collected = []
        if records is None:
            return {}
        report = self.protocol.evaluate(records, name=stage)
        values = report.metrics(stage) if report is not None else {}
        # Every process computed the same values from the gathered windows.
        self.log_dict(values, sync_dist=False, rank_zero_only=False)
        return values

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_scores("val")
        else:
            self._collected = []

    def on_test_epoch_end(self) -> None:
        if not self._owned_test_metrics():
            self._log_scores("test")

    def _owned_test_metrics(self) -> bool:
        """Whether a callback (the evaluator) logs the test metrics itself."""
        return evaluator_owns_test_metrics(getattr(self, "_trainer", None))

    def configure_optimizers(self) -> Any:
        parameters = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.Adam(parameters, lr=1e-3)
        else:
            optimizer = self.optimizer_factory(parameters)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


class LTAOutputsWriter(L.Callback):
    """Writes ``trainer.predict``'s sequences as the challenge's ``outputs.json``::

        {"<clip_uid>_<action_idx>": {"verb": [[Z ints] x K], "noun": [[Z ints] x K]}}

    Args:
        out_file: where to write (the file is replaced atomically at the end of predict).
    """

    def __init__(self, *, out_file: str = "outputs.json") -> None:
        super().__init__()
        self.out_file = out_file
        self._parts: list[dict[str, Any]] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts = []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._parts.append(
            {
                "ids": outputs["ids"],
                "verb": outputs["verb"].numpy(),
                "noun": outputs["noun"].numpy(),
            }
        )

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parts = [part for rank in gather_objects(self._parts) for part in rank]
        self._parts = []
        if not trainer.is_global_zero or not parts:
            return
        ids = [i for part in parts for i in part["ids"]]
        _, first = np.unique(np.array(ids), return_index=True)
        order = np.sort(first)  # each window once (a distributed sampler pads with repeats)
        verbs = np.concatenate([part["verb"] for part in parts])[order]
        nouns = np.concatenate([part["noun"] for part in parts])[order]
        path = Path(self.out_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_predictions(path, [ids[i] for i in order], verbs, nouns)
        print(f"outputs.json: {len(order)} windows x K={verbs.shape[1]} -> {path}")
