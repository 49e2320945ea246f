"""Lightning callbacks: evaluate ``trainer.test`` outputs, write challenge files from ``trainer.predict``."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from epic_protocol.annotations import ActionVocabulary, read_actions_csv
from epic_protocol.errors import UsageError
from epic_protocol.sampling import HEADLINE_SECONDS, anticipation_step
from rulstm.evaluation.protocol import (
    EvaluationProtocol,
    NextActionProtocol,
    make_protocol,
    widened,
)
from rulstm.evaluation.records import gather_records, is_partial
from rulstm.evaluation.submission import (
    ChallengeFormat,
    SubmissionError,
    SubmissionScores,
    SupervisionLevels,
    challenge_format,
    read_split_ids,
    submission_scores,
    write_submission,
)
from rulstm.resources import resolve_path

log = logging.getLogger(__name__)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def model_alpha(pl_module: L.LightningModule, alpha: float | None, owner: str) -> float:
    """``alpha`` for a callback: its own, else the model's (``hparams.alpha``), else 0.25;
    an error naming both when they disagree."""
    hparams = getattr(pl_module, "hparams", {}) or {}
    model = hparams.get("alpha") if hasattr(hparams, "get") else None
    if alpha is not None and model is not None and abs(float(model) - alpha) > 1e-9:
        raise ValueError(
            f"{owner}: alpha={alpha:g} but the model was trained with model.alpha={model:g}; "
            "leave the callback's alpha unset to use the model's"
        )
    if alpha is not None:
        return alpha
    return 0.25 if model is None else float(model)


class _StepTimes:
    """``seconds_per_step`` for callbacks whose ``alpha`` may be unset until ``setup``."""

    alpha: float | None

    @property
    def seconds_per_step(self) -> float:
        return 0.25 if self.alpha is None else self.alpha


def datamodule_vocabulary(
    trainer: L.Trainer, *, num_verbs: int, num_nouns: int
) -> ActionVocabulary | None:
    """The action vocabulary of the trainer's DataModule (the model's classes), with at least
    ``num_verbs`` verbs and ``num_nouns`` nouns; ``None`` without such a DataModule."""
    vocabulary = getattr(trainer.datamodule, "vocabulary", None)
    if not isinstance(vocabulary, ActionVocabulary):
        return None
    return widened(vocabulary, num_verbs=num_verbs, num_nouns=num_nouns)


class AnticipationEvaluator(_StepTimes, L.Callback):
    """A thin Lightning callback over an :class:`~rulstm.evaluation.protocol.EvaluationProtocol`:
    evaluate ``trainer.test`` outputs with it and write the results.

    For the next-action protocols the LightningModule's ``test_step`` returns ``{"scores":
    (B, S, A) action logits at the anticipation steps (oldest first), "valid": (B,) bool,
    "verb"/"noun"/"action": (B,) long (-1 unknown), "uid": list[str]}``. At the end of the
    test epoch the protocol's records of all processes are gathered (each uid once), the
    table is printed, ``{name}.json``, ``{name}.csv`` and ``{name}.png`` are written to
    ``out_dir`` (by process 0), the protocol's combined plot (``accuracy_{protocol}.png``)
    shows every report found in ``out_dir`` (e.g. rgb, flow, obj and fusion) together, and
    the values are logged under the registry's names (:mod:`rulstm.evaluation.names`,
    ``test/action/top5/1.00s``): the same names and values as the JSON and CSV files. The
    LightningModule then logs only ``test/loss`` and the fusion weights. With ``protocol:
    ego4d_lta`` (``configs/ego4d_lta/test.yaml``), ``test_step`` returns K sampled sequences
    and the labels per window (:class:`rulstm.lightning_lta.LTAModule`); the report holds ED@Z
    and AUED per head under the logged names (``test/verb/ED@20``), ``{name}.png`` plots ED
    against z and the combined plot is ``ed_ego4d_lta.png``.

    Args:
        protocol: a registered protocol's name (``ek55``, ``ek100``, ``egtea``, ``custom``,
            ``ego4d_lta``), built with the protocol options below, or a protocol object.
        out_dir: output folder.
        name: report name, used in file names and plot legends. Default: the checkpoint's
            stage folder (``runs/mydata/fusion/checkpoints/best.ckpt`` -> ``fusion``), else
            the model's modality (``fusion`` for a fusion net), else ``model``.
        alpha: seconds between time steps (anticipation times are ``alpha * S ... alpha``);
            default the model's ``alpha`` (0.25 without one). The headline and challenge
            JSON time, 1.0 s, is found from it (the 4th step from the end at 0.25 s, the
            2nd at 0.5 s).
        write_json: also write the scores at 1 s in the protocol's challenge JSON format
            (``{name}_challenge.json``, like the reference's ``validate_json``).
        sls: supervision levels (pt, tl, td) written in that JSON (EK100).
        log_prefix: prefix of the logged names.
        overwrite: replace a report of the same name that another checkpoint wrote, and let a
            partial run (``fast_dev_run``, ``limit_test_batches``) replace a full report.
            Without it the partial report goes to ``{name}.partial.{json,csv,png}``, and a
            report of another checkpoint stops the run before testing. A partial run never
            writes the challenge JSON.
        dataset, actions, num_verbs, num_nouns, discarded: options of every next-action
            protocol (:class:`~rulstm.evaluation.protocol.NextActionProtocol`).
        many_shot_verbs, many_shot_nouns, many_shot_actions, use_official_many_shot_actions:
            ``ek55`` options; unseen_ids, tail_verb_ids, tail_noun_ids, tail_action_ids:
            ``ek100`` options; class_lists: both (``false``: no class lists). A protocol
            given an option it does not take stops with the list of those it takes.

    A report always says how many segments of the split it covers ("N of M segments"),
    ``"partial": true`` (JSON) and "PARTIAL" (table title) when it is not the whole split,
    and how many segments have a (verb, noun) pair outside the vocabulary (scored as action
    misses), with the first uids.
    """

    #: The LightningModule leaves the test metrics to this callback (one name per metric).
    owns_test_metrics = True

    def __init__(
        self,
        *,
        protocol: str | EvaluationProtocol,
        out_dir: str = "evaluation",
        name: str | None = None,
        alpha: float | None = None,
        write_json: bool = False,
        sls: tuple[int, int, int] = (1, 4, 3),
        log_prefix: str = "test",
        overwrite: bool = False,
        dataset: str | None = None,
        actions: str | None = None,
        num_verbs: int | None = None,
        num_nouns: int | None = None,
        discarded: Literal["auto", "drop", "zeros"] | None = None,
        many_shot_verbs: str | None = None,
        many_shot_nouns: str | None = None,
        many_shot_actions: str | None = None,
        use_official_many_shot_actions: bool | None = None,
        class_lists: bool | None = None,
        unseen_ids: str | None = None,
        tail_verb_ids: str | None = None,
        tail_noun_ids: str | None = None,
        tail_action_ids: str | None = None,
    ) -> None:
        super().__init__()
        options = {
            "dataset": dataset,
            "actions": actions,
            "num_verbs": num_verbs,
            "num_nouns": num_nouns,
            "discarded": discarded,
            "many_shot_verbs": many_shot_verbs,
            "many_shot_nouns": many_shot_nouns,
            "many_shot_actions": many_shot_actions,
            "use_official_many_shot_actions": use_official_many_shot_actions,
            "class_lists": class_lists,
            "unseen_ids": unseen_ids,
            "tail_verb_ids": tail_verb_ids,
            "tail_noun_ids": tail_noun_ids,
            "tail_action_ids": tail_action_ids,
        }
        if isinstance(protocol, EvaluationProtocol):
            given = sorted(key for key, value in options.items() if value is not None)
            if given:
                raise ValueError(
                    f"AnticipationEvaluator: {', '.join(given)} belong to the protocol object"
                )
            self.protocol = protocol
        else:
            self.protocol = make_protocol(protocol, **options)
        if write_json and self.protocol.submission is None:
            raise ValueError(
                f"AnticipationEvaluator: the {self.protocol.name} protocol has no challenge "
                "file format (write_json needs one)"
            )
        self.out_dir = Path(out_dir)
        self.configured_name = name
        self.name = name or "model"
        self.configured_alpha = alpha
        # None: the model's, once set up (0.25 without a model).
        self.alpha: float | None = alpha
        self.write_json = write_json
        self.sls = tuple(sls)
        self.log_prefix = log_prefix
        self.overwrite = overwrite
        self.checkpoint: str | None = None
        self.report: Any = None
        self._parts: list[Any] = []
        self._json_parts: list[SubmissionScores] = []

    def logged_names(self) -> list[str]:
        """The names the last test logged from the report (``test/action/top5/1.00s`` ...):
        its table printed them; ``[]`` before a report."""
        return [] if self.report is None else list(self.report.metrics(self.log_prefix))

    @property
    def vocabulary(self) -> ActionVocabulary:
        """The next-action protocol's vocabulary."""
        return self.protocol.vocabulary  # type: ignore[attr-defined]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.alpha = model_alpha(pl_module, self.configured_alpha, "AnticipationEvaluator")
        vocabulary = getattr(trainer.datamodule, "vocabulary", None)
        self.protocol.setup(
            vocabulary=vocabulary if isinstance(vocabulary, ActionVocabulary) else None,
            seconds_per_step=self.seconds_per_step,
        )

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After setup: Lightning knows --ckpt_path only once it restores the checkpoint.
        self.checkpoint = evaluated_checkpoint(trainer, pl_module)
        if self.configured_name is None:
            self.name = default_report_name(pl_module, self.checkpoint)
        if trainer.is_global_zero:
            self._refuse_other_checkpoint()

    def _refuse_other_checkpoint(self) -> None:
        """Stop before testing when ``{name}.json`` in ``out_dir`` is a full report of another
        checkpoint (unless ``overwrite``)."""
        path = self.out_dir / f"{_safe_name(self.name)}.json"
        if self.overwrite or self.checkpoint is None or not path.is_file():
            return
        existing = self.protocol.load_report(path)
        other = getattr(existing, "checkpoint", None)
        if existing is None or existing.partial or other is None:
            return
        if Path(other).resolve() != Path(self.checkpoint).resolve():
            raise UsageError(
                f"{path} is the report of another checkpoint ({other}); name this one with "
                "--trainer.callbacks.init_args.name, or replace it with "
                "--trainer.callbacks.init_args.overwrite true"
            )

    # ---- accumulation

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts, self._json_parts, self.report = [], [], None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.add(outputs)

    def add(self, outputs: Mapping[str, Any]) -> None:
        """Accumulate one ``test_step`` output (usable without a Trainer)."""
        self._parts.append(self.protocol.records(outputs))
        if self.write_json:
            scores = outputs["scores"].detach()
            step = anticipation_step(
                HEADLINE_SECONDS, alpha=self.seconds_per_step, anticipation_steps=scores.shape[1]
            )
            self._json_parts.append(
                submission_scores(
                    scores[:, step],
                    vocabulary=self.vocabulary,
                    uids=list(outputs["uid"]),
                    valid=outputs["valid"],
                )
            )

    # ---- results

    def compute(self, records: Any) -> Any:
        """The protocol's report of gathered records (``None``: nothing to evaluate)."""
        if isinstance(self.protocol, NextActionProtocol):
            # Without a Trainer (setup not called): the callback's own alpha.
            self.protocol.seconds_per_step = self.seconds_per_step
        report = self.protocol.evaluate(records, name=self.name)
        if report is not None:
            report.checkpoint = self.checkpoint
        return report

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        records = gather_records(self._parts)
        if records is None:
            log.warning("AnticipationEvaluator: no test outputs to evaluate")
            return
        self.report = self.compute(records)
        if self.report is None:
            log.warning(
                "AnticipationEvaluator: the test split has no labels (challenge test set?): "
                "nothing to evaluate; use rulstm.evaluation.SubmissionWriter with predict"
            )
            return
        self.report.partial, self.report.split_size = is_partial(trainer, "test", len(records))
        if getattr(self.report, "num_outside_vocabulary", 0):
            log.warning(
                "AnticipationEvaluator: %d segments have a (verb, noun) pair outside the "
                "vocabulary, scored as action misses; first: %s",
                self.report.num_outside_vocabulary,
                ", ".join(self.report.outside_vocabulary_uids),
            )
        # Every process holds the same values: the (cheap) max over processes returns them
        # bit for bit but keeps Lightning from warning once per key under DDP.
        pl_module.log_dict(self.report.metrics(self.log_prefix), sync_dist=True, reduce_fx="max")
        json_scores = gather_records(self._json_parts) if self.write_json else None
        if trainer.is_global_zero:
            self.write(self.report)
            if json_scores is not None and self.report.partial:
                log.warning(
                    "AnticipationEvaluator: partial run (%d of %s segments): no challenge JSON "
                    "written",
                    len(records),
                    self.report.split_size or "?",
                )
            elif json_scores is not None:
                self._write_challenge_json(json_scores)

    def _report_stem(self, report: Any) -> str:
        """``{name}``, or ``{name}.partial`` for a partial report that would otherwise
        replace a full one (unless ``overwrite``)."""
        stem = _safe_name(report.name)
        if not report.partial or self.overwrite:
            return stem
        path = self.out_dir / f"{stem}.json"
        existing = self.protocol.load_report(path) if path.is_file() else None
        if existing is None or existing.partial:
            return stem
        log.warning(
            "AnticipationEvaluator: partial run (%d of %s segments): the full report %s is "
            "kept; writing %s.partial.* instead (overwrite=true replaces it)",
            report.num_samples,
            report.split_size or "?",
            path,
            stem,
        )
        return f"{stem}.partial"

    def write(self, report: Any) -> dict[str, Path]:
        """Print the table and write JSON, CSV and plots into ``out_dir``.

        The protocol's combined plot (``accuracy_{protocol}.png``) shows the full reports of
        the protocol in ``out_dir`` (and this one, when it is full)."""
        print(report.table(), flush=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stem = self._report_stem(report)
        written = {
            "json": report.to_json(self.out_dir / f"{stem}.json"),
            "csv": report.to_csv(self.out_dir / f"{stem}.csv"),
        }
        png = self.protocol.plot({report.name: report}, self.out_dir / f"{stem}.png")
        if png is not None:
            written["png"] = png
        reports = {}
        for path in sorted(self.out_dir.glob("*.json")):
            other = self.protocol.load_report(path)
            if other is not None and not other.partial:
                reports[other.name] = other
        if not report.partial:
            reports[report.name] = report
        if reports:
            combined = self.protocol.plot(
                reports, self.out_dir / self.protocol.combined_plot_name()
            )
            if combined is not None:
                written["combined_png"] = combined
        names = ", ".join(path.name for path in written.values())
        print(f"evaluation written to {self.out_dir}: {names}", flush=True)
        return written

    def _write_challenge_json(self, scores: SubmissionScores) -> Path:
        fmt = self.protocol.submission
        return write_submission(
            self.out_dir / f"{_safe_name(self.name)}_challenge.json",
            scores,
            vocabulary=self.vocabulary,
            protocol=fmt,  # type: ignore[arg-type]
            sls=SupervisionLevels(*self.sls) if challenge_format(fmt).needs_sls else None,
            expected_ids=scores.uids,
        )


def evaluated_checkpoint(trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
    """The checkpoint a test run evaluates: ``--ckpt_path`` (resolved), else the model's
    ``init_checkpoint``; ``None`` when neither is known."""
    path = getattr(trainer, "ckpt_path", None)
    if not path:
        hparams = getattr(pl_module, "hparams", {}) or {}
        path = hparams.get("init_checkpoint") if hasattr(hparams, "get") else None
    return str(path) if path else None


def default_report_name(pl_module: L.LightningModule, checkpoint: str | None) -> str:
    """A report name after the evaluated model: the checkpoint's stage folder
    (``runs/mydata/fusion/checkpoints/best.ckpt`` -> ``fusion``; a checkpoint outside a
    ``checkpoints`` folder gives its file stem), else ``fusion`` for a fusion net or the
    model's modality, else ``model``."""
    if checkpoint:
        path = Path(checkpoint)
        if path.parent.name == "checkpoints" and path.parent.parent.name:
            return _safe_name(path.parent.parent.name)
        return _safe_name(path.stem)
    if getattr(pl_module, "is_fusion", False):
        return "fusion"
    modality = getattr(pl_module, "modality", None)
    return _safe_name(modality) if modality else "model"


class SubmissionWriter(_StepTimes, L.Callback):
    """Write a challenge file from ``trainer.predict`` outputs.

    ``predict_step`` must return the same dict as ``test_step`` (``scores`` (B, S, A),
    ``valid``, ``uid``); the scores at 1 s before the action are written (the step found
    from ``alpha``: -4 at 0.25 s, -2 at 0.5 s). A partial run (``fast_dev_run``,
    ``limit_predict_batches``: fewer segments than the split) never writes the file.

    Args:
        protocol: ``"ek100"`` (one file for the test split) or ``"ek55"`` (run predict once
            per test split: ``seen.json`` for S1, ``unseen.json`` for S2).
        path: the JSON file to write.
        actions: actions.csv. Default: the vocabulary of the trainer's DataModule, else
            ``builtin:<protocol>/actions.csv``.
        expected_ids: the split (RU-LSTM or EPIC CSV, or an id list) whose ids the file must
            cover exactly; ``None`` skips that check.
        sls_pt, sls_tl, sls_td: EK100 supervision levels, 0..5 (required there).
        step_index: which anticipation step to submit (negative, from the last); default
            the step 1.0 s before the action, found from ``alpha``.
        alpha: seconds between steps; default the model's ``alpha`` (0.25 without one).
    """

    def __init__(
        self,
        *,
        protocol: ChallengeFormat,
        path: str,
        actions: str | None = None,
        expected_ids: str | None = None,
        sls_pt: int | None = None,
        sls_tl: int | None = None,
        sls_td: int | None = None,
        step_index: int | None = None,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        self.format = challenge_format(protocol)
        self.protocol: ChallengeFormat = protocol
        self.path = Path(path)
        self.actions = actions
        self.expected_ids = expected_ids
        levels = (sls_pt, sls_tl, sls_td)
        if any(level is not None for level in levels) or self.format.needs_sls:
            if any(level is None for level in levels):
                raise SubmissionError(
                    "sls", f"{protocol} submissions need sls_pt, sls_tl and sls_td (0..5)"
                )
            self.sls: SupervisionLevels | None = SupervisionLevels(*levels)
        else:
            self.sls = None
        self.step_index = step_index
        self.configured_alpha = alpha
        # None: the model's, once set up (0.25 without a model).
        self.alpha: float | None = alpha
        self._vocabulary: ActionVocabulary | None = None
        self._parts: list[SubmissionScores] = []
        self.written: Path | None = None

    @property
    def vocabulary(self) -> ActionVocabulary:
        if self._vocabulary is None:
            self._vocabulary = read_actions_csv(
                resolve_path(self.actions or f"builtin:{self.protocol}/actions.csv"),
                num_verbs=self.format.num_verbs,
                num_nouns=self.format.num_nouns,
            )
        return self._vocabulary

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.actions is None:
            self._vocabulary = datamodule_vocabulary(
                trainer, num_verbs=self.format.num_verbs, num_nouns=self.format.num_nouns
            )
        self.alpha = model_alpha(pl_module, self.configured_alpha, "SubmissionWriter")

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts, self.written = [], None

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.add(outputs)

    def add(self, outputs: Mapping[str, Any]) -> None:
        """Accumulate one ``predict_step`` output (usable without a Trainer)."""
        if not isinstance(outputs, Mapping) or not {"scores", "uid"} <= outputs.keys():
            raise TypeError(
                "SubmissionWriter needs predict_step to return a dict with 'scores', 'valid' "
                f"and 'uid'; got {type(outputs).__name__}"
            )
        scores = outputs["scores"]
        step = self.step_index
        if step is None:
            step = anticipation_step(
                HEADLINE_SECONDS, alpha=self.seconds_per_step, anticipation_steps=scores.shape[1]
            )
        self._parts.append(
            submission_scores(
                scores[:, step],
                vocabulary=self.vocabulary,
                uids=list(outputs["uid"]),
                valid=outputs.get("valid"),
            )
        )

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores = gather_records(self._parts)
        if scores is None:
            return
        partial, total = is_partial(trainer, "predict", len(scores))
        if partial:
            log.warning(
                "SubmissionWriter: partial run (%d of %s segments): no challenge file written "
                "to %s",
                len(scores),
                total or "?",
                self.path,
            )
            return
        if trainer.is_global_zero:
            self.written = self.write(scores)

    def write(self, scores: SubmissionScores) -> Path:
        expected = read_split_ids(self.expected_ids) if self.expected_ids else None
        path = write_submission(
            self.path,
            scores,
            vocabulary=self.vocabulary,
            protocol=self.protocol,
            sls=self.sls,
            expected_ids=expected,
        )
        print(f"challenge file written: {path} ({len(scores)} segments)", flush=True)
        return path


class RunConfigSaver(SaveConfigCallback):
    """LightningCLI's ``config.yaml``, kept with the run it describes.

    ``rulstm fit`` (and any run given ``--trainer.default_root_dir``) saves it in the run
    folder, as Lightning does. ``rulstm test`` without a ``default_root_dir`` would write
    ``config.yaml`` into the current folder and replace it on every run: it is saved next
    to the evaluator's report instead, as ``{out_dir}/{name}.config.yaml``.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._evaluator(trainer, stage) is None:
            super().setup(trainer, pl_module, stage)
        # Otherwise saved at on_test_start, once the evaluator knows its report's name.

    def _evaluator(self, trainer: L.Trainer, stage: str) -> AnticipationEvaluator | None:
        """The evaluator whose report the config goes next to (``None``: Lightning's rule)."""
        root_given = self.config.get("trainer.default_root_dir") is not None
        if self.already_saved or stage != "test" or root_given:
            return None
        return next((c for c in trainer.callbacks if isinstance(c, AnticipationEvaluator)), None)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluator = self._evaluator(trainer, "test")
        if evaluator is None:
            return
        if trainer.is_global_zero:
            path = evaluator.out_dir / f"{_safe_name(evaluator.name)}.config.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config, str(path), skip_none=False, overwrite=True, multifile=False
            )
            self.save_config(trainer, pl_module, "test")
        self.already_saved = True
