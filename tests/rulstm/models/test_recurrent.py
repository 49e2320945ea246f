"""nn.LSTM / nn.GRU under CPU bf16 autocast: float32 where bf16 is not native (oneDNN has no
bf16 LSTM kernel there and raises), the layer as it is where bf16 is native. Both branches are
forced through the precision rule, so they run on any CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rulstm.models import RULSTM, LSTMBaseline
from rulstm.models.recurrent import run_recurrent

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


class _Spy(nn.LSTM):
    """An LSTM that records whether autocast was on and the input dtype of each call."""

    def __init__(self) -> None:
        super().__init__(4, 6)
        self.calls: list[tuple[bool, torch.dtype]] = []

    def forward(self, inputs, state=None):
        self.calls.append((torch.is_autocast_enabled("cpu"), inputs.dtype))
        with torch.autocast("cpu", enabled=False):  # the real kernel may not exist here
            return super().forward(inputs.float(), state)


@pytest.mark.parametrize("rnn", [nn.LSTM(4, 6, num_layers=2), nn.GRU(4, 6)])
def test_without_native_bf16_the_layer_runs_in_float32(rnn, force_bf16_native):
    force_bf16_native(False)
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4)
    ref_out, ref_state = rnn(x)
    with torch.autocast(**BF16):
        out, state = run_recurrent(rnn, x.bfloat16())
    assert out.dtype == torch.float32
    assert torch.allclose(out, rnn(x.bfloat16().float())[0])
    assert torch.allclose(out, ref_out, atol=0.02)


def test_without_native_bf16_a_low_precision_state_is_cast_up(force_bf16_native):
    force_bf16_native(False)
    rnn = nn.LSTM(4, 6)
    x, h, c = torch.randn(2, 3, 4), torch.randn(1, 3, 6), torch.randn(1, 3, 6)
    with torch.autocast(**BF16):
        out, (h1, c1) = run_recurrent(rnn, x, (h.bfloat16(), c))
    assert out.dtype == h1.dtype == c1.dtype == torch.float32


def test_with_native_bf16_the_layer_stays_under_autocast(force_bf16_native):
    force_bf16_native(True)
    spy = _Spy()
    with torch.autocast(**BF16):
        run_recurrent(spy, torch.randn(2, 3, 4))
    assert spy.calls == [(True, torch.float32)]


def test_outside_autocast_the_layer_is_called_as_it_is(force_bf16_native):
    force_bf16_native(False)
    spy = _Spy()
    run_recurrent(spy, torch.randn(2, 3, 4))
    assert spy.calls == [(False, torch.float32)]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequential_branch_runs_under_bf16_autocast_without_native_bf16(cell, force_bf16_native):
    force_bf16_native(False)
    torch.manual_seed(1)
    net = RULSTM(num_classes=7, feat_dim=8, hidden=12, depth=2, unroll="sequential", cell=cell)
    net.eval()
    x = torch.randn(2, 6, 8)
    ref = net(x, last_steps=3)
    with torch.autocast(**BF16):
        low = net(x, last_steps=3)
    assert low.dtype == torch.bfloat16  # the classifier still runs under autocast
    assert ((low.float() - ref).abs().max() / ref.abs().max()) < 0.03


def test_lstm_baseline_runs_under_bf16_autocast_without_native_bf16(force_bf16_native):
    force_bf16_native(False)
    torch.manual_seed(2)
    net = LSTMBaseline(num_classes=5, feat_dim=8, hidden=12, dropout=0.0).eval()
    x = torch.randn(3, 6, 8)
    ref = net(x)
    with torch.autocast(**BF16):
        low = net(x)
    assert low.dtype == torch.bfloat16
    assert ((low.float() - ref).abs().max() / ref.abs().max()) < 0.03
