"""Early-recognition losses: cross-entropy plus the ranking losses of Ma et al. (CVPR 2016)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rulstm.losses import early_recognition_loss, ranking_loss, ranking_scores


def logits_from_probs(probs: list[list[list[float]]]) -> torch.Tensor:
    """Logits whose softmax is ``probs`` (B, T, C)."""
    return torch.tensor(probs).log()


def test_detection_and_margin_scores_by_hand():
    logits = logits_from_probs([[[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]])  # B=1, T=2, C=3
    labels = torch.tensor([0])
    torch.testing.assert_close(ranking_scores(logits, labels), torch.tensor([[0.2, 0.6]]))
    torch.testing.assert_close(
        ranking_scores(logits, labels, ranking="margin"), torch.tensor([[0.2 - 0.5, 0.6 - 0.3]])
    )


def test_ranking_loss_by_hand():
    # True-class probabilities over time: 0.5, 0.3, 0.4, 0.7
    # running max before t: 0.5, 0.5, 0.5 -> losses 0.2, 0.1, 0 -> mean 0.1
    probs = [[[p, 1 - p] for p in (0.5, 0.3, 0.4, 0.7)]]
    loss = ranking_loss(logits_from_probs(probs), torch.tensor([0]))
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    # Margins 2p - 1: 0, -0.4, -0.2, 0.4 -> losses 0.4, 0.2, 0 -> mean 0.2
    margin = ranking_loss(logits_from_probs(probs), torch.tensor([0]), ranking="margin")
    assert margin.item() == pytest.approx(0.2, abs=1e-6)


def test_margin_with_three_classes_by_hand():
    probs = [[[0.5, 0.4, 0.1], [0.4, 0.5, 0.1]]]  # margins 0.1 then -0.1 -> loss 0.2
    loss = ranking_loss(logits_from_probs(probs), torch.tensor([0]), ranking="margin")
    assert loss.item() == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize("ranking", ["detection", "margin"])
def test_zero_on_monotone_scores(ranking):
    # The true class becomes steadily more likely for every sample.
    steps = torch.linspace(0.0, 3.0, 6)  # (T,)
    logits = torch.zeros(4, 6, 5)
    labels = torch.tensor([0, 1, 2, 4])
    logits[torch.arange(4), :, labels] = steps
    assert ranking_loss(logits, labels, ranking=ranking).item() == 0.0


@pytest.mark.parametrize("ranking", ["detection", "margin"])
def test_positive_when_confidence_drops(ranking):
    logits = torch.zeros(2, 4, 5)
    labels = torch.tensor([1, 3])
    logits[torch.arange(2), :, labels] = torch.tensor([0.0, 2.0, 1.0, 3.0])
    assert ranking_loss(logits, labels, ranking=ranking).item() > 0.0


def test_early_recognition_loss_combines_cross_entropy_and_ranking():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 4, 6), torch.tensor([0, 5, 2])
    ce = F.cross_entropy(logits.permute(0, 2, 1), labels[:, None].expand(3, 4))
    for none in ({"ranking": "none"}, {"weight": 0.0}):
        torch.testing.assert_close(early_recognition_loss(logits, labels, **none), ce)
    expected = ce + 0.5 * ranking_loss(logits, labels, ranking="margin")
    torch.testing.assert_close(
        early_recognition_loss(logits, labels, ranking="margin", weight=0.5), expected
    )
    manual_ce = -torch.log_softmax(logits, -1).gather(-1, labels.view(3, 1, 1).expand(3, 4, 1))
    assert ce.item() == pytest.approx(manual_ce.mean().item(), abs=1e-6)


@pytest.mark.parametrize("ranking", ["detection", "margin"])
def test_gradients_flow_to_later_steps_only(ranking):
    """The running max is detached: the ranking loss raises later scores, never lowers
    earlier ones."""
    logits = torch.zeros(1, 3, 4)
    logits[0, :, 0] = torch.tensor([2.0, 0.0, 1.0])
    logits.requires_grad_(True)
    ranking_loss(logits, torch.tensor([0]), ranking=ranking).backward()
    grad = logits.grad[0]  # (T, C)
    assert torch.all(grad[0] == 0)
    assert grad[1, 0] < 0 and grad[2, 0] < 0  # descending the loss raises the true logit


def test_single_step_has_zero_ranking_loss_with_graph():
    logits = torch.randn(2, 1, 3, requires_grad=True)
    loss = early_recognition_loss(logits, torch.tensor([0, 2]))
    loss.backward()
    assert math.isfinite(loss.item()) and logits.grad is not None


def test_errors():
    with pytest.raises(ValueError, match="batch, time, classes"):
        early_recognition_loss(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        early_recognition_loss(torch.randn(2, 3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="ranking"):
        early_recognition_loss(torch.randn(2, 3, 4), torch.tensor([0, 1]), ranking="top5")
    with pytest.raises(ValueError, match="2 classes"):
        ranking_loss(torch.randn(2, 3, 1), torch.tensor([0, 0]), ranking="margin")
