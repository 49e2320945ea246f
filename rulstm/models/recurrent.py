"""Calling ``nn.LSTM`` / ``nn.GRU`` under CPU bf16 autocast on CPUs without native bf16.

oneDNN has no bf16 LSTM kernel on CPUs without AVX-512 BF16 or AMX (AVX2-only machines, or any
machine under ``ONEDNN_MAX_CPU_ISA=AVX2``): ``nn.LSTM`` under ``torch.autocast("cpu",
dtype=torch.bfloat16)`` raises "could not create a primitive descriptor for the LSTM forward
propagation primitive". :func:`run_recurrent` runs such a layer in float32 there (autocast off,
inputs and state cast up); everything around it stays under autocast. Where bf16 is native,
or outside CPU bf16 autocast, the layer is called as it is.

The rule of where bf16 is native is :func:`epic_protocol.precision.cpu_bf16_native`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from epic_protocol import precision

RecurrentState = Tensor | tuple[Tensor, Tensor] | None


def needs_float32(inputs: Tensor) -> bool:
    """Whether a recurrent layer on ``inputs`` must leave bf16 autocast: CPU bf16 autocast is
    on and this CPU has no native bf16 (so oneDNN has no bf16 LSTM/GRU kernel)."""
    return (
        inputs.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not precision.cpu_bf16_native()
    )


def run_recurrent(
    rnn: nn.LSTM | nn.GRU, inputs: Tensor, state: RecurrentState = None
) -> tuple[Tensor, RecurrentState]:
    """``rnn(inputs, state)``, in float32 where CPU bf16 autocast has no kernel for it.

    Args:
        rnn: an ``nn.LSTM`` or ``nn.GRU`` with float32 parameters.
        inputs: (T, B, D), or (B, T, D) for a ``batch_first`` layer.
        state: ``(h, c)`` each (L, B, H) for an LSTM, ``h`` (L, B, H) for a GRU, or ``None``.

    Returns:
        What the layer returns: outputs (T, B, H) (or (B, T, H)) and the final state, in
        float32 when the layer ran outside autocast, else in the autocast dtype.
    """
    if not needs_float32(inputs):
        return rnn(inputs, state)
    if isinstance(state, tuple):
        state = (state[0].float(), state[1].float())
    elif state is not None:
        state = state.float()
    with torch.autocast("cpu", enabled=False):
        return rnn(inputs.float(), state)
