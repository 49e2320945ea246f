"""SplitMetrics (the LightningModule's val/test metric) and the module's headline step."""

from __future__ import annotations

import pytest
import torch

from rulstm.lightning import AnticipationModule
from rulstm.metrics import SplitMetrics, first_occurrences, uid_index
from rulstm.models import RULSTM

NUM_CLASSES = 8


def logits_with_ranks(ranks: list[int], labels: list[int], steps: int = 2) -> torch.Tensor:
    """(N, S, C) logits where the true class has the given rank at every step."""
    logits = torch.zeros(len(ranks), steps, NUM_CLASSES)
    for i, (rank, label) in enumerate(zip(ranks, labels)):
        order = [c for c in range(NUM_CLASSES) if c != label]
        order.insert(rank - 1, label)  # best first
        for position, c in enumerate(order):
            logits[i, :, c] = float(NUM_CLASSES - position)
    return logits


def update(metric: SplitMetrics, rows: list[int], *, ranks, labels, verbs=None, valid=None):
    n = len(rows)
    metric.update(
        logits_with_ranks([ranks[r] for r in rows], [max(labels[r], 0) for r in rows]),
        action=torch.tensor([labels[r] for r in rows]),
        verb=torch.tensor([0 if verbs is None else verbs[r] for r in rows]),
        noun=torch.tensor([r for r in rows]),
        valid=torch.ones(n, dtype=torch.bool) if valid is None else torch.tensor(valid),
        index=torch.tensor(rows),
    )


def test_repeated_segments_count_once():
    # Five segments, two in the top 5: 40 %. A DistributedSampler on two processes pads the
    # split to six with a repeat of segment 0 (a miss): still 40 %, not 33.33 %.
    ranks, labels = [7, 1, 6, 2, 8], [0, 1, 2, 3, 4]
    once = SplitMetrics()
    update(once, [0, 1, 2, 3, 4], ranks=ranks, labels=labels)
    padded = SplitMetrics()
    update(padded, [0, 2, 4], ranks=ranks, labels=labels)  # "process 0"
    update(padded, [1, 3, 0], ranks=ranks, labels=labels)  # "process 1", padded with 0
    for metric in (once, padded):
        values = metric.compute()
        assert values["top5"].tolist() == pytest.approx([40.0, 40.0])
        assert values["top1"].tolist() == pytest.approx([20.0, 20.0])
        assert values["recall5"].tolist() == pytest.approx([40.0, 40.0])
        assert int(values["num_segments"]) == 5


def test_pairs_outside_the_vocabulary_are_misses_not_dropped():
    # Three known segments, all hits, and one labelled pair the vocabulary lacks (action -1):
    # 3 of 4 hits = 75 % (dropping it would report 100 %); recall over 4 classes = 75 %.
    metric = SplitMetrics()
    update(metric, [0, 1, 2, 3], ranks=[1, 2, 1, 1], labels=[0, 1, 2, -1], verbs=[0, 0, 0, 5])
    values = metric.compute()
    assert values["top5"].tolist() == pytest.approx([75.0, 75.0])
    assert values["recall5"].tolist() == pytest.approx([75.0, 75.0])
    # Even with fewer classes than k: 3 classes, so every known class is in the top 5, but the
    # unknown pair is still a miss (its rank is beyond every k).
    small = SplitMetrics()
    small.update(
        torch.randn(4, 2, 3),
        action=torch.tensor([0, 1, 2, -1]),
        verb=torch.tensor([0, 0, 0, 5]),
        noun=torch.tensor([0, 1, 2, 3]),
        valid=torch.ones(4, dtype=torch.bool),
        index=torch.arange(4),
    )
    values = small.compute()
    assert values["top5"].tolist() == pytest.approx([75.0, 75.0])
    assert values["recall5"].tolist() == pytest.approx([75.0, 75.0])
    # Unlabelled segments (verb and noun unknown, test splits) are not scored at all.
    unlabelled = SplitMetrics()
    unlabelled.update(
        logits_with_ranks([1, 1], [0, 0]),
        action=torch.tensor([0, -1]),
        verb=torch.tensor([0, -1]),
        noun=torch.tensor([0, -1]),
        valid=torch.tensor([True, True]),
        index=torch.tensor([0, 1]),
    )
    assert unlabelled.compute()["top5"].tolist() == [100.0, 100.0]


def test_discarded_segments_dropped_or_scored_as_zeros():
    ranks, labels = [1, 1], [0, 1]
    drop, zeros = SplitMetrics(discarded="drop"), SplitMetrics(discarded="zeros")
    for metric in (drop, zeros):
        update(metric, [0, 1], ranks=ranks, labels=labels, valid=[True, False])
    assert drop.compute()["top5"].tolist() == [100.0, 100.0]
    assert zeros.compute()["top5"].tolist() == [50.0, 50.0]


def test_loss_and_weights_are_means_over_distinct_segments():
    metric = SplitMetrics()
    logits = logits_with_ranks([1, 1, 1], [0, 1, 0])
    common = dict(
        action=torch.tensor([0, 1, 0]),
        verb=torch.tensor([0, 0, 0]),
        noun=torch.tensor([0, 1, 0]),
        valid=torch.ones(3, dtype=torch.bool),
    )
    weights = torch.tensor([[[1.0, 0.0]] * 2, [[0.0, 1.0]] * 2, [[1.0, 0.0]] * 2])  # (3, 2, 2)
    metric.update(
        logits,
        index=torch.tensor([0, 1, 0]),  # the third row repeats segment 0
        losses=torch.tensor([1.0, 3.0, 1.0]),
        weights=weights,
        **common,
    )
    values = metric.compute()
    assert float(values["loss"]) == pytest.approx(2.0)
    assert values["weights"].tolist() == pytest.approx([0.5, 0.5])


def test_uid_index_is_stable_and_first_occurrences():
    assert uid_index(["P01_01_0", "P01_01_0"]).tolist()[0] == uid_index(["P01_01_0"]).item()
    assert uid_index(["a"]).item() != uid_index(["b"]).item()
    assert uid_index(["a"]).item() >= 0
    assert first_occurrences(torch.tensor([3, 1, 3, 2, 1])).tolist() == [0, 1, 3]


def test_headline_step_follows_alpha():
    net = RULSTM(num_classes=4, feat_dim=3, hidden=4)
    reference = AnticipationModule(net=net, alpha=0.25, anticipation_steps=8)
    assert reference.headline_index == -4
    assert reference.output_times[reference.headline_index] == 1.0
    half = AnticipationModule(net=net, alpha=0.5, anticipation_steps=4)
    assert half.headline_index == -2
    assert half.output_times[half.headline_index] == 1.0
    with pytest.raises(ValueError, match="no output is 1 s before the action with alpha=0.3"):
        AnticipationModule(net=net, alpha=0.3, anticipation_steps=8)


def test_discarded_segments_are_seen_but_not_scored():
    # EK55 drops a segment with no observable frame: 4 scored, yet all 5 went through, so a
    # full split is not mistaken for a partial run.
    metric = SplitMetrics(discarded="drop")
    update(
        metric, [0, 1, 2, 3, 4], ranks=[1] * 5, labels=[0, 1, 2, 3, 4], valid=[False] + [True] * 4
    )
    values = metric.compute()
    assert (int(values["num_segments"]), int(values["num_seen"])) == (4, 5)
