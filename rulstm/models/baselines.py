"""Baselines with the same forward contract as :class:`rulstm.models.RULSTM`.

``forward(x (B, T, D), *, sequence_completion=False, last_steps=None) -> logits (B, S, C)``
where ``S = last_steps or T``; output ``t`` depends only on ``x[:, :t+1]``. No baseline has a
sequence-completion mode: passing ``sequence_completion=True`` raises a ``ValueError`` (so a
pre-training config cannot silently train the wrong objective).

* :class:`LSTMBaseline`: one LSTM encodes and predicts;
* :class:`TCNBaseline`: causal dilated convolutions (Bai et al., 2018);
* :class:`TransformerBaseline`: a causal Transformer encoder (Vaswani et al., 2017);
* :class:`AttentiveProbe`: a learned query cross-attending over the observed step features
  (V-JEPA 2's attentive probe, Assran et al., 2025, at step granularity).

The RU-GRU baseline is :class:`rulstm.models.RULSTM` with ``cell="gru"``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rulstm.models.recurrent import run_recurrent


def _check_input(x: Tensor, feat_dim: int, last_steps: int | None, model: str) -> int:
    """Validate (B, T, D) input; return the number of output steps S."""
    if x.dim() != 3 or x.shape[-1] != feat_dim:
        raise ValueError(
            f"{model}: expected features of shape (batch, time, {feat_dim}), got {tuple(x.shape)}"
        )
    num_steps = x.shape[1]
    if last_steps is None:
        return num_steps
    if not 1 <= last_steps <= num_steps:
        raise ValueError(f"{model}: last_steps must be in [1, {num_steps}], got {last_steps}")
    return last_steps


def _no_sequence_completion(sequence_completion: bool, model: str) -> None:
    if sequence_completion:
        raise ValueError(
            f"{model} has no sequence-completion mode (it is RU-LSTM's pre-training); "
            "train it with sequence_completion=False"
        )


class LSTMBaseline(nn.Module):
    """The "classic" anticipation scheme: one LSTM that encodes the observations and predicts
    from its hidden state at every step (no unrolling).

    Args:
        num_classes: number of classes ``C``.
        feat_dim: input feature size ``D``.
        hidden: LSTM hidden size.
        dropout: on the input features, before the classifier and between LSTM layers.
        depth: number of LSTM layers.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        feat_dim: int,
        hidden: int = 1024,
        dropout: float = 0.8,
        depth: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.input_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            feat_dim,
            hidden,
            num_layers=depth,
            dropout=dropout if depth > 1 else 0.0,
            batch_first=True,
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(
        self, x: Tensor, *, sequence_completion: bool = False, last_steps: int | None = None
    ) -> Tensor:
        """Logits (B, S, C) of the last ``S = last_steps or T`` steps of x (B, T, D)."""
        _no_sequence_completion(sequence_completion, type(self).__name__)
        kept = _check_input(x, self.feat_dim, last_steps, type(self).__name__)
        outputs, _ = run_recurrent(self.lstm, self.input_dropout(x))  # (B, T, H)
        return self.classifier(outputs[:, -kept:])  # (B, S, H) -> (B, S, C)


class _CausalBlock(nn.Module):
    """Residual block of two dilated causal convolutions (Bai et al., 2018).

    Left padding by ``(kernel_size - 1) * dilation`` makes output ``t`` depend only on
    inputs ``<= t``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        dilation: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.left_pad = (kernel_size - 1) * dilation
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        # A 1x1 convolution matches the channels of the residual when they differ.
        self.residual = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, T) -> (B, C_out, T)
        y = self.dropout(F.relu(self.conv1(F.pad(x, (self.left_pad, 0)))))
        y = self.dropout(F.relu(self.conv2(F.pad(y, (self.left_pad, 0)))))
        skip = x if self.residual is None else self.residual(x)
        return F.relu(y + skip)


class TCNBaseline(nn.Module):
    """Temporal convolutional network: causal dilated convolutions, a prediction per step.

    Level ``i`` has dilation ``2**i``; the output at ``t`` sees only ``x[:, :t+1]``, at most
    :attr:`receptive_field` steps back (31 for the defaults, more than the 14 observed steps).

    Args:
        num_classes: number of classes ``C``.
        feat_dim: input feature size ``D``.
        hidden: channels of every level.
        kernel_size: temporal kernel size (>= 2 to see the past).
        levels: number of residual blocks.
        dropout: on the input features, inside the blocks and before the classifier.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        feat_dim: int,
        hidden: int = 512,
        kernel_size: int = 2,
        levels: int = 4,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or levels < 1:
            raise ValueError(f"kernel_size and levels must be >= 1, got {kernel_size}, {levels}")
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.receptive_field = 1 + 2 * (kernel_size - 1) * (2**levels - 1)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(
                _CausalBlock(
                    feat_dim if level == 0 else hidden,
                    hidden,
                    kernel_size=kernel_size,
                    dilation=2**level,
                    dropout=dropout,
                )
                for level in range(levels)
            )
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(
        self, x: Tensor, *, sequence_completion: bool = False, last_steps: int | None = None
    ) -> Tensor:
        """Logits (B, S, C) of the last ``S = last_steps or T`` steps of x (B, T, D)."""
        _no_sequence_completion(sequence_completion, type(self).__name__)
        kept = _check_input(x, self.feat_dim, last_steps, type(self).__name__)
        channels_first = self.input_dropout(x).transpose(1, 2)  # (B, T, D) -> (B, D, T)
        features = self.blocks(channels_first).transpose(1, 2)  # (B, hidden, T) -> (B, T, hidden)
        return self.classifier(features[:, -kept:])  # (B, S, hidden) -> (B, S, C)


class TransformerBaseline(nn.Module):
    """A causal Transformer encoder over the observed steps, one prediction per step.

    The features are projected to ``hidden``, given positions (``"sinusoidal"``, fixed as in
    Vaswani et al. 2017, or ``"learned"``, one vector per step up to ``max_steps``) and run
    through ``layers`` pre-norm encoder layers whose attention is masked so that step ``t``
    sees steps ``<= t`` only. A linear classifier reads every step.

    Args:
        num_classes: number of classes ``C``.
        feat_dim: input feature size ``D``.
        hidden: model width (must be divisible by ``heads``).
        heads: attention heads per layer.
        layers: encoder layers.
        feedforward: width of each layer's feed-forward network (default ``4 * hidden``).
        dropout: on the input features, inside the encoder and before the classifier.
        positions: ``"sinusoidal"`` or ``"learned"``.
        max_steps: longest sequence for learned positions (longer input raises ``ValueError``).

    Raises:
        ValueError: ``hidden`` not divisible by ``heads``, an unknown ``positions``, or (in
            ``forward``) a bad input shape or a sequence longer than ``max_steps`` with learned
            positions.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        feat_dim: int,
        hidden: int = 256,
        heads: int = 4,
        layers: int = 2,
        feedforward: int | None = None,
        dropout: float = 0.1,
        positions: Literal["sinusoidal", "learned"] = "sinusoidal",
        max_steps: int = 64,
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        if positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {positions!r}")
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.hidden = hidden
        self.positions = positions
        self.max_steps = max_steps
        self.input_dropout = nn.Dropout(dropout)
        self.project = nn.Linear(feat_dim, hidden)
        self.position_table = (
            nn.Parameter(torch.zeros(max_steps, hidden)) if positions == "learned" else None
        )
        if self.position_table is not None:
            nn.init.normal_(self.position_table, std=0.02)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            dim_feedforward=feedforward or 4 * hidden,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only apply without a mask; disabling them avoids a warning.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def _positions(self, steps: int, like: Tensor) -> Tensor:
        """Position vectors (T, hidden) for steps 0..T-1."""
        if self.position_table is not None:
            if steps > self.max_steps:
                raise ValueError(
                    f"TransformerBaseline: {steps} steps but learned positions cover "
                    f"max_steps={self.max_steps}"
                )
            return self.position_table[:steps]
        return sinusoidal_positions(steps, self.hidden, like=like)

    def forward(
        self, x: Tensor, *, sequence_completion: bool = False, last_steps: int | None = None
    ) -> Tensor:
        """Logits (B, S, C) of the last ``S = last_steps or T`` steps of x (B, T, D)."""
        _no_sequence_completion(sequence_completion, type(self).__name__)
        kept = _check_input(x, self.feat_dim, last_steps, type(self).__name__)
        steps = x.shape[1]
        tokens = self.project(self.input_dropout(x))  # (B, T, D) -> (B, T, hidden)
        tokens = tokens + self._positions(steps, tokens)  # broadcast (T, hidden)
        # -inf above the diagonal: step t attends to steps <= t only.
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=x.device, dtype=x.dtype)
        encoded = self.norm(self.encoder(tokens, mask=mask, is_causal=True))  # (B, T, hidden)
        return self.classifier(encoded[:, -kept:])  # (B, S, hidden) -> (B, S, C)


def sinusoidal_positions(steps: int, size: int, *, like: Tensor) -> Tensor:
    """The (steps, size) sinusoidal position table of Vaswani et al. (2017), on ``like``'s
    device and dtype."""
    position = torch.arange(steps, device=like.device, dtype=like.dtype)[:, None]  # (T, 1)
    frequency = torch.exp(
        torch.arange(0, size, 2, device=like.device, dtype=like.dtype) * (-math.log(10000.0) / size)
    )  # (ceil(size/2),)
    table = like.new_zeros(steps, size)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: size // 2])
    return table


class AttentiveProbe(nn.Module):
    """An attentive probe at step granularity (the head V-JEPA 2 trains on frozen features,
    here over one pooled feature per observed step): a learned query cross-attends over the
    observed step features, then a residual MLP and a linear classifier.

    The prediction at step ``t`` attends to steps ``<= t`` only (a causal mask), so output
    ``t`` depends only on ``x[:, :t+1]``, as for the other baselines. Keys and values are the
    features projected to ``hidden``, normalised, plus sinusoidal step positions.

    Args:
        num_classes: number of classes ``C``.
        feat_dim: input feature size ``D``.
        hidden: width of the query, keys and values.
        heads: attention heads (must divide ``hidden``).
        dropout: on the input features, in the attention and before the classifier.
        mlp_ratio: hidden width of the MLP, as a multiple of ``hidden``.

    Raises:
        ValueError: ``hidden`` not divisible by ``heads``, or (in ``forward``) a bad input
            shape.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        feat_dim: int,
        hidden: int = 256,
        heads: int = 4,
        dropout: float = 0.1,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.hidden = hidden
        self.input_dropout = nn.Dropout(dropout)
        self.project = nn.Linear(feat_dim, hidden)
        self.key_norm = nn.LayerNorm(hidden)
        self.query = nn.Parameter(torch.zeros(hidden))
        nn.init.normal_(self.query, std=0.02)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, hidden)
        )
        self.norm = nn.LayerNorm(hidden)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(
        self, x: Tensor, *, sequence_completion: bool = False, last_steps: int | None = None
    ) -> Tensor:
        """Logits (B, S, C) of the last ``S = last_steps or T`` steps of x (B, T, D)."""
        _no_sequence_completion(sequence_completion, type(self).__name__)
        kept = _check_input(x, self.feat_dim, last_steps, type(self).__name__)
        batch, steps = x.shape[:2]
        keys = self.key_norm(self.project(self.input_dropout(x)))  # (B, T, D) -> (B, T, hidden)
        keys = keys + sinusoidal_positions(steps, self.hidden, like=keys)  # + (T, hidden)
        queries = self.query.expand(batch, kept, -1)  # (hidden,) -> (B, S, hidden)
        # Query s (step t = T - S + s) may attend to steps <= t: True above that diagonal.
        first = steps - kept
        blocked = torch.ones(kept, steps, dtype=torch.bool, device=x.device).triu(first + 1)
        attended, _ = self.attention(queries, keys, keys, attn_mask=blocked, need_weights=False)
        out = queries + attended  # (B, S, hidden)
        out = out + self.mlp(out)
        return self.classifier(self.norm(out))  # (B, S, hidden) -> (B, S, C)
