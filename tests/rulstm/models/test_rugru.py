"""RU-GRU (``cell="gru"``): the fast path's hand-written GRU step equals torch.nn.GRU (the
sequential path runs nn.GRU itself), outputs and gradients; online use and fusion work."""

from __future__ import annotations

import pytest
import torch

from rulstm.models import RULSTM, RULSTMFusion

B, T, D, H, C = 3, 5, 7, 6, 11
TOL = {"rtol": 1e-5, "atol": 1e-5}
CASES = pytest.mark.parametrize(
    "sequence_completion,depth,batch,last_steps",
    [
        (sc, depth, batch, last)
        for sc in (False, True)
        for depth in (1, 2)
        for batch in (1, B)
        for last in (None, 3)
    ],
)


def _run(model: RULSTM, mode: str, x: torch.Tensor, **kwargs):
    model.unroll_mode = mode
    return model(x, return_context=True, **kwargs)


@CASES
def test_fast_path_equals_nn_gru(sequence_completion, depth, batch, last_steps):
    torch.manual_seed(depth * 10 + batch)
    model = RULSTM(num_classes=C, feat_dim=D, hidden=H, depth=depth, cell="gru").eval()
    assert isinstance(model.rolling_lstm, torch.nn.GRU)
    x = torch.randn(batch, T, D)
    kwargs = {"sequence_completion": sequence_completion, "last_steps": last_steps}
    with torch.no_grad():
        expected_logits, expected_context = _run(model, "sequential", x, **kwargs)
        logits, context = _run(model, "parallel", x, **kwargs)
    assert logits.shape == (batch, last_steps or T, C) and context.shape[-1] == 2 * H
    torch.testing.assert_close(logits, expected_logits, **TOL)
    torch.testing.assert_close(context, expected_context, **TOL)


@CASES
def test_gradients_equal_nn_gru(sequence_completion, depth, batch, last_steps):
    torch.manual_seed(depth * 10 + batch)
    model = RULSTM(
        num_classes=C, feat_dim=D, hidden=H, depth=depth, dropout=0.0, cell="gru"
    ).train()
    x0 = torch.randn(batch, T, D)
    kwargs = {"sequence_completion": sequence_completion, "last_steps": last_steps}
    steps = last_steps or T
    weights = torch.randn(batch, steps, C), torch.randn(batch, steps, 2 * H)
    grads = {}
    for mode in ("sequential", "parallel"):
        model.zero_grad()
        x = x0.clone().requires_grad_(True)
        logits, context = _run(model, mode, x, **kwargs)
        ((logits * weights[0]).sum() + (context * weights[1]).sum()).backward()
        grads[mode] = {"input": x.grad, **{n: p.grad.clone() for n, p in model.named_parameters()}}
    for name, expected in grads["sequential"].items():
        torch.testing.assert_close(grads["parallel"][name], expected, **TOL, msg=name)


def test_context_is_the_two_hidden_states():
    torch.manual_seed(0)
    model = RULSTM(num_classes=C, feat_dim=D, hidden=H, cell="gru").eval()
    x = torch.randn(B, T, D)
    with torch.no_grad():
        _, context = model(x, return_context=True)
        rolling, _ = model.rolling_lstm(x.transpose(0, 1))  # (T, B, H): hidden after each step
    torch.testing.assert_close(context[..., H:], rolling.transpose(0, 1), **TOL)


@pytest.mark.parametrize("depth", [1, 2])
def test_roll_and_unroll_reproduce_forward(depth):
    torch.manual_seed(depth)
    model = RULSTM(num_classes=C, feat_dim=D, hidden=H, depth=depth, cell="gru").eval()
    x = torch.randn(B, T, D)
    with torch.no_grad():
        expected = model(x)
        state = None
        for t in range(T):
            state = model.roll(x[:, t], state)
            logits = model.unroll(x[:, t], state, T - t + 1)
            torch.testing.assert_close(logits, expected[:, t], **TOL)
            horizons = model.unroll_horizons(x[:, t], state, [T - t + 1, 1])
            torch.testing.assert_close(horizons[:, 0], expected[:, t], **TOL)


def test_fusion_of_gru_branches_and_invalid_cell():
    torch.manual_seed(0)
    fusion = RULSTMFusion(num_classes=C, feat_dims={"rgb": 4, "obj": 3}, hidden=H, cell="gru")
    assert all(branch.cell == "gru" for branch in fusion.branches.values())
    logits, weights = fusion(
        {"rgb": torch.randn(2, T, 4), "obj": torch.randn(2, T, 3)}, return_weights=True
    )
    assert logits.shape == (2, T, C)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, T))
    with pytest.raises(ValueError, match="cell must be 'lstm' or 'gru'"):
        RULSTM(num_classes=C, feat_dim=D, cell="rnn")  # type: ignore[arg-type]
