"""RULSTM branch: shapes, unrolling lengths, last_steps, online building blocks, errors."""

from __future__ import annotations

import pytest
import torch

from rulstm.models import RULSTM

B, T, D, H, C = 3, 5, 7, 6, 11


def make(**kwargs) -> RULSTM:
    torch.manual_seed(0)
    return RULSTM(num_classes=C, feat_dim=D, hidden=H, **kwargs).eval()


def test_unrolling_lengths():
    assert RULSTM.unrolling_lengths(4) == [5, 4, 3, 2]
    assert RULSTM.unrolling_lengths(4, sequence_completion=True) == [4, 3, 2, 1]
    # The reference's 14 observed steps: 119 unrolling steps (sum of 15..2).
    assert sum(RULSTM.unrolling_lengths(14)) == 119
    assert RULSTM.unrolling_lengths(1) == [2]


@pytest.mark.parametrize("unroll", ["parallel", "sequential"])
@pytest.mark.parametrize("batch", [1, B])
def test_shapes(unroll, batch):
    model = make(unroll=unroll)
    x = torch.randn(batch, T, D)
    assert model(x).shape == (batch, T, C)
    logits, context = model(x, return_context=True, last_steps=2)
    assert logits.shape == (batch, 2, C)
    assert context.shape == (batch, 2, 2 * H)


@pytest.mark.parametrize("sequence_completion", [False, True])
@pytest.mark.parametrize("depth", [1, 2])
def test_last_steps_equal_full_outputs(sequence_completion, depth):
    model = make(depth=depth)
    x = torch.randn(B, T, D)
    with torch.no_grad():
        full, full_context = model(x, sequence_completion=sequence_completion, return_context=True)
        for last in range(1, T + 1):
            part, part_context = model(
                x, sequence_completion=sequence_completion, return_context=True, last_steps=last
            )
            torch.testing.assert_close(part, full[:, -last:], rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(part_context, full_context[:, -last:], rtol=1e-6, atol=1e-6)


def test_output_at_t_only_sees_the_past_in_normal_mode():
    model = make()
    x = torch.randn(B, T, D)
    changed = x.clone()
    changed[:, 3:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :3], model(changed)[:, :3])
        assert not torch.allclose(model(x)[:, 3:], model(changed)[:, 3:])


def test_sequence_completion_reads_the_future():
    model = make()
    x = torch.randn(B, T, D)
    changed = x.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        normal = model(x)[:, 0], model(changed)[:, 0]
        completion = (
            model(x, sequence_completion=True)[:, 0],
            model(changed, sequence_completion=True)[:, 0],
        )
    torch.testing.assert_close(*normal)
    assert not torch.allclose(*completion)


def test_batch_elements_are_independent():
    model = make(depth=2)
    x = torch.randn(B, T, D)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(B)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("depth", [1, 2])
def test_roll_and_unroll_reproduce_forward(depth):
    """Streaming use: roll one observation at a time, unroll T - t + 1 steps."""
    model = make(depth=depth)
    x = torch.randn(B, T, D)
    with torch.no_grad():
        logits, context = model(x, return_context=True)
        state = None
        for t in range(T):
            state = model.roll(x[:, t], state)
            assert state[0].shape == state[1].shape == (depth, B, H)
            step_logits, step_context = model.unroll(x[:, t], state, T - t + 1, return_context=True)
            torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(step_context, context[:, t], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(context[:, t, H:], state[1][-1])
        assert model.unroll(x[:, 0], state, 1).shape == (B, C)


def test_context_second_half_is_rolling_cell_state():
    model = make()
    x = torch.randn(B, T, D)
    with torch.no_grad():
        _, context = model(x, return_context=True)
        # nn.LSTM returns the final cell state of the whole sequence.
        _, (_, last_cell) = model.rolling_lstm(x.transpose(0, 1))
    torch.testing.assert_close(context[:, -1, H:], last_cell[-1], rtol=1e-5, atol=1e-6)


def test_parameter_names_follow_nn_lstm():
    """The checkpoint importer maps the authors' checkpoints onto these names."""
    model = RULSTM(num_classes=C, feat_dim=D, hidden=H, depth=2)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    expected = {}
    for lstm in ("rolling_lstm", "unrolling_lstm"):
        for layer, in_size in ((0, D), (1, H)):
            expected[f"{lstm}.weight_ih_l{layer}"] = (4 * H, in_size)
            expected[f"{lstm}.weight_hh_l{layer}"] = (4 * H, H)
            expected[f"{lstm}.bias_ih_l{layer}"] = (4 * H,)
            expected[f"{lstm}.bias_hh_l{layer}"] = (4 * H,)
    expected["classifier.1.weight"] = (C, H)
    expected["classifier.1.bias"] = (C,)
    assert shapes == expected
    assert model.rolling_lstm.dropout == model.unrolling_lstm.dropout == 0.8
    assert make().rolling_lstm.dropout == 0.0


def test_training_dropout_is_random_and_eval_is_deterministic():
    model = make(dropout=0.5)
    x = torch.randn(B, T, D)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        first, second = model(x), model(x)
    assert torch.isfinite(first).all()
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("sequence_completion", [False, True])
def test_training_mode_backward_with_dropout(sequence_completion):
    model = make(depth=2, dropout=0.5).train()
    x = torch.randn(B, T, D, requires_grad=True)
    model(x, sequence_completion=sequence_completion, last_steps=2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_invalid_inputs_raise_clear_errors():
    model = make()
    with pytest.raises(ValueError, match=r"\(batch, time, 7\)"):
        model(torch.randn(B, T, D + 1))
    with pytest.raises(ValueError, match=r"\(batch, time, 7\)"):
        model(torch.randn(T, D))
    with pytest.raises(ValueError, match="last_steps"):
        model(torch.randn(B, T, D), last_steps=T + 1)
    with pytest.raises(ValueError, match="last_steps"):
        model(torch.randn(B, T, D), last_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        model.unroll(torch.randn(B, D), model.roll(torch.randn(B, D)), 0)
    state = model.roll(torch.randn(B, D))
    for online in (
        model.roll,
        lambda x_t: model.unroll(x_t, state, 2),
        lambda x_t: model.unroll_horizons(x_t, state, [1, 2]),
    ):  # one observation is (B, D), for every online method
        with pytest.raises(
            ValueError, match=r"expected x_t of shape \(batch, 7\), got \(3, 5, 7\)"
        ):
            online(torch.randn(B, T, D))
    with pytest.raises(ValueError, match="unroll"):
        RULSTM(num_classes=C, feat_dim=D, unroll="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout"):
        RULSTM(num_classes=C, feat_dim=D, dropout=1.0)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        RULSTM(C, D)  # type: ignore[misc]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_one_layer_stepping_loop_matches_torch_and_drops_finished_rows(cell):
    """RULSTM._step_layers is the loop every path (forward, roll, unroll, unroll_horizons)
    runs: over full steps it equals nn.LSTM / nn.GRU, and rows that finish early keep the
    states of their own last step."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = RULSTM(num_classes=5, feat_dim=6, hidden=4, depth=2, dropout=0.0, cell=cell).eval()
    rnn = model.rolling_lstm
    x = torch.randn(3, 2, 6)  # (T, B, D)
    bias = rnn.bias_ih_l0 + (
        rnn.bias_hh_l0 if cell == "lstm" else torch.cat([rnn.bias_hh_l0[:8], torch.zeros(4)])
    )
    gates = F.linear(x, rnn.weight_ih_l0, bias)  # (T, B, 4H) / (T, B, 3H)
    with torch.no_grad():
        layers = model._step_layers(rnn, list(gates), None)
        expected, _ = rnn(x)  # (T, B, H) of the last layer
        torch.testing.assert_close(torch.stack(layers[-1][0]), expected)
        ragged = model._step_layers(rnn, [gates[0], gates[1][:1]], None)  # row 1 stops at 1
        assert [h.shape[0] for h in ragged[-1][0]] == [2, 1]
        torch.testing.assert_close(ragged[-1][0][1], expected[1, :1])
    with pytest.raises(ValueError, match=r"expected x_t of shape \(batch, 6\)"):
        model.roll(torch.zeros(2, 3, 6))


def test_roll_and_unroll_horizons_run_dynamically_quantised_layers():
    """An int8 copy (torch's dynamic quantisation packs the LSTM weights) is stepped by the
    model's own roll / unroll_horizons, close to the float32 model."""
    from torch.ao.quantization import quantize_dynamic

    model = make()
    quantised = quantize_dynamic(model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(B, D)
    with torch.no_grad():
        state, q_state = model.roll(x), quantised.roll(x)
        assert q_state[0].shape == state[0].shape == (1, B, H)
        logits = model.unroll_horizons(x, state, [1, 3])
        q_logits = quantised.unroll_horizons(x, q_state, [1, 3])
    assert q_logits.shape == logits.shape == (B, 2, C)
    torch.testing.assert_close(q_logits, logits, atol=0.05, rtol=0.0)
