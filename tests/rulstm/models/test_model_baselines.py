"""LSTM, TCN, Transformer and attentive-probe baselines: the RULSTM forward contract, causality, errors."""

from __future__ import annotations

import pytest
import torch

from rulstm.models import AttentiveProbe, LSTMBaseline, TCNBaseline, TransformerBaseline

B, T, D, H, C = 3, 5, 7, 6, 11


KINDS = ["lstm", "tcn", "transformer", "transformer_learned", "probe"]


def make(kind: str, **kwargs):
    torch.manual_seed(0)
    if kind.startswith("transformer"):
        positions = "learned" if kind.endswith("learned") else "sinusoidal"
        kwargs = {"heads": 2, "layers": 2, "positions": positions, "max_steps": 8, **kwargs}
    if kind == "probe":
        kwargs = {"heads": 2, **kwargs}
    cls = {"lstm": LSTMBaseline, "tcn": TCNBaseline, "probe": AttentiveProbe}.get(
        kind, TransformerBaseline
    )
    return cls(num_classes=C, feat_dim=D, hidden=H, **kwargs).eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, B])
def test_shapes_and_last_steps(kind, batch):
    model = make(kind)
    x = torch.randn(batch, T, D)
    with torch.no_grad():
        full = model(x)
        assert full.shape == (batch, T, C)
        torch.testing.assert_close(model(x, last_steps=2), full[:, -2:])


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_are_causal(kind):
    """Output t depends on x[:, :t+1] only: perturbing later steps leaves it unchanged."""
    model = make(kind, **({"levels": 3} if kind == "tcn" else {}))
    x = torch.randn(B, T, D)
    with torch.no_grad():
        base = model(x)
        for t in range(T - 1):
            changed = x.clone()
            changed[:, t + 1 :] = torch.randn(B, T - t - 1, D)
            out = model(changed)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_tcn_sees_its_whole_receptive_field():
    torch.manual_seed(0)
    # Wide enough that ReLUs do not cut every path (receptive field 1 + 2 * 1 * 3 = 7).
    model = TCNBaseline(num_classes=C, feat_dim=D, hidden=32, kernel_size=2, levels=2).eval()
    assert model.receptive_field == 7
    x = torch.randn(1, 9, D, requires_grad=True)
    model(x)[0, -1].sum().backward()
    seen = x.grad[0].abs().sum(-1) > 0  # (T,)
    assert seen.tolist() == [False, False] + [True] * 7


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_in_training(kind):
    model = make(kind, dropout=0.5).train()
    x = torch.randn(B, T, D, requires_grad=True)
    model(x, last_steps=3).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_errors(kind):
    model = make(kind)
    with pytest.raises(ValueError, match="sequence-completion"):
        model(torch.randn(B, T, D), sequence_completion=True)
    with pytest.raises(ValueError, match="last_steps"):
        model(torch.randn(B, T, D), last_steps=T + 1)
    with pytest.raises(ValueError, match=r"\(batch, time, 7\)"):
        model(torch.randn(B, T, D + 1))


def test_lstm_baseline_depth_two_uses_interlayer_dropout():
    model = make("lstm", depth=2, dropout=0.3)
    assert model.lstm.num_layers == 2 and model.lstm.dropout == 0.3
    assert make("lstm").lstm.dropout == 0.0


def test_transformer_positions_and_errors():
    sinusoidal = make("transformer")
    assert sinusoidal.position_table is None
    table = sinusoidal._positions(4, torch.zeros(1))  # (T, hidden)
    assert table.shape == (4, H)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0] * (H // 2)))
    learned = make("transformer_learned")
    assert learned.position_table.shape == (8, H)
    with pytest.raises(ValueError, match="max_steps=8"):
        learned(torch.randn(1, 9, D))
    assert make("transformer")(torch.randn(1, 9, D)).shape == (1, 9, C)  # sinusoidal: any T
    with pytest.raises(ValueError, match="divisible by heads"):
        TransformerBaseline(num_classes=C, feat_dim=D, hidden=6, heads=4)
    with pytest.raises(ValueError, match="positions must be"):
        TransformerBaseline(num_classes=C, feat_dim=D, hidden=8, positions="rotary")  # type: ignore[arg-type]


def test_the_attentive_probe_is_allow_listed_for_checkpoints():
    from rulstm.models.spec import allowed_net

    assert allowed_net("rulstm.models.AttentiveProbe") is AttentiveProbe
    assert allowed_net("rulstm.models.baselines.AttentiveProbe") is AttentiveProbe
