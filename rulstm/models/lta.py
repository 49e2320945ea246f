"""A rolling-unrolling forecaster of the next Z actions (Ego4D long-term anticipation).

Shapes: ``B`` batch, ``T`` observed feature steps (N observed actions x S steps each), ``D``
feature size, ``H`` hidden size, ``L`` layers, ``Z`` future actions, ``V``/``N`` verb/noun
classes, ``K`` sampled sequences.

As in a RU-LSTM branch (:class:`rulstm.models.RULSTM`, whose attribute names and cells this
reuses), the *rolling* LSTM reads the observed steps ``x_0 .. x_{T-1}`` (past only) and the
*unrolling* LSTM starts from its last state and "imagines" the future by reading the last
observation ``x_{T-1}`` again. Here the unrolling runs Z steps and every step is one future
action: its hidden state is classified by a verb head and a noun head. ``cell="gru"`` is the
RU-GRU variant.

:func:`sample_sequences` draws K sequences per window from the per-step softmax (the official
Ego4D baseline's ``generate``; argmax for K = 1) with one random generator per window, so that
a window's sequences depend only on its seed, not on the batch or the process it lands in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Cell = Literal["lstm", "gru"]


class RULSTMForecaster(nn.Module):
    """Rolling LSTM over the observed steps, unrolling LSTM over Z future actions.

    Args:
        num_verbs: verb classes ``V``.
        num_nouns: noun classes ``N``.
        feat_dim: input feature size ``D``.
        num_future_actions: ``Z``, unrolling steps (one per future action).
        hidden: hidden size ``H`` of both LSTMs.
        dropout: on the input features, before the heads and between layers (``depth > 1``).
        depth: LSTM layers ``L``.
        cell: ``"lstm"`` or ``"gru"`` (RU-GRU).

    Raises:
        ValueError: a size below 1, a dropout outside [0, 1) or an unknown cell.
    """

    def __init__(
        self,
        *,
        num_verbs: int,
        num_nouns: int,
        feat_dim: int,
        num_future_actions: int = 20,
        hidden: int = 1024,
        dropout: float = 0.8,
        depth: int = 1,
        cell: Cell = "lstm",
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if min(num_verbs, num_nouns, feat_dim, num_future_actions, hidden, depth) < 1:
            raise ValueError(
                "num_verbs, num_nouns, feat_dim, num_future_actions, hidden and depth must be "
                f">= 1, got {num_verbs=}, {num_nouns=}, {feat_dim=}, {num_future_actions=}, "
                f"{hidden=}, {depth=}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_verbs, self.num_nouns = num_verbs, num_nouns
        self.feat_dim, self.hidden, self.depth = feat_dim, hidden, depth
        self.num_future_actions = num_future_actions
        self.cell: Cell = cell
        self.dropout = dropout
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        between = dropout if depth > 1 else 0.0
        self.input_dropout = nn.Dropout(dropout)
        self.rolling_lstm = rnn(feat_dim, hidden, num_layers=depth, dropout=between)
        self.unrolling_lstm = rnn(feat_dim, hidden, num_layers=depth, dropout=between)
        self.head_dropout = nn.Dropout(dropout)
        self.verb_head = nn.Linear(hidden, num_verbs)
        self.noun_head = nn.Linear(hidden, num_nouns)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Verb and noun logits for each of the Z future actions.

        Args:
            x: observed features (B, T, D), oldest first.

        Returns:
            verb logits (B, Z, V) and noun logits (B, Z, N).
        """
        if x.dim() != 3 or x.shape[-1] != self.feat_dim or x.shape[1] < 1:
            raise ValueError(
                f"expected features of shape (batch, steps >= 1, {self.feat_dim}), "
                f"got {tuple(x.shape)}"
            )
        steps = self.input_dropout(x).transpose(0, 1)  # (B, T, D) -> (T, B, D)
        _, state = self.rolling_lstm(steps)  # (L, B, H) [x2 for an LSTM]
        # The unrolling LSTM re-reads the last observation once per future action.
        future = steps[-1:].expand(self.num_future_actions, -1, -1)  # (Z, B, D)
        outputs, _ = self.unrolling_lstm(future, state)  # (Z, B, H)
        outputs = self.head_dropout(outputs.transpose(0, 1))  # (B, Z, H)
        return self.verb_head(outputs), self.noun_head(outputs)


def sample_sequences(logits: Tensor, k: int, seeds: Sequence[int] | None = None) -> Tensor:
    """K label sequences per row: sampled from each step's softmax, or the argmax for K = 1.

    Args:
        logits: (B, Z, C).
        k: sequences per row (>= 1).
        seeds: one seed per row (its own ``torch.Generator``, so a row's samples do not depend
            on its batch); ``None`` uses the global generator.

    Returns:
        int64 (B, K, Z).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k == 1:
        return logits.argmax(dim=-1).unsqueeze(1)  # (B, Z) -> (B, 1, Z)
    probs = torch.softmax(logits.detach().float(), dim=-1).cpu()  # (B, Z, C)
    b, z, c = probs.shape
    if seeds is None:
        draws = torch.multinomial(probs.reshape(b * z, c), k, replacement=True)  # (B*Z, K)
        samples = draws.reshape(b, z, k).transpose(1, 2)
    else:
        if len(seeds) != b:
            raise ValueError(f"{len(seeds)} seeds for {b} rows")
        rows = []
        for row, seed in zip(probs, seeds):
            generator = torch.Generator().manual_seed(int(seed))
            draws = torch.multinomial(row, k, replacement=True, generator=generator)  # (Z, K)
            rows.append(draws.transpose(0, 1))
        samples = torch.stack(rows)  # (B, K, Z)
    return samples.to(logits.device)
