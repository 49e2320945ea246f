"""Evaluation protocols: one object per benchmark, and a small registry by name.

An :class:`EvaluationProtocol` owns everything a benchmark's evaluation decides: its class
counts and vocabulary, its class lists (many-shot, unseen, tail), its per-segment records and
metrics, the subsets it reports, the headline / checkpoint-selection metric with its mode
(``max`` for accuracy and recall, ``min`` for a distance), the report title and its challenge
file format (or none). :class:`~rulstm.evaluation.callbacks.AnticipationEvaluator` is a thin
Lightning callback that feeds a protocol the test outputs, gathers the records of every
process, and prints, logs and writes the protocol's report.

Registered protocols (``AnticipationEvaluator(protocol="egtea")`` in a config):

=========  ============================  ===========================  ==========  ==========
name       class                         reports                      selection   submission
=========  ============================  ===========================  ==========  ==========
ek55       :class:`EK55Protocol`         top1, top5, recall5_many_shot  top5 max  ek55
ek100      :class:`EK100Protocol`        recall5 overall/unseen/tail  recall5 max ek100
egtea      :class:`EGTEAProtocol`        top1, top5, recall5          top5 max    none
custom     :class:`CustomProtocol`       top1, top5, recall5          top5 max    none
ego4d_lta  ``Ego4DLTAProtocol``          ED@20, AUED per head         ED@20 min   outputs
=========  ============================  ===========================  ==========  ==========

The selection metric is also what the best checkpoint monitors when a training config sets no
``monitor`` (the config's top-level ``protocol:``; :mod:`rulstm.selection`).

**Adding a benchmark** (e.g. Ego4D long-term anticipation, scored by edit distance):

1. subclass :class:`EvaluationProtocol` in a module of its own, set the class attributes
   ``name``, ``title``, ``selection`` (``Selection(task, metric, subset, mode="min")`` for a
   distance) and ``submission`` (a format name, or ``None``);
2. implement :meth:`~EvaluationProtocol.records` (one test batch's outputs -> a
   :class:`~rulstm.evaluation.records.SegmentRecords` dataclass, gathered and de-duplicated by
   uid across processes by the callback) and :meth:`~EvaluationProtocol.evaluate` (all records
   -> a report object with the :class:`EvaluationReport` methods); override
   :meth:`~EvaluationProtocol.load_report` and :meth:`~EvaluationProtocol.plot` if its report
   is not an :class:`~rulstm.evaluation.report.AnticipationReport`;
3. decorate it with :func:`register_protocol` and import its module in
   ``rulstm/evaluation/__init__.py``; add its metric names to
   :data:`rulstm.evaluation.names.METRICS` (with their ``mode``) and its configs.

No other protocol changes. The next-action benchmarks share :class:`NextActionProtocol`
(ranks from :func:`~rulstm.evaluation.ranking.rank_segments`; a new one implements only
:meth:`NextActionProtocol.table`).
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from epic_protocol.annotations import ActionVocabulary, read_actions_csv
from epic_protocol.sampling import anticipation_times
from rulstm.evaluation.classes import (
    CLASS_COUNTS,
    EK100Subsets,
    ManyShotClasses,
    load_ek100_subsets,
    load_many_shot,
)
from rulstm.evaluation.names import METRICS, Mode, metric_name, time_key
from rulstm.evaluation.outcomes import RankedOutcomes, rank_outcomes
from rulstm.evaluation.plots import plot_accuracy
from rulstm.evaluation.records import SegmentRecords
from rulstm.evaluation.report import AnticipationReport, Discarded, load_reports
from rulstm.evaluation.tables import evaluate_ek55, evaluate_ek100
from rulstm.resources import resolve_path

P = TypeVar("P", bound="type[EvaluationProtocol]")


class EvaluationReport(Protocol):
    """What the evaluator needs of a protocol's report (duck-typed;
    :class:`~rulstm.evaluation.report.AnticipationReport` is one)."""

    name: str
    protocol: str
    partial: bool
    split_size: int | None
    num_samples: int
    checkpoint: str | None

    def table(self) -> str: ...

    def metrics(self, prefix: str = "test") -> dict[str, float]: ...

    def to_json(self, path: str | Path) -> Path: ...

    def to_csv(self, path: str | Path) -> Path: ...


@dataclass(frozen=True)
class Selection:
    """The headline and checkpoint-selection metric: ``task``/``metric``/``subset`` at
    ``time`` seconds (``None``: the metric has no time), better when ``mode`` (max or min)."""

    task: str
    metric: str
    subset: str = "overall"
    mode: Mode = "max"
    time: float | None = 1.0

    def name(self, stage: str = "val") -> str:
        """The logged name, e.g. ``val/action/top5/1.00s``."""
        when = None if self.time is None else time_key(self.time)
        return metric_name(stage, self.task, self.metric, self.subset, when)


class EvaluationProtocol(abc.ABC):
    """One benchmark's evaluation. Subclasses set the class attributes and implement
    :meth:`records` and :meth:`evaluate` (see the module doc for adding one).

    Lifecycle, driven by :class:`~rulstm.evaluation.callbacks.AnticipationEvaluator`:
    :meth:`setup` once the trainer's DataModule and model are known; :meth:`records` per test
    batch; :meth:`evaluate` once on the records of every process (concatenated, each uid
    once); then the callback prints ``report.table()``, logs ``report.metrics("test")`` and
    writes ``report.to_json``/``to_csv`` and :meth:`plot`.
    """

    #: Registry key, used by configs (``protocol: ek55``).
    name: ClassVar[str]
    #: The benchmark's name in report titles ("EPIC-KITCHENS-55").
    title: ClassVar[str]
    #: Headline and checkpoint-selection metric, with its mode.
    selection: ClassVar[Selection]
    #: Challenge file format (:data:`rulstm.evaluation.submission.FORMATS`), or ``None``.
    submission: ClassVar[str | None] = None
    #: Subsets the report breaks metrics down to (keys of ``names.SUBSETS``).
    subsets: ClassVar[tuple[str, ...]] = ("overall",)

    def __init__(self, *, dataset: str | None = None) -> None:
        #: The data set's name in titles, overriding :attr:`title`.
        self.dataset = dataset

    @property
    def display_name(self) -> str:
        return self.dataset or self.title

    def setup(self, *, vocabulary: ActionVocabulary | None, seconds_per_step: float) -> None:
        """Called once per run: the DataModule's vocabulary (``None`` without one) and the
        model's seconds between steps. The default keeps nothing."""
        return None

    @abc.abstractmethod
    def records(self, outputs: Mapping[str, Any]) -> SegmentRecords:
        """One test batch's ``test_step`` outputs -> per-segment records."""

    @abc.abstractmethod
    def evaluate(self, records: Any, *, name: str) -> EvaluationReport | None:
        """The report of every record (each segment once); ``None`` when there is nothing to
        evaluate (e.g. an unlabelled test split), after logging why."""

    def load_report(self, path: Path) -> EvaluationReport | None:
        """A report of this protocol written earlier (for combined plots), else ``None``."""
        reports = load_reports([path])
        report = next(iter(reports.values()), None)
        return report if report is not None and report.protocol == self.name else None

    def plot(self, reports: Mapping[str, Any], path: Path) -> Path | None:
        """A figure of one or several reports (one line each); ``None``: no figure."""
        return None

    def combined_plot_name(self) -> str:
        """File name of the plot of every report in the folder: ``accuracy_{name}.png``."""
        return f"accuracy_{self.name}.png"


PROTOCOLS: dict[str, type[EvaluationProtocol]] = {}


def register_protocol(cls: P) -> P:
    """Class decorator: make ``cls`` available by its ``name`` (:func:`make_protocol`)."""
    if not getattr(cls, "name", None) or cls.name in PROTOCOLS:
        raise ValueError(f"{cls.__name__}: a protocol needs a name of its own (got {cls.name!r})")
    if cls.selection.metric not in METRICS:
        raise ValueError(f"{cls.__name__}: selection metric {cls.selection.metric!r} unknown")
    PROTOCOLS[cls.name] = cls
    return cls


def make_protocol(name: str, **options: Any) -> EvaluationProtocol:
    """The protocol registered as ``name``, built with ``options`` (``None`` values left out).
    ``ValueError`` naming the valid names, or the options that protocol takes."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; registered: {sorted(PROTOCOLS)}")
    cls = PROTOCOLS[name]
    options = {key: value for key, value in options.items() if value is not None}
    accepted = {
        parameter.name
        for klass in cls.__mro__
        if "__init__" in vars(klass)
        for parameter in inspect.signature(klass.__init__).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"the {name} evaluation protocol takes no {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    return cls(**options)


def widened(vocabulary: ActionVocabulary, *, num_verbs: int, num_nouns: int) -> ActionVocabulary:
    """``vocabulary`` with at least ``num_verbs`` verbs and ``num_nouns`` nouns."""
    return ActionVocabulary(
        verbs=vocabulary.verbs,
        nouns=vocabulary.nouns,
        names=vocabulary.names,
        num_verbs=max(vocabulary.num_verbs, num_verbs),
        num_nouns=max(vocabulary.num_nouns, num_nouns),
    )


# --------------------------------------------------------------------------- next action


class NextActionProtocol(EvaluationProtocol):
    """Next-action anticipation: action scores at every anticipation time, verb and noun
    marginalised, scored by the rank of the true class (the ranking core).

    Args:
        actions: actions.csv. Default: the vocabulary of the trainer's DataModule (the one
            the model was trained on), else :attr:`default_actions`.
        num_verbs, num_nouns: label-space sizes (default: the benchmark's; at least the
            vocabulary's).
        discarded: ``drop`` or ``zeros`` for segments with no observable frame; ``auto``:
            the benchmark's reference choice.
        dataset: the data set's name in titles.
    """

    #: (verbs, nouns) of the benchmark's label space; ``None``: the vocabulary's.
    class_counts: ClassVar[tuple[int, int] | None] = None
    #: The shipped actions.csv, used without ``actions`` and a DataModule vocabulary.
    default_actions: ClassVar[str | None] = None
    default_discarded: ClassVar[Discarded] = "drop"

    def __init__(
        self,
        *,
        actions: str | None = None,
        num_verbs: int | None = None,
        num_nouns: int | None = None,
        discarded: Literal["auto", "drop", "zeros"] = "auto",
        dataset: str | None = None,
    ) -> None:
        super().__init__(dataset=dataset)
        if discarded not in ("auto", "drop", "zeros"):
            raise ValueError(f"discarded must be 'auto', 'drop' or 'zeros', got {discarded!r}")
        self.discarded: Discarded = self.default_discarded if discarded == "auto" else discarded
        self.actions = actions
        default_verbs, default_nouns = self.class_counts or (0, 0)
        self.num_verbs = num_verbs or default_verbs
        self.num_nouns = num_nouns or default_nouns
        self.seconds_per_step = 0.25
        self._vocabulary: ActionVocabulary | None = None

    @property
    def vocabulary(self) -> ActionVocabulary:
        if self._vocabulary is None:
            path = self.actions or self.default_actions
            if path is None:
                raise ValueError(
                    f"the {self.name} evaluation protocol needs actions (an actions.csv) when "
                    "the trainer has no DataModule with a vocabulary"
                )
            self._vocabulary = read_actions_csv(
                resolve_path(path),
                num_verbs=self.num_verbs or None,
                num_nouns=self.num_nouns or None,
            )
        return self._vocabulary

    def setup(self, *, vocabulary: ActionVocabulary | None, seconds_per_step: float) -> None:
        self.seconds_per_step = seconds_per_step
        if self.actions is None and vocabulary is not None:
            self._vocabulary = widened(
                vocabulary, num_verbs=self.num_verbs, num_nouns=self.num_nouns
            )

    def records(self, outputs: Mapping[str, Any]) -> RankedOutcomes:
        if not isinstance(outputs, Mapping) or "scores" not in outputs:
            raise TypeError(
                "AnticipationEvaluator needs test_step to return a dict with 'scores', "
                "'valid', 'verb', 'noun', 'action' and 'uid'; got "
                f"{type(outputs).__name__}"
            )
        missing = [k for k in ("valid", "verb", "noun", "action", "uid") if k not in outputs]
        if missing:
            raise KeyError(f"test_step output lacks {missing}")
        return rank_outcomes(
            outputs["scores"].detach(),
            vocabulary=self.vocabulary,
            verb=outputs["verb"],
            noun=outputs["noun"],
            action=outputs["action"],
            uids=list(outputs["uid"]),
            valid=outputs["valid"],
        )

    def evaluate(self, records: RankedOutcomes, *, name: str) -> AnticipationReport | None:
        labelled = records.labels["action"] >= 0
        if not labelled.any() and not (records.labels["verb"] >= 0).any():
            return None
        times = anticipation_times(
            alpha=self.seconds_per_step, anticipation_steps=records.num_steps
        )
        report = self.table(records, times=times, name=name)
        report.protocol = self.name
        report.dataset = self.display_name
        report.selection = (self.selection.task, self.selection.metric, self.selection.subset)
        return report

    @abc.abstractmethod
    def table(
        self, outcomes: RankedOutcomes, *, times: tuple[float, ...], name: str
    ) -> AnticipationReport:
        """The report of ranked outcomes at ``times``."""

    def plot(self, reports: Mapping[str, Any], path: Path) -> Path | None:
        return plot_accuracy(reports, path)


@register_protocol
class EK55Protocol(NextActionProtocol):
    """EPIC-KITCHENS-55: top-1/top-5 accuracy and class-mean top-5 recall over the many-shot
    classes (``recall5_many_shot``) for verb, noun and action; discarded segments dropped.

    Args (besides :class:`NextActionProtocol`'s):
        many_shot_verbs, many_shot_nouns, many_shot_actions: the class lists (default: the
            shipped EPIC lists).
        use_official_many_shot_actions: action recall over EPIC's 819 many-shot actions
            instead of the reference's "verb or noun many-shot" actions.
        class_lists: ``False``: recall over every class present (``recall5``).
    """

    name = "ek55"
    title = "EPIC-KITCHENS-55"
    selection = Selection("action", "top5")
    submission = "ek55"
    subsets = ("overall", "many_shot")
    class_counts = CLASS_COUNTS["ek55"]
    default_actions = "builtin:ek55/actions.csv"
    default_discarded = "drop"

    def __init__(
        self,
        *,
        many_shot_verbs: str | None = None,
        many_shot_nouns: str | None = None,
        many_shot_actions: str | None = None,
        use_official_many_shot_actions: bool = False,
        class_lists: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.many_shot_files = {
            "verbs_csv": many_shot_verbs or "builtin:ek55/EPIC_many_shot_verbs.csv",
            "nouns_csv": many_shot_nouns or "builtin:ek55/EPIC_many_shot_nouns.csv",
            "actions_csv": many_shot_actions or "builtin:ek55/epic/EPIC_many_shot_actions.csv",
        }
        self.use_official_many_shot_actions = use_official_many_shot_actions
        self.class_lists = class_lists

    def table(
        self, outcomes: RankedOutcomes, *, times: tuple[float, ...], name: str
    ) -> AnticipationReport:
        many_shot: ManyShotClasses | None = None
        if self.class_lists:
            many_shot = load_many_shot(
                self.vocabulary,
                **self.many_shot_files,
                official_actions=self.use_official_many_shot_actions,
            )
            if not self.use_official_many_shot_actions:
                # A pair outside the vocabulary is a many-shot action by the reference's rule
                # (verb or noun many-shot) too: a class of its own, never predicted.
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
        return evaluate_ek55(
            outcomes, many_shot=many_shot, times=times, discarded=self.discarded, name=name
        )


@register_protocol
class EK100Protocol(NextActionProtocol):
    """EPIC-KITCHENS-100: class-mean top-5 recall of verb, noun and action, overall, on
    unseen participants and on tail classes; discarded segments scored as zeros.

    Args (besides :class:`NextActionProtocol`'s):
        unseen_ids, tail_verb_ids, tail_noun_ids, tail_action_ids: subset id lists
            (default: the shipped RU-LSTM validation lists).
        class_lists: ``False``: no unseen/tail lists (those rows stay empty).
    """

    name = "ek100"
    title = "EPIC-KITCHENS-100"
    selection = Selection("action", "recall5")
    submission = "ek100"
    subsets = ("overall", "unseen", "tail")
    class_counts = CLASS_COUNTS["ek100"]
    default_actions = "builtin:ek100/actions.csv"
    default_discarded = "zeros"

    def __init__(
        self,
        *,
        unseen_ids: str | None = None,
        tail_verb_ids: str | None = None,
        tail_noun_ids: str | None = None,
        tail_action_ids: str | None = None,
        class_lists: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.subset_files = {
            "unseen_ids": unseen_ids or "builtin:ek100/validation_unseen_participants_ids.csv",
            "tail_verb_ids": tail_verb_ids or "builtin:ek100/validation_tail_verbs_ids.csv",
            "tail_noun_ids": tail_noun_ids or "builtin:ek100/validation_tail_nouns_ids.csv",
            "tail_action_ids": tail_action_ids or "builtin:ek100/validation_tail_actions_ids.csv",
        }
        self.class_lists = class_lists

    def table(
        self, outcomes: RankedOutcomes, *, times: tuple[float, ...], name: str
    ) -> AnticipationReport:
        if self.class_lists:
            subsets = load_ek100_subsets(**self.subset_files)
        else:
            no_ids: frozenset[str] = frozenset()
            subsets = EK100Subsets(
                unseen=no_ids, tail=dict.fromkeys(("verb", "noun", "action"), no_ids)
            )
        return evaluate_ek100(
            outcomes, subsets=subsets, times=times, discarded=self.discarded, name=name
        )


class _EveryClassProtocol(NextActionProtocol):
    """Top-1/top-5 accuracy and class-mean top-5 recall over every class present, for verb,
    noun and action; discarded segments dropped (the EK55 rules without class lists)."""

    selection = Selection("action", "top5")

    def table(
        self, outcomes: RankedOutcomes, *, times: tuple[float, ...], name: str
    ) -> AnticipationReport:
        return evaluate_ek55(
            outcomes, many_shot=None, times=times, discarded=self.discarded, name=name
        )


@register_protocol
class EGTEAProtocol(_EveryClassProtocol):
    """EGTEA Gaze+ (RU-LSTM's splits): 106 actions over 19 verbs and 51 nouns, no class lists,
    no challenge file."""

    name = "egtea"
    title = "EGTEA Gaze+"
    class_counts = (19, 51)
    default_actions = "builtin:egtea/actions.csv"


@register_protocol
class CustomProtocol(_EveryClassProtocol):
    """Your own data set: the label space of its vocabulary (``actions``, or the
    DataModule's), no class lists, no challenge file. Name it with ``dataset``; the combined
    plot is then ``accuracy_<dataset>.png``."""

    name = "custom"
    title = "Custom data set"

    def combined_plot_name(self) -> str:
        if not self.dataset:
            return super().combined_plot_name()
        slug = re.sub(r"[^a-z0-9-]+", "_", self.dataset.lower()).strip("_")
        return f"accuracy_{slug or self.name}.png"
