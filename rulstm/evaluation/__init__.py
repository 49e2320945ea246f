"""EPIC-KITCHENS anticipation evaluation: outcomes, reports, protocols, plots, challenge files
and the Lightning callbacks that run them.

Two protocols, as in the reference implementation (RU-LSTM ``main.py validate``):

* ``ek55``: for verb, noun and action, top-1 accuracy, top-5 accuracy and class-mean top-5
  recall over the many-shot classes, at every anticipation time (2.0 ... 0.25 s). Samples
  the reference discards (no frame observable) are left out, as the reference does.
* ``ek100``: class-mean top-5 recall of verb, noun and action on all samples, on the
  unseen-participant samples and on the tail-class samples. Discarded samples are scored as
  all zeros, as the reference does.

Both also report Mean TtA(5) (see :func:`rulstm.metrics.time_to_action_from_ranks`).
Verb and noun scores are marginalised from the action scores
(:func:`rulstm.metrics.marginalize`). Accuracies and recalls are in percent, TtA in seconds.

Modules, imports running downwards only:

* :mod:`~rulstm.evaluation.records`: per-segment records, collected once across processes.
* :mod:`~rulstm.evaluation.outcomes`: action scores -> ranks of the true classes.
* :mod:`~rulstm.evaluation.classes`: class counts, many-shot / unseen / tail subsets.
* :mod:`~rulstm.evaluation.report`: :class:`AnticipationReport` (table, JSON, CSV).
* :mod:`~rulstm.evaluation.protocols`: :func:`evaluate_ek55`, :func:`evaluate_ek100`.
* :mod:`~rulstm.evaluation.plots`: :func:`plot_accuracy`.
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
from rulstm.evaluation.outcomes import TASKS, RankedOutcomes, rank_outcomes
from rulstm.evaluation.plots import plot_accuracy
from rulstm.evaluation.protocols import evaluate_ek55, evaluate_ek100
from rulstm.evaluation.records import SegmentRecords, gather_objects, gather_records
from rulstm.evaluation.report import (
    REPORT_KIND,
    AnticipationReport,
    MetricSeries,
    load_reports,
)
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

__all__ = [
    "CLASS_COUNTS",
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
