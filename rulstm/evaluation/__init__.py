"""Evaluation: the ranking core, the metric-name registry, the benchmarks' protocols, reports,
plots, challenge files and the Lightning callbacks that run them.

One :class:`~rulstm.evaluation.protocol.EvaluationProtocol` per benchmark (registered by
name: ``ek55``, ``ek100``, ``egtea``, ``custom``, ``ego4d_lta``):

* ``ek55``: for verb, noun and action, top-1 accuracy, top-5 accuracy and class-mean top-5
  recall over the many-shot classes, at every anticipation time (2.0 ... 0.25 s). Samples
  the reference discards (no frame observable) are left out, as the reference does.
* ``ek100``: class-mean top-5 recall of verb, noun and action on all samples, on the
  unseen-participant samples and on the tail-class samples. Discarded samples are scored as
  all zeros, as the reference does.
* ``egtea``, ``custom``: top-1/top-5 accuracy and class-mean top-5 recall over every class.
* ``ego4d_lta``: Ego4D long-term anticipation, ED@20 and AUED per head (lower is better;
  :mod:`~rulstm.evaluation.lta_protocol`).

All also report Mean TtA(5) (see :func:`rulstm.evaluation.ranking.time_to_action_from_ranks`).
Verb and noun scores are marginalised from the action scores
(:func:`rulstm.evaluation.ranking.marginalize`). Accuracies and recalls are in percent, TtA
in seconds. Metric names: :mod:`rulstm.evaluation.names`.

Modules, imports running downwards only (the core below the callbacks):

* :mod:`~rulstm.evaluation.names`: the registry of metric names.
* :mod:`~rulstm.evaluation.records`: per-segment records, collected and de-duplicated once.
* :mod:`~rulstm.evaluation.ranking`: the ranking core (ranks of the true classes, metrics).
* :mod:`~rulstm.evaluation.split_metrics`: the validation/test torchmetrics state.
* :mod:`~rulstm.evaluation.outcomes`: action scores -> ranks of verb, noun and action.
* :mod:`~rulstm.evaluation.classes`: class counts, many-shot / unseen / tail subsets.
* :mod:`~rulstm.evaluation.report`: :class:`AnticipationReport` (table, JSON, CSV).
* :mod:`~rulstm.evaluation.tables`: :func:`evaluate_ek55`, :func:`evaluate_ek100`.
* :mod:`~rulstm.evaluation.plots`: :func:`plot_accuracy`.
* :mod:`~rulstm.evaluation.protocol`: :class:`EvaluationProtocol`, the registry and the
  EK55 / EK100 / EGTEA / custom protocols.
* :mod:`~rulstm.evaluation.submission`: challenge files (build, validate, write).
* :mod:`~rulstm.evaluation.callbacks`: :class:`AnticipationEvaluator` (``trainer.test``) and
  :class:`SubmissionWriter` (``trainer.predict``).
"""

from epic_protocol.sampling import HEADLINE_SECONDS, anticipation_step
from rulstm.evaluation.callbacks import (
    AnticipationEvaluator,
    SubmissionWriter,
    datamodule_vocabulary,
)
from rulstm.evaluation.classes import (
    CLASS_COUNTS,
    EK100Subsets,
    ManyShotClasses,
    load_ek100_subsets,
    load_many_shot,
)
from rulstm.evaluation.lta_protocol import Ego4DLTAProtocol, LTAReport
from rulstm.evaluation.names import METRICS, SUBSETS, metric_name
from rulstm.evaluation.outcomes import RankedOutcomes, rank_outcomes
from rulstm.evaluation.plots import plot_accuracy
from rulstm.evaluation.protocol import (
    PROTOCOLS,
    CustomProtocol,
    EGTEAProtocol,
    EK55Protocol,
    EK100Protocol,
    EvaluationProtocol,
    NextActionProtocol,
    Selection,
    make_protocol,
    register_protocol,
)
from rulstm.evaluation.ranking import TASKS
from rulstm.evaluation.records import SegmentRecords, gather_objects, gather_records
from rulstm.evaluation.report import (
    REPORT_KIND,
    AnticipationReport,
    MetricSeries,
    load_reports,
)
from rulstm.evaluation.split_metrics import SplitMetrics
from rulstm.evaluation.submission import (
    FORMATS,
    SubmissionError,
    SubmissionScores,
    SupervisionLevels,
    build_submission,
    read_split_ids,
    submission_scores,
    validate_entry,
    validate_submission,
    write_submission,
)
from rulstm.evaluation.tables import evaluate_ek55, evaluate_ek100

__all__ = [
    "CLASS_COUNTS",
    "METRICS",
    "PROTOCOLS",
    "SUBSETS",
    "CustomProtocol",
    "EGTEAProtocol",
    "Ego4DLTAProtocol",
    "LTAReport",
    "EK55Protocol",
    "EK100Protocol",
    "EvaluationProtocol",
    "NextActionProtocol",
    "Selection",
    "SplitMetrics",
    "make_protocol",
    "metric_name",
    "register_protocol",
    "FORMATS",
    "HEADLINE_SECONDS",
    "REPORT_KIND",
    "TASKS",
    "AnticipationEvaluator",
    "AnticipationReport",
    "anticipation_step",
    "EK100Subsets",
    "ManyShotClasses",
    "MetricSeries",
    "RankedOutcomes",
    "SegmentRecords",
    "SubmissionError",
    "SubmissionScores",
    "SubmissionWriter",
    "SupervisionLevels",
    "build_submission",
    "datamodule_vocabulary",
    "evaluate_ek55",
    "evaluate_ek100",
    "gather_objects",
    "gather_records",
    "load_ek100_subsets",
    "load_many_shot",
    "load_reports",
    "plot_accuracy",
    "rank_outcomes",
    "read_split_ids",
    "submission_scores",
    "validate_entry",
    "validate_submission",
    "write_submission",
]
