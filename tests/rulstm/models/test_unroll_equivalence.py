"""The fast (parallel) unrolling equals the reference-style (sequential) one and an
independent step-by-step implementation written here, outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from rulstm.models import RULSTM

B, T, D, H, C = 3, 5, 7, 6, 11
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _lstm_step(lstm: torch.nn.LSTM, layer: int, x: Tensor, h: Tensor, c: Tensor):
    """One step of layer ``layer`` of ``lstm``, gate by gate (the LSTM equations)."""
    w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
    b_ih, b_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
    size = h.shape[-1]

    def gate(k: int) -> Tensor:
        rows = slice(k * size, (k + 1) * size)
        return x @ w_ih[rows].T + b_ih[rows] + h @ w_hh[rows].T + b_hh[rows]

    i, f, g, o = (
        torch.sigmoid(gate(0)),
        torch.sigmoid(gate(1)),
        torch.tanh(gate(2)),
        torch.sigmoid(gate(3)),
    )
    c = f * c + i * g
    return o * torch.tanh(c), c


def _stacked_step(lstm, x, hs, cs):
    hs, cs = list(hs), list(cs)
    for layer in range(len(hs)):
        hs[layer], cs[layer] = _lstm_step(lstm, layer, x, hs[layer], cs[layer])
        x = hs[layer]
    return hs, cs


def reference_rulstm(
    model: RULSTM, x: Tensor, *, sequence_completion: bool, last_steps: int | None
) -> tuple[Tensor, Tensor]:
    """RU-LSTM without dropout, straight from the paper: logits (B, S, C), context (B, S, 2H)."""
    batch, steps, _ = x.shape
    zeros = [x.new_zeros(batch, model.hidden) for _ in range(model.depth)]
    hs, cs = zeros, zeros
    rolling = []
    for t in range(steps):
        hs, cs = _stacked_step(model.rolling_lstm, x[:, t], hs, cs)
        rolling.append((hs, cs))
    logits, contexts = [], []
    for t in range(steps - (last_steps or steps), steps):
        hs, cs = rolling[t]
        num_unroll = steps - t if sequence_completion else steps - t + 1
        for k in range(num_unroll):
            hs, cs = _stacked_step(
                model.unrolling_lstm, x[:, t + k] if sequence_completion else x[:, t], hs, cs
            )
        logits.append(model.classifier[1](hs[-1]))
        contexts.append(torch.cat([hs[-1], rolling[t][1][-1]], dim=-1))
    return torch.stack(logits, 1), torch.stack(contexts, 1)


def _run(model: RULSTM, mode: str, x: Tensor, **kwargs) -> tuple[Tensor, Tensor]:
    if mode == "reference":
        return reference_rulstm(model, x, **kwargs)
    model.unroll_mode = mode
    return model(x, return_context=True, **kwargs)


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


@CASES
def test_outputs_match(sequence_completion, depth, batch, last_steps):
    torch.manual_seed(depth * 10 + batch)
    model = RULSTM(num_classes=C, feat_dim=D, hidden=H, depth=depth).eval()
    x = torch.randn(batch, T, D)
    kwargs = {"sequence_completion": sequence_completion, "last_steps": last_steps}
    with torch.no_grad():
        expected_logits, expected_context = reference_rulstm(model, x, **kwargs)
        for mode in ("parallel", "sequential"):
            logits, context = _run(model, mode, x, **kwargs)
            assert logits.shape == (batch, last_steps or T, C)
            torch.testing.assert_close(logits, expected_logits, **TOL)
            torch.testing.assert_close(context, expected_context, **TOL)


@CASES
def test_gradients_match(sequence_completion, depth, batch, last_steps):
    """Train mode without dropout: same gradients w.r.t. the input and every parameter."""
    torch.manual_seed(depth * 10 + batch)
    model = RULSTM(num_classes=C, feat_dim=D, hidden=H, depth=depth, dropout=0.0).train()
    x0 = torch.randn(batch, T, D)
    kwargs = {"sequence_completion": sequence_completion, "last_steps": last_steps}
    steps = last_steps or T
    logit_weights, context_weights = torch.randn(batch, steps, C), torch.randn(batch, steps, 2 * H)

    grads = {}
    for mode in ("reference", "parallel", "sequential"):
        model.zero_grad()
        x = x0.clone().requires_grad_(True)
        logits, context = _run(model, mode, x, **kwargs)
        ((logits * logit_weights).sum() + (context * context_weights).sum()).backward()
        grads[mode] = {"input": x.grad, **{n: p.grad.clone() for n, p in model.named_parameters()}}

    assert set(grads["reference"]) == {"input", *dict(model.named_parameters())}
    for mode in ("parallel", "sequential"):
        for name, expected in grads["reference"].items():
            torch.testing.assert_close(grads[mode][name], expected, **TOL, msg=f"{mode}: {name}")


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 4),
    steps=st.integers(1, 6),
    depth=st.integers(1, 3),
    sequence_completion=st.booleans(),
    data=st.data(),
)
def test_parallel_matches_reference_any_shape(batch, steps, depth, sequence_completion, data):
    last_steps = data.draw(st.one_of(st.none(), st.integers(1, steps)))
    torch.manual_seed(0)
    model = RULSTM(num_classes=4, feat_dim=3, hidden=5, depth=depth).eval()
    x = torch.randn(batch, steps, 3)
    kwargs = {"sequence_completion": sequence_completion, "last_steps": last_steps}
    with torch.no_grad():
        logits, context = model(x, return_context=True, **kwargs)
        expected_logits, expected_context = reference_rulstm(model, x, **kwargs)
    torch.testing.assert_close(logits, expected_logits, **TOL)
    torch.testing.assert_close(context, expected_context, **TOL)
