"""Lightning callbacks: evaluate ``trainer.test`` outputs, write challenge files from ``trainer.predict``."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L

from epic_protocol.annotations import ActionVocabulary, read_actions_csv
from epic_protocol.sampling import HEADLINE_SECONDS, anticipation_step, anticipation_times
from rulstm.evaluation.classes import (
    CLASS_COUNTS,
    EK100Subsets,
    ManyShotClasses,
    load_ek100_subsets,
    load_many_shot,
)
from rulstm.evaluation.outcomes import RankedOutcomes, rank_outcomes
from rulstm.evaluation.plots import plot_accuracy
from rulstm.evaluation.protocols import Discarded, evaluate_ek55, evaluate_ek100
from rulstm.evaluation.records import gather_records, is_partial
from rulstm.evaluation.report import AnticipationReport, Protocol, load_reports
from rulstm.evaluation.submission import (
    SubmissionError,
    SubmissionScores,
    SupervisionLevels,
    _format,
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
    return ActionVocabulary(
        verbs=vocabulary.verbs,
        nouns=vocabulary.nouns,
        names=vocabulary.names,
        num_verbs=max(vocabulary.num_verbs, num_verbs),
        num_nouns=max(vocabulary.num_nouns, num_nouns),
    )


class AnticipationEvaluator(_StepTimes, L.Callback):
    """Evaluate ``trainer.test`` outputs with the EPIC protocol and write the results.

    The LightningModule's ``test_step`` must return ``{"scores": (B, S, A) action logits at
    the anticipation steps (oldest first), "valid": (B,) bool, "verb"/"noun"/"action": (B,)
    long (-1 unknown), "uid": list[str]}``. At the end of the test epoch the outcomes of all
    processes are gathered, the table is printed, ``{name}.json``, ``{name}.csv`` and
    ``{name}.png`` are written to ``out_dir`` (by process 0), ``accuracy_{protocol}.png``
    plots every report found in ``out_dir`` (e.g. rgb, flow, obj and fusion) together, and
    the values are logged as ``{log_prefix}/{task}/{metric}/{time}``.

    Args:
        protocol: ``"ek55"`` or ``"ek100"``.
        actions: actions.csv. Default: the vocabulary of the trainer's DataModule (the one the
            model was trained on), else ``builtin:<protocol>/actions.csv``.
        out_dir: output folder.
        name: report name (e.g. the modality), used in file names and plot legends.
        alpha: seconds between time steps (anticipation times are ``alpha * S ... alpha``);
            default the model's ``alpha`` (0.25 without one). The headline and challenge
            JSON time, 1.0 s, is found from it (the 4th step from the end at 0.25 s, the
            2nd at 0.5 s).
        num_verbs, num_nouns: label-space sizes (default: the dataset's, 125/352 or 97/300).
        many_shot_verbs, many_shot_nouns, many_shot_actions: EK55 class lists
            (default: the shipped EPIC lists).
        use_official_many_shot_actions: EK55 action recall over EPIC's 819 many-shot actions
            instead of the reference's "verb or noun many-shot" actions.
        class_lists: ``False`` ignores the many-shot lists (EK55: recall over every class
            present) and the unseen/tail lists (EK100: overall only), for datasets other than
            EPIC-KITCHENS such as the quickstart's.
        unseen_ids, tail_verb_ids, tail_noun_ids, tail_action_ids: EK100 subset id lists
            (default: the shipped RU-LSTM validation lists).
        discarded: ``"drop"`` or ``"zeros"`` for samples the reference discards; default the
            reference's choice (EK55 drop, EK100 zeros).
        write_json: also write the scores at 1 s in the challenge JSON format
            (``{name}_challenge.json``, like the reference's ``validate_json``).
        sls: supervision levels (pt, tl, td) written in that JSON (EK100).
        log_prefix: prefix of the logged names.
        dataset: the data set's name in table and plot titles (e.g. ``"EGTEA Gaze+"``);
            default the protocol's EPIC-KITCHENS edition.
        overwrite: let a partial run (``fast_dev_run``, ``limit_test_batches``) replace a
            full report of the same name in ``out_dir``. Without it the partial report goes
            to ``{name}.partial.{json,csv,png}``. A partial run never writes the challenge
            JSON.

    A report always says how many segments of the split it covers ("N of M segments"),
    ``"partial": true`` (JSON) and "PARTIAL" (table title) when it is not the whole split,
    and how many segments have a (verb, noun) pair outside the vocabulary (scored as action
    misses), with the first uids.
    """

    def __init__(
        self,
        *,
        protocol: Protocol,
        actions: str | None = None,
        out_dir: str = "evaluation",
        name: str = "model",
        alpha: float | None = None,
        num_verbs: int | None = None,
        num_nouns: int | None = None,
        many_shot_verbs: str | None = None,
        many_shot_nouns: str | None = None,
        many_shot_actions: str | None = None,
        use_official_many_shot_actions: bool = False,
        class_lists: bool = True,
        unseen_ids: str | None = None,
        tail_verb_ids: str | None = None,
        tail_noun_ids: str | None = None,
        tail_action_ids: str | None = None,
        discarded: Literal["auto", "drop", "zeros"] = "auto",
        write_json: bool = False,
        sls: tuple[int, int, int] = (1, 4, 3),
        log_prefix: str = "test",
        dataset: str | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__()
        if protocol not in CLASS_COUNTS:
            raise ValueError(f"protocol must be 'ek55' or 'ek100', got {protocol!r}")
        self.protocol: Protocol = protocol
        self.actions = actions
        self.class_lists = class_lists
        self.out_dir = Path(out_dir)
        self.name = name
        self.configured_alpha = alpha
        # None: the model's, once set up (0.25 without a model).
        self.alpha: float | None = alpha
        default_verbs, default_nouns = CLASS_COUNTS[protocol]
        self.num_verbs = num_verbs or default_verbs
        self.num_nouns = num_nouns or default_nouns
        self.many_shot_files = {
            "verbs_csv": many_shot_verbs or "builtin:ek55/EPIC_many_shot_verbs.csv",
            "nouns_csv": many_shot_nouns or "builtin:ek55/EPIC_many_shot_nouns.csv",
            "actions_csv": many_shot_actions or "builtin:ek55/epic/EPIC_many_shot_actions.csv",
        }
        self.use_official_many_shot_actions = use_official_many_shot_actions
        self.subset_files = {
            "unseen_ids": unseen_ids or "builtin:ek100/validation_unseen_participants_ids.csv",
            "tail_verb_ids": tail_verb_ids or "builtin:ek100/validation_tail_verbs_ids.csv",
            "tail_noun_ids": tail_noun_ids or "builtin:ek100/validation_tail_nouns_ids.csv",
            "tail_action_ids": tail_action_ids or "builtin:ek100/validation_tail_actions_ids.csv",
        }
        if discarded not in ("auto", "drop", "zeros"):
            raise ValueError(f"discarded must be 'auto', 'drop' or 'zeros', got {discarded!r}")
        self.discarded: Discarded = (
            ("drop" if protocol == "ek55" else "zeros") if discarded == "auto" else discarded
        )
        self.write_json = write_json
        self.sls = tuple(sls)
        self.log_prefix = log_prefix
        self.dataset = dataset
        self.overwrite = overwrite
        self.report: AnticipationReport | None = None
        self._vocabulary: ActionVocabulary | None = None
        self._parts: list[RankedOutcomes] = []
        self._json_parts: list[SubmissionScores] = []

    @property
    def vocabulary(self) -> ActionVocabulary:
        if self._vocabulary is None:
            self._vocabulary = read_actions_csv(
                resolve_path(self.actions or f"builtin:{self.protocol}/actions.csv"),
                num_verbs=self.num_verbs,
                num_nouns=self.num_nouns,
            )
        return self._vocabulary

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.actions is None:
            self._vocabulary = datamodule_vocabulary(
                trainer, num_verbs=self.num_verbs, num_nouns=self.num_nouns
            )
        self.alpha = model_alpha(pl_module, self.configured_alpha, "AnticipationEvaluator")

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
        if not isinstance(outputs, Mapping) or "scores" not in outputs:
            raise TypeError(
                "AnticipationEvaluator needs test_step to return a dict with 'scores', "
                "'valid', 'verb', 'noun', 'action' and 'uid'; got "
                f"{type(outputs).__name__}"
            )
        missing = [k for k in ("valid", "verb", "noun", "action", "uid") if k not in outputs]
        if missing:
            raise KeyError(f"test_step output lacks {missing}")
        scores = outputs["scores"].detach()
        self._parts.append(
            rank_outcomes(
                scores,
                vocabulary=self.vocabulary,
                verb=outputs["verb"],
                noun=outputs["noun"],
                action=outputs["action"],
                uids=list(outputs["uid"]),
                valid=outputs["valid"],
            )
        )
        if self.write_json:
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

    def compute(self, outcomes: RankedOutcomes) -> AnticipationReport:
        times = anticipation_times(
            alpha=self.seconds_per_step, anticipation_steps=outcomes.num_steps
        )
        if self.protocol == "ek55":
            if self.class_lists:
                many_shot = load_many_shot(
                    self.vocabulary,
                    **self.many_shot_files,
                    official_actions=self.use_official_many_shot_actions,
                )
                if not self.use_official_many_shot_actions:
                    # A pair outside the vocabulary is a many-shot action by the reference's
                    # rule (verb or noun many-shot) too: a class of its own, never predicted.
                    outside = outcomes.outside_vocabulary
                    extra = {
                        int(label)
                        for label, verb, noun in zip(
                            outcomes.labels["action"][outside],
                            outcomes.labels["verb"][outside],
                            outcomes.labels["noun"][outside],
                        )
                        if int(verb) in many_shot.verbs or int(noun) in many_shot.nouns
                    }
                    many_shot = dataclasses.replace(many_shot, actions=many_shot.actions | extra)
            else:
                v = self.vocabulary
                # Pairs outside the vocabulary are classes too (see RankedOutcomes).
                outside = outcomes.labels["action"][outcomes.outside_vocabulary]
                many_shot = ManyShotClasses(
                    verbs=frozenset(range(v.num_verbs)),
                    nouns=frozenset(range(v.num_nouns)),
                    actions=frozenset(range(v.num_actions)) | frozenset(outside.tolist()),
                    source="every class, class_lists=False",
                )
            return evaluate_ek55(
                outcomes, many_shot=many_shot, times=times, discarded=self.discarded, name=self.name
            )
        if self.class_lists:
            subsets = load_ek100_subsets(**self.subset_files)
        else:
            no_ids: frozenset[str] = frozenset()
            subsets = EK100Subsets(
                unseen=no_ids, tail=dict.fromkeys(("verb", "noun", "action"), no_ids)
            )
        return evaluate_ek100(
            outcomes, subsets=subsets, times=times, discarded=self.discarded, name=self.name
        )

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        outcomes = gather_records(self._parts)
        if outcomes is None:
            log.warning("AnticipationEvaluator: no test outputs to evaluate")
            return
        labelled = outcomes.labels["action"] >= 0
        if not labelled.any() and not (outcomes.labels["verb"] >= 0).any():
            log.warning(
                "AnticipationEvaluator: the test split has no labels (challenge test set?): "
                "nothing to evaluate; use rulstm.evaluation.SubmissionWriter with predict"
            )
            return
        self.report = self.compute(outcomes)
        self.report.dataset = self.dataset
        self.report.partial, self.report.split_size = is_partial(trainer, "test", len(outcomes))
        if self.report.num_outside_vocabulary:
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
                    len(outcomes),
                    self.report.split_size or "?",
                )
            elif json_scores is not None:
                self._write_challenge_json(json_scores)

    def _report_stem(self, report: AnticipationReport) -> str:
        """``{name}``, or ``{name}.partial`` for a partial report that would otherwise
        replace a full one (unless ``overwrite``)."""
        stem = _safe_name(report.name)
        if not report.partial or self.overwrite:
            return stem
        existing = (
            load_reports([self.out_dir / f"{stem}.json"])
            if (self.out_dir / f"{stem}.json").is_file()
            else {}
        )
        if not any(not other.partial for other in existing.values()):
            return stem
        log.warning(
            "AnticipationEvaluator: partial run (%d of %s segments): the full report %s is "
            "kept; writing %s.partial.* instead (overwrite=true replaces it)",
            report.num_samples,
            report.split_size or "?",
            self.out_dir / f"{stem}.json",
            stem,
        )
        return f"{stem}.partial"

    def write(self, report: AnticipationReport) -> dict[str, Path]:
        """Print the table and write JSON, CSV and plots into ``out_dir``.

        The combined plot ``accuracy_{protocol}.png`` shows the full reports in ``out_dir``
        (and this one, when it is full)."""
        print(report.table(), flush=True)
        stem = self._report_stem(report)
        written = {
            "json": report.to_json(self.out_dir / f"{stem}.json"),
            "csv": report.to_csv(self.out_dir / f"{stem}.csv"),
            "png": plot_accuracy({report.name: report}, self.out_dir / f"{stem}.png"),
        }
        reports = {
            name: other
            for name, other in load_reports(
                sorted(self.out_dir.glob("*.json")), include_partial=False
            ).items()
            if other.protocol == report.protocol
        }
        if not report.partial:
            reports[report.name] = report
        if reports:
            written["combined_png"] = plot_accuracy(
                reports, self.out_dir / f"accuracy_{report.protocol}.png"
            )
        names = ", ".join(path.name for path in written.values())
        print(f"evaluation written to {self.out_dir}: {names}", flush=True)
        return written

    def _write_challenge_json(self, scores: SubmissionScores) -> Path:
        return write_submission(
            self.out_dir / f"{_safe_name(self.name)}_challenge.json",
            scores,
            vocabulary=self.vocabulary,
            protocol=self.protocol,
            sls=SupervisionLevels(*self.sls) if self.protocol == "ek100" else None,
            expected_ids=scores.uids,
        )


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
        protocol: Protocol,
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
        self.format = _format(protocol)
        self.protocol: Protocol = protocol
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
