"""Reference-layout checkpoints with random weights, an independent step-by-step re-statement
of the reference forward pass, and tiny LMDB databases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

HIDDEN = 8
NUM_CLASSES = 7
FEAT_DIMS = {"rgb": 6, "flow": 5, "obj": 4}
LSTM_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def reference_branch_state_dict(
    generator: torch.Generator, *, feat_dim: int, depth: int = 1, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Random weights under the reference's names (rolling LSTM wrapped as ``.lstm``)."""
    state: dict[str, torch.Tensor] = {}
    for name in ("rolling_lstm.lstm", "unrolling_lstm"):
        for layer in range(depth):
            inputs = feat_dim if layer == 0 else HIDDEN
            shapes = {
                "weight_ih": (4 * HIDDEN, inputs),
                "weight_hh": (4 * HIDDEN, HIDDEN),
                "bias_ih": (4 * HIDDEN,),
                "bias_hh": (4 * HIDDEN,),
            }
            for param in LSTM_PARAMS:
                state[f"{prefix}{name}.{param}_l{layer}"] = (
                    torch.randn(shapes[param], generator=generator) * 0.5
                )
    state[f"{prefix}classifier.1.weight"] = torch.randn(NUM_CLASSES, HIDDEN, generator=generator)
    state[f"{prefix}classifier.1.bias"] = torch.randn(NUM_CLASSES, generator=generator)
    return state


def reference_fusion_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for index, dim in enumerate(FEAT_DIMS.values()):
        state.update(
            reference_branch_state_dict(generator, feat_dim=dim, prefix=f"branches.{index}.")
        )
    width = 2 * len(FEAT_DIMS) * HIDDEN
    sizes = [width, width // 4, width // 8, len(FEAT_DIMS)]
    for layer, (fan_in, fan_out) in zip((0, 3, 6), zip(sizes, sizes[1:])):
        state[f"MATT.{layer}.weight"] = torch.randn(fan_out, fan_in, generator=generator) * 0.3
        state[f"MATT.{layer}.bias"] = torch.randn(fan_out, generator=generator) * 0.3
    return state


def _lstm(state: dict[str, torch.Tensor], name: str, feat_dim: int, depth: int) -> nn.LSTM:
    lstm = nn.LSTM(feat_dim, HIDDEN, num_layers=depth)
    lstm.load_state_dict(
        {
            f"{param}_l{layer}": state[f"{name}.{param}_l{layer}"]
            for layer in range(depth)
            for param in LSTM_PARAMS
        }
    )
    return lstm.eval()


@torch.no_grad()
def reference_branch_forward(
    state: dict[str, torch.Tensor], x: torch.Tensor, *, prefix: str = "", depth: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference RULSTM forward in eval mode, one LSTM call per step:

    the rolling LSTM reads x_0..x_{T-1} one step at a time; for every t the unrolling LSTM
    starts from the rolling (h_t, c_t) and reads x_t repeated T - t + 1 times; its last
    output is classified. Context = [unrolled hidden, rolling cell of the last layer].
    Returns scores (B, T, C) and context (B, T, 2H)."""
    batch, steps, feat_dim = x.shape
    rolling = _lstm(state, f"{prefix}rolling_lstm.lstm", feat_dim, depth)
    unrolling = _lstm(state, f"{prefix}unrolling_lstm", feat_dim, depth)
    inputs = x.permute(1, 0, 2)  # (T, B, D)
    hidden_states, cell_states = [], []
    rolling_state = None
    for t in range(steps):
        _, rolling_state = rolling(inputs[t].unsqueeze(0), rolling_state)
        hidden_states.append(rolling_state[0])
        cell_states.append(rolling_state[1])
    unrolled = []
    for t in range(steps):
        repeated = inputs[t].unsqueeze(0).expand(steps - t + 1, batch, feat_dim)
        outputs, _ = unrolling(repeated.contiguous(), (hidden_states[t], cell_states[t]))
        unrolled.append(outputs[-1])
    unrolled_tensor = torch.stack(unrolled, 1)  # (B, T, H)
    scores = (
        unrolled_tensor @ state[f"{prefix}classifier.1.weight"].T
        + state[f"{prefix}classifier.1.bias"]
    )
    last_cells = torch.stack([c[-1] for c in cell_states], 1)  # (B, T, H)
    return scores, torch.cat([unrolled_tensor, last_cells], 2)


@torch.no_grad()
def reference_fusion_forward(
    state: dict[str, torch.Tensor], inputs: list[torch.Tensor]
) -> torch.Tensor:
    """The reference RULSTMFusion forward: MATT weights from the concatenated contexts,
    softmax over branches, weighted sum of the branch scores."""
    scores, contexts = [], []
    for index, x in enumerate(inputs):
        s, c = reference_branch_forward(state, x, prefix=f"branches.{index}.")
        scores.append(s)
        contexts.append(c)
    context = torch.cat(contexts, 2)
    context = context.reshape(-1, context.shape[-1])  # (B*T, 2*M*H)
    hidden = torch.relu(context @ state["MATT.0.weight"].T + state["MATT.0.bias"])
    hidden = torch.relu(hidden @ state["MATT.3.weight"].T + state["MATT.3.bias"])
    weights = torch.softmax(hidden @ state["MATT.6.weight"].T + state["MATT.6.bias"], 1)
    fused = torch.zeros_like(scores[0])
    for index, s in enumerate(scores):
        fused += (s.reshape(-1, s.shape[-1]) * weights[:, index : index + 1]).reshape(s.shape)
    return fused


def save_reference_checkpoint(path: Path, state: dict[str, torch.Tensor], **extra) -> Path:
    """The released file layout: numpy scalars for perf / best_perf."""
    torch.save(
        {
            "state_dict": state,
            "epoch": 42,
            "perf": np.float64(31.5),
            "best_perf": np.float32(32.25),
            **extra,
        },
        path,
    )
    return path


def write_lmdb(path: Path, entries: dict[str, np.ndarray | bytes]) -> Path:
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=32 * 1024 * 1024)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            raw = value if isinstance(value, bytes) else np.asarray(value, np.float32).tobytes()
            txn.put(key.encode(), raw)
    env.close()
    return path


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def ref():
    """This module's helpers and constants (fixtures work under every pytest import mode,
    unlike importing a conftest by name)."""
    return sys.modules[__name__]
