"""Metrics against hand-computed values and against a literal re-statement of the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rulstm.metrics import (
    accuracy_from_ranks,
    class_mean_from_counts,
    class_mean_recall_from_ranks,
    class_mean_topk_recall,
    marginalize,
    mean_time_to_action,
    softmax,
    time_to_action_from_ranks,
    topk_accuracy,
    topk_hits_per_class,
    true_class_rank,
)

# Four samples, four classes.
SCORES = np.array(
    [
        [0.1, 0.5, 0.3, 0.1],  # label 2: 0.5 and 0.3 are >= 0.3 -> rank 2
        [0.9, 0.0, 0.0, 0.1],  # label 0 -> rank 1
        [0.2, 0.2, 0.2, 0.4],  # label 1: all four >= 0.2 -> rank 4 (ties count against it)
        [0.0, 0.1, 0.2, 0.3],  # label 0 -> rank 4
    ],
    dtype=np.float32,
)
LABELS = np.array([2, 0, 1, 0])


def test_true_class_rank_by_hand():
    assert true_class_rank(SCORES, LABELS).tolist() == [2, 1, 4, 4]
    # torch input gives the same, and (N, S, C) gives (N, S)
    stacked = torch.from_numpy(np.stack([SCORES, SCORES[:, ::-1].copy()], axis=1))
    assert true_class_rank(stacked, torch.from_numpy(LABELS)).tolist() == [
        [2, 1],  # reversed row 0: [0.1, 0.3, 0.5, 0.1], class 2 on top
        [1, 2],  # reversed row 1: [0.1, 0.0, 0.0, 0.9], 0.9 beats class 0
        [4, 4],
        [4, 1],
    ]


def test_all_zero_scores_are_never_a_hit():
    ranks = true_class_rank(np.zeros((2, 10)), [0, 9])
    assert ranks.tolist() == [10, 10]
    assert float(accuracy_from_ranks(ranks, k=5)) == 0.0


def test_topk_accuracy_by_hand():
    assert float(topk_accuracy(SCORES, LABELS, k=1)) == pytest.approx(0.25)
    assert float(topk_accuracy(SCORES, LABELS, k=2)) == pytest.approx(0.5)
    assert float(topk_accuracy(SCORES, LABELS, k=3)) == pytest.approx(0.5)
    assert float(topk_accuracy(SCORES, LABELS, k=4)) == pytest.approx(1.0)


def test_class_mean_recall_by_hand():
    # k=2 hits: [1, 1, 0, 0]; class 0: samples 1 (hit), 3 (miss) -> 0.5; class 1 -> 0;
    # class 2 -> 1.  Mean over present classes: 0.5.
    assert float(class_mean_topk_recall(SCORES, LABELS, k=2)) == pytest.approx(0.5)
    # Restricted to {0, 2, 3}: class 3 does not occur, so the mean is over {0, 2}.
    recall = class_mean_topk_recall(SCORES, LABELS, k=2, classes={0, 2, 3})
    assert float(recall) == pytest.approx(0.75)
    assert math.isnan(float(class_mean_topk_recall(SCORES, LABELS, k=2, classes={3})))


def test_marginalize_by_hand_and_unused_class_is_zero():
    # Actions (verb, noun): (0, 1), (0, 0), (1, 1); verb 2 is used by no action.
    logits = np.log(np.array([[1.0, 2.0, 1.0]]))
    verbs = marginalize(logits, [0, 0, 1], num_classes=3)
    nouns = marginalize(logits, [1, 0, 1], num_classes=2)
    np.testing.assert_allclose(verbs.numpy(), [[0.75, 0.25, 0.0]], atol=1e-6)
    np.testing.assert_allclose(nouns.numpy(), [[0.5, 0.5]], atol=1e-6)
    # Works on (N, S, A) and sums to one.
    batch = torch.randn(2, 3, 3)
    marginal = marginalize(batch, torch.tensor([0, 0, 1]), num_classes=3)
    assert marginal.shape == (2, 3, 3)
    torch.testing.assert_close(marginal.sum(-1), torch.ones(2, 3))
    assert torch.all(marginal[..., 2] == 0)


def test_marginalize_rejects_bad_mapping():
    with pytest.raises(ValueError, match="3 actions"):
        marginalize(np.zeros((1, 3)), [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="outside 0..1"):
        marginalize(np.zeros((1, 2)), [0, 2], num_classes=2)


def test_time_to_action_by_hand():
    times = (2.0, 1.5, 1.0, 0.5)
    ranks = np.array(
        [
            [9, 3, 8, 1],  # first top-5 hit at 1.5 s (a later miss does not matter)
            [1, 1, 1, 1],  # 2.0 s
            [9, 9, 9, 9],  # never: 0
        ]
    )
    assert time_to_action_from_ranks(ranks, times=times, k=5).tolist() == [1.5, 2.0, 0.0]
    # Top-1 instead: only the last step of sample 0 hits.
    assert time_to_action_from_ranks(ranks, times=times, k=1).tolist() == [0.5, 2.0, 0.0]


def test_mean_time_to_action_from_scores():
    scores = np.zeros((2, 2, 3), dtype=np.float32)
    scores[0, 1, 2] = 1.0  # sample 0: true class 2 first on top at the second step
    scores[1, :, 0] = 1.0  # sample 1: true class 0 on top from the first step
    value = mean_time_to_action(scores, [2, 0], times=(0.5, 0.25), k=1)
    assert value == pytest.approx((0.25 + 0.5) / 2)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        true_class_rank(SCORES, [0, 1, 2, 4])
    with pytest.raises(ValueError, match="expected 4 labels"):
        true_class_rank(SCORES, [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        true_class_rank(np.full((1, 3), np.nan), [0])
    with pytest.raises(ValueError, match="k must be >= 1"):
        accuracy_from_ranks([1, 2], k=0)


def _reference_topk_recall(scores, labels, k, classes=None):
    """The reference's definition, re-stated: argsort ranking, mean of per-class top-k
    accuracy over the selected classes present in the labels."""
    present = np.unique(labels)
    classes = present if classes is None else np.intersect1d(classes, present)
    top = np.argsort(scores, axis=1)[:, ::-1][:, :k]
    hits = (top == labels[:, None]).any(axis=1)
    return np.mean([hits[labels == c].mean() for c in classes])


def _reference_tta(scores, labels, times):
    ranking = np.argsort(scores, axis=-1)[..., ::-1]
    in_top5 = (ranking[..., :5] == labels[:, None, None]).any(-1)  # (N, S)
    padded = np.concatenate([in_top5, np.ones((len(labels), 1), bool)], axis=1)
    return np.append(times, 0.0)[padded.argmax(1)].mean()


def test_agrees_with_reference_definitions_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(300, 4, 40)).astype(np.float32)  # no ties
    labels = rng.integers(0, 40, size=300)
    times = (1.0, 0.75, 0.5, 0.25)
    ranks = true_class_rank(scores, labels)
    for step in range(4):
        top = np.argsort(scores[:, step], axis=1)[:, ::-1]
        for k in (1, 5):
            expected = (top[:, :k] == labels[:, None]).any(1).mean()
            assert accuracy_from_ranks(ranks, k=k)[step] == pytest.approx(expected)
        subset = np.arange(0, 40, 3)
        assert class_mean_recall_from_ranks(ranks, labels, k=5, classes=subset)[
            step
        ] == pytest.approx(_reference_topk_recall(scores[:, step], labels, 5, subset))
    assert mean_time_to_action(scores, labels, times=times) == pytest.approx(
        _reference_tta(scores, labels, np.array(times))
    )


def test_streaming_class_counts_match_the_batch_metric():
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.normal(size=(50, 7)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 5, size=50))
    hits = torch.zeros(7)
    counts = torch.zeros(7)
    for rows in torch.split(torch.arange(50), 16):
        h, c = topk_hits_per_class(scores[rows], labels[rows], k=2, num_classes=7)
        hits += h
        counts += c
    assert counts.sum() == 50
    expected = float(class_mean_topk_recall(scores, labels, k=2))
    assert class_mean_from_counts(hits, counts) == pytest.approx(expected)
    assert math.isnan(class_mean_from_counts(torch.zeros(3), torch.zeros(3)))


def test_softmax_upcasts_half_precision():
    probabilities = softmax(torch.tensor([[100.0, 0.0]], dtype=torch.float16))
    assert probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(1))
