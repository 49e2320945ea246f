"""The rolling-unrolling forecaster of the next Z actions and its K-sequence sampling."""

from __future__ import annotations

import pytest
import torch

from rulstm.models.lta import LTABaseline, RULSTMForecaster, sample_sequences


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_shapes_and_one_unrolling_step_per_future_action(cell):
    torch.manual_seed(0)
    net = RULSTMForecaster(
        num_verbs=3, num_nouns=5, feat_dim=6, num_future_actions=4, hidden=8, dropout=0.0, cell=cell
    ).eval()
    x = torch.randn(2, 7, 6)
    verbs, nouns = net(x)
    assert verbs.shape == (2, 4, 3) and nouns.shape == (2, 4, 5)
    # The same computation written out: roll over x, unroll Z steps re-reading x[:, -1].
    _, state = net.rolling_lstm(x.transpose(0, 1))
    hidden, _ = net.unrolling_lstm(x[:, -1:].transpose(0, 1).expand(4, -1, -1), state)
    assert torch.allclose(verbs, net.verb_head(hidden.transpose(0, 1)), atol=1e-6)
    # past only: the output depends on the observed steps, and each step of the
    # forecast differs (the unrolling state moves on)
    assert not torch.allclose(verbs[:, 0], verbs[:, 1])
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(net(x2)[0], verbs)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="cell"):
        RULSTMForecaster(num_verbs=2, num_nouns=2, feat_dim=2, cell="rnn")
    with pytest.raises(ValueError, match="num_future_actions"):
        RULSTMForecaster(num_verbs=2, num_nouns=2, feat_dim=2, num_future_actions=0)
    net = RULSTMForecaster(num_verbs=2, num_nouns=2, feat_dim=3, hidden=4)
    with pytest.raises(ValueError, match=r"\(batch, steps >= 1, 3\)"):
        net(torch.zeros(2, 5, 4))


def test_k1_is_the_argmax():
    logits = torch.tensor([[[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]]])  # (1, Z=2, C=3)
    assert sample_sequences(logits, 1).tolist() == [[[1, 0]]]


def test_sampling_is_seeded_per_row_whatever_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 20, 7)
    seeds = [11, 22, 33, 44]
    together = sample_sequences(logits, 5, seeds)
    assert together.shape == (4, 5, 20)
    alone = torch.cat([sample_sequences(logits[i : i + 1], 5, [seeds[i]]) for i in range(4)])
    assert torch.equal(together, alone)
    assert torch.equal(sample_sequences(logits[[2, 0]], 5, [33, 11]), together[[2, 0]])
    assert not torch.equal(sample_sequences(logits, 5, [1, 2, 3, 4]), together)
    # samples follow the softmax: a near-certain class is always drawn
    sharp = torch.full((1, 3, 4), -30.0)
    sharp[0, :, 2] = 30.0
    assert sample_sequences(sharp, 5, [0]).unique().tolist() == [2]


@pytest.mark.parametrize("encoder", ["lstm", "tcn", "transformer", "probe"])
def test_baselines_with_an_lta_head(encoder):
    torch.manual_seed(0)
    args = {"heads": 2} if encoder == "transformer" else None
    net = LTABaseline(
        num_verbs=3, num_nouns=5, feat_dim=6, num_future_actions=4, encoder=encoder, hidden=8,
        dropout=0.0, encoder_args=args,
    ).eval()  # fmt: skip
    x = torch.randn(2, 7, 6)
    verbs, nouns = net(x)
    assert verbs.shape == (2, 4, 3) and nouns.shape == (2, 4, 5)
    # the head is the encoder's last-step output, split per future action
    flat = net.encoder(x)[:, -1].view(2, 4, 8)
    assert torch.allclose(verbs, flat[..., :3], atol=1e-6)
    assert torch.allclose(nouns, flat[..., 3:], atol=1e-6)
    # past only: changing the last observed step changes the forecast
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(net(x2)[0], verbs)
    with pytest.raises(ValueError, match="encoder"):
        LTABaseline(num_verbs=2, num_nouns=2, feat_dim=2, encoder="gru")
