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

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rulstm.models.baselines import (
    AttentiveProbe,
    LSTMBaseline,
    TCNBaseline,
    TransformerBaseline,
)

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


BaselineEncoder = Literal["lstm", "tcn", "transformer", "probe"]
_ENCODERS: dict[str, type[nn.Module]] = {
    "lstm": LSTMBaseline,
    "tcn": TCNBaseline,
    "transformer": TransformerBaseline,
    "probe": AttentiveProbe,
}


class LTABaseline(nn.Module):
    """An existing next-action baseline with an LTA head: Z x (verb, noun) outputs at once.

    The baseline (:mod:`rulstm.models.baselines`) reads the observed steps and its output at the
    last step (``Z * (V + N)`` logits) is split into the Z future actions' verb and noun logits.
    There is no unrolling: every future action is read off the same summary (as the official
    baseline's Z independent heads).

    Args:
        num_verbs, num_nouns, feat_dim, num_future_actions: as :class:`RULSTMForecaster`.
        encoder: ``lstm``, ``tcn``, ``transformer`` (the baselines of the same names) or
            ``probe`` (:class:`~rulstm.models.baselines.AttentiveProbe`).
        hidden: the encoder's hidden size.
        dropout: the encoder's dropout.
        encoder_args: other arguments of the encoder (e.g. ``{"heads": 2}``, ``{"levels": 3}``).
    """

    def __init__(
        self,
        *,
        num_verbs: int,
        num_nouns: int,
        feat_dim: int,
        num_future_actions: int = 20,
        encoder: BaselineEncoder = "lstm",
        hidden: int = 512,
        dropout: float = 0.5,
        encoder_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if encoder not in _ENCODERS:
            raise ValueError(f"encoder must be one of {sorted(_ENCODERS)}, got {encoder!r}")
        if min(num_verbs, num_nouns, num_future_actions) < 1:
            raise ValueError(
                f"num_verbs, num_nouns and num_future_actions must be >= 1, got {num_verbs=}, "
                f"{num_nouns=}, {num_future_actions=}"
            )
        self.num_verbs, self.num_nouns = num_verbs, num_nouns
        self.feat_dim, self.hidden = feat_dim, hidden
        self.num_future_actions = num_future_actions
        self.encoder_name = encoder
        self.encoder = _ENCODERS[encoder](
            num_classes=num_future_actions * (num_verbs + num_nouns),
            feat_dim=feat_dim,
            hidden=hidden,
            dropout=dropout,
            **dict(encoder_args or {}),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Verb logits (B, Z, V) and noun logits (B, Z, N) from features (B, T, D)."""
        last = self.encoder(x, last_steps=1)[:, -1]  # (B, 1, Z*(V+N)) -> (B, Z*(V+N))
        logits = last.view(len(x), self.num_future_actions, self.num_verbs + self.num_nouns)
        return logits[..., : self.num_verbs], logits[..., self.num_verbs :]


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
