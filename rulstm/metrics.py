"""Compatibility alias: the metric functions live in :mod:`rulstm.evaluation.ranking` (the
ranking core) and the per-split state in :mod:`rulstm.evaluation.split_metrics`."""

from rulstm.evaluation.ranking import (
    NEVER_RANKED,
    PAIR_STRIDE,
    ArrayLike,
    accuracy_from_ranks,
    class_mean_from_counts,
    class_mean_recall_from_ranks,
    class_mean_topk_recall,
    marginalize,
    mean_time_to_action,
    mean_time_to_action_from_ranks,
    rank_segments,
    softmax,
    time_to_action_from_ranks,
    topk_accuracy,
    topk_hits_from_ranks,
    topk_hits_per_class,
    true_class_rank,
    uid_index,
)
from rulstm.evaluation.records import first_occurrences
from rulstm.evaluation.split_metrics import SplitMetrics

__all__ = [
    "NEVER_RANKED",
    "PAIR_STRIDE",
    "ArrayLike",
    "SplitMetrics",
    "accuracy_from_ranks",
    "class_mean_from_counts",
    "class_mean_recall_from_ranks",
    "class_mean_topk_recall",
    "first_occurrences",
    "marginalize",
    "mean_time_to_action",
    "mean_time_to_action_from_ranks",
    "rank_segments",
    "softmax",
    "time_to_action_from_ranks",
    "topk_accuracy",
    "topk_hits_from_ranks",
    "topk_hits_per_class",
    "true_class_rank",
    "uid_index",
]
