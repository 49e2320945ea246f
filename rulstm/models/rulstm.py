"""Rolling-Unrolling LSTMs (Furnari & Farinella, ICCV 2019 / TPAMI 2020).

Shapes: ``B`` batch, ``T`` observed time steps, ``D`` feature size, ``H`` hidden size,
``C`` classes, ``M`` modalities, ``L`` LSTM layers (``depth``), ``S`` time steps whose
outputs are computed (``last_steps``, default ``T``).

A branch (:class:`RULSTM`) has two LSTMs:

* the *rolling* LSTM reads the observed features ``x_0 .. x_{T-1}`` one step at a time and
  summarises the past in its state ``(h_t, c_t)``;
* at every step ``t`` the *unrolling* LSTM starts from the rolling state ``(h_t, c_t)`` and
  "imagines" the future by reading ``x_t`` again ``T - t + 1`` times (one step per remaining
  anticipation time step, plus one); its last hidden state is classified.

In *sequence completion* pre-training the unrolling LSTM instead reads the true future
``x_t .. x_{T-1}`` (``T - t`` steps).

The reference implementation runs the ``T`` unrollings one after the other (``T`` rolling
steps plus ``sum(T - t + 1)`` unrolling steps, 119 sequential LSTM steps for ``T = 14``).
The default ``unroll="parallel"`` path gives the same outputs much faster:

* in normal mode the unrolling input at step ``t`` is the constant ``x_t``, so its input
  projection ``W_ih x_t + b`` is computed once instead of once per repeat;
* all unrollings run together as one batch of ``S * B`` sequences ordered by decreasing
  length, so the still-running sequences are always a prefix of the batch: the batch shrinks
  at every step and each sequence's final state is read at its own length;
* only the ``last_steps`` unrollings whose outputs are used are computed at all.

:class:`RULSTMFusion` fuses several branches (one per modality) with the Modality ATTention
(MATT) network, or by averaging their scores (late fusion).

Parameter names are a contract with the checkpoint importer: ``rolling_lstm`` and
``unrolling_lstm`` are standard :class:`torch.nn.LSTM` modules (``weight_ih_l0``, ...),
``classifier.1`` is the linear classifier and ``attention.{0,3,6}`` are MATT's linear layers.

``cell="gru"`` (RU-GRU, a baseline from the course material) uses :class:`torch.nn.GRU` for both
networks under the same attribute names. A GRU has no cell state, so its state is carried as
``(h, h)``: the unrolling starts from the rolling hidden state, and the MATT context is the two
hidden states (unrolling ``h``, rolling ``h_t``).

Under CPU bf16 autocast on a CPU without native bf16 (no oneDNN bf16 LSTM/GRU kernel), the
``nn.LSTM`` / ``nn.GRU`` calls of ``unroll="sequential"`` run in float32
(:func:`rulstm.models.recurrent.run_recurrent`); the fast path's own cells need no kernel.

The whole model is kept in this one file on purpose (like nanoGPT's ``model.py``): a reader sees
the rolling, unrolling, fast path and fusion side by side, which is why it exceeds 600 lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rulstm.models.recurrent import run_recurrent

UnrollMode = Literal["parallel", "sequential"]
FusionMode = Literal["matt", "average"]
Cell = Literal["lstm", "gru"]
LSTMState = tuple[Tensor, Tensor]  # (h, c), each (L, B, H); (h, h) for a GRU


def _lstm_cell(
    input_gates: Tensor, state: LSTMState | None, weight_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """One LSTM step from precomputed input gates ``W_ih x + b_ih + b_hh``: (N, 4H).

    ``state`` is ``(h, c)``, each (N, H), or ``None`` for the zero state (which skips the
    recurrent matrix product). Gate order is PyTorch's (input, forget, cell, output), so the
    weights are those of :class:`torch.nn.LSTM`. Returns ``h`` in the dtype of the gates
    (bf16 under bf16 autocast) and ``c`` in float32.
    """
    # addmm fuses input_gates + h @ W_hh^T into one BLAS call without a temporary.
    gates = input_gates if state is None else torch.addmm(input_gates, state[0], weight_hh.t())
    # Under bf16/fp16 autocast (or with low-precision weights) the matrix products run in low
    # precision, but the cell state, which accumulates over every step, stays fp32; the
    # hidden state is only ever a matrix-product input, so it keeps the products' dtype.
    low_dtype = gates.dtype
    gates = gates.float()
    in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=1)  # 4 x (N, H)
    cell = torch.sigmoid(in_gate) * torch.tanh(cell_gate)
    if state is not None:
        cell = torch.sigmoid(forget_gate) * state[1].float() + cell
    hidden = torch.sigmoid(out_gate) * torch.tanh(cell)
    return hidden.to(low_dtype), cell


def _gru_cell(
    input_gates: Tensor, state: LSTMState | None, weight_hh: Tensor, bias_hn: Tensor
) -> tuple[Tensor, Tensor]:
    """One GRU step (PyTorch's equations and gate order: reset, update, new).

    ``input_gates`` (N, 3H) is ``W_ih x + b_ih`` plus the recurrent biases of the reset and
    update gates; ``bias_hn`` (H,) is the recurrent bias of the new gate, which the reset gate
    multiplies and so cannot be folded in. Returns ``(h, h)`` (a GRU has no cell state).
    """
    size = bias_hn.shape[0]
    if state is None:
        recurrent = bias_hn.new_zeros(1, 3 * size)  # h = 0: only the biases remain
        previous = None
    else:
        recurrent = state[0] @ weight_hh.t()  # (N, 3H)
        previous = state[0]
    reset, update = torch.sigmoid(input_gates[:, : 2 * size] + recurrent[:, : 2 * size]).chunk(2, 1)
    new = torch.tanh(input_gates[:, 2 * size :] + reset * (recurrent[:, 2 * size :] + bias_hn))
    hidden = (1 - update) * new if previous is None else new + update * (previous - new)
    return hidden, hidden


def _layer_weights(
    rnn: nn.LSTM | nn.GRU, layer: int
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(W_ih, W_hh, input bias, GRU new-gate recurrent bias or None) of one layer.

    LSTM: the input bias is ``b_ih + b_hh``. GRU: ``b_ih`` plus the reset/update part of
    ``b_hh`` (see :func:`_gru_cell`)."""
    weight_ih = getattr(rnn, f"weight_ih_l{layer}")
    weight_hh = getattr(rnn, f"weight_hh_l{layer}")
    bias_ih, bias_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
    if isinstance(rnn, nn.GRU):
        size = weight_hh.shape[1]
        folded = torch.cat([bias_hh[: 2 * size], bias_hh.new_zeros(size)])  # (3H,)
        return weight_ih, weight_hh, bias_ih + folded, bias_hh[2 * size :]
    return weight_ih, weight_hh, bias_ih + bias_hh, None


def _packed(rnn: nn.Module) -> bool:
    """A recurrent layer whose weights are not plain tensors (PyTorch's dynamic int8
    quantisation packs them): it is stepped by calling it, not by hand."""
    return not hasattr(rnn, "weight_ih_l0")


def _cell_step(
    input_gates: Tensor, state: LSTMState | None, weight_hh: Tensor, bias_hn: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One LSTM step, or one GRU step when the layer has a new-gate bias (GRU)."""
    if bias_hn is None:
        return _lstm_cell(input_gates, state, weight_hh)
    return _gru_cell(input_gates, state, weight_hh, bias_hn)


def _last_rows(step_values: list[Tensor], sizes: list[int]) -> Tensor:
    """Each row's value at the last step it was active.

    ``step_values[k]`` holds the ``sizes[k]`` rows active at step ``k`` (a prefix of the
    batch, ``sizes`` non-increasing). Rows ``sizes[k+1]:sizes[k]`` finish at step ``k``.
    Returns (sizes[0], ...) in the original row order.
    """
    finished = []
    for step, size in enumerate(sizes):
        next_size = sizes[step + 1] if step + 1 < len(sizes) else 0
        if next_size < size:
            finished.append(step_values[step][next_size:size])
    # Later rows finish first, so the chunks were collected from the end of the batch.
    return torch.cat(finished[::-1], dim=0)


class RULSTM(nn.Module):
    """One Rolling-Unrolling LSTM branch (one modality).

    Args:
        num_classes: number of output classes ``C``.
        feat_dim: input feature size ``D``.
        hidden: hidden size ``H`` of both LSTMs.
        dropout: dropout on the input features, before the classifier and (if ``depth > 1``)
            between LSTM layers, as in the reference.
        depth: number of LSTM layers ``L``.
        unroll: ``"parallel"`` (default, fast: all unrollings batched together) or
            ``"sequential"`` (the reference's structure: one ``nn.LSTM`` call per time step;
            slow, kept as a readable cross-check). Both give the same outputs in eval mode.
            Stored as the attribute ``unroll_mode``, which may be changed after construction.
        cell: ``"lstm"`` (RU-LSTM, the reference) or ``"gru"`` (RU-GRU: both networks are GRUs;
            the context for fusion is then the unrolling and rolling hidden states).

    Training-mode dropout: the reference samples a fresh dropout mask for every repeated copy
    of ``x_t`` fed to the unrolling LSTM (and, in sequence completion, for every unrolling's
    copy of the future). The parallel path projects each ``x_t`` once, so all repeats of
    ``x_t`` share one mask (still independent of the rolling LSTM's mask). The two paths
    therefore differ in training mode only in which random masks are drawn.

    Online (streaming) use: :meth:`roll` advances the rolling state by one observation and
    :meth:`unroll` makes a prediction from a state; ``forward`` is equivalent to calling
    ``roll`` on ``x[:, 0..t]`` and then ``unroll(x[:, t], state, T - t + 1)`` for every ``t``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        feat_dim: int,
        hidden: int = 1024,
        dropout: float = 0.8,
        depth: int = 1,
        unroll: UnrollMode = "parallel",
        cell: Cell = "lstm",
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if min(num_classes, feat_dim, hidden, depth) < 1:
            raise ValueError(
                "num_classes, feat_dim, hidden and depth must be >= 1, got "
                f"{num_classes=}, {feat_dim=}, {hidden=}, {depth=}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if unroll not in ("parallel", "sequential"):
            raise ValueError(f"unroll must be 'parallel' or 'sequential', got {unroll!r}")
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.hidden = hidden
        self.depth = depth
        self.cell: Cell = cell
        self.unroll_mode: UnrollMode = unroll
        # nn.LSTM warns about (and ignores) inter-layer dropout with a single layer.
        self.lstm_dropout = dropout if depth > 1 else 0.0

        self.input_dropout = nn.Dropout(dropout)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rolling_lstm = rnn(feat_dim, hidden, num_layers=depth, dropout=self.lstm_dropout)
        self.unrolling_lstm = rnn(feat_dim, hidden, num_layers=depth, dropout=self.lstm_dropout)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    @staticmethod
    def unrolling_lengths(num_steps: int, sequence_completion: bool = False) -> list[int]:
        """Number of unrolling LSTM steps for each of the ``num_steps`` time steps.

        Normal mode: ``T - t + 1`` (the reference re-reads ``x_t`` once more than the number
        of remaining steps); sequence completion: ``T - t`` (the true future ``x[t:]``).

        >>> RULSTM.unrolling_lengths(4)
        [5, 4, 3, 2]
        >>> RULSTM.unrolling_lengths(4, sequence_completion=True)
        [4, 3, 2, 1]
        """
        extra = 0 if sequence_completion else 1
        return [num_steps - t + extra for t in range(num_steps)]

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x: Tensor,
        *,
        sequence_completion: bool = False,
        return_context: bool = False,
        last_steps: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Scores at every (or every one of the last ``last_steps``) observed time step.

        Args:
            x: features (B, T, D), oldest first.
            sequence_completion: unroll over the true future ``x[t:]`` (pre-training).
            return_context: also return the MATT context: the unrolling LSTM's last hidden
                state and the rolling LSTM's cell state at ``t`` (last layer of each).
            last_steps: compute only the outputs of the last ``last_steps`` time steps
                (identical to the corresponding full outputs).

        Returns:
            logits (B, S, C), and with ``return_context`` also the context (B, S, 2H).
        """
        first = self._first_step(x, last_steps)
        if self.unroll_mode == "parallel":
            unrolled, rolling_cell = self._forward_parallel(x, sequence_completion, first)
        else:
            unrolled, rolling_cell = self._forward_sequential(x, sequence_completion, first)
        logits = self.classifier(unrolled)  # (B, S, H) -> (B, S, C)
        if return_context:
            return logits, torch.cat([unrolled, rolling_cell], dim=-1)  # (B, S, 2H)
        return logits

    def _first_step(self, x: Tensor, last_steps: int | None) -> int:
        """Validate the input and return the first time step whose output is computed."""
        self._check_features(x, over_time=True)
        num_steps = x.shape[1]
        if num_steps < 1 or x.shape[0] < 1:
            raise ValueError(f"empty input of shape {tuple(x.shape)}")
        if last_steps is None:
            return 0
        if not 1 <= last_steps <= num_steps:
            raise ValueError(f"last_steps must be in [1, {num_steps}], got {last_steps}")
        return num_steps - last_steps

    def _forward_parallel(
        self, x: Tensor, sequence_completion: bool, first: int
    ) -> tuple[Tensor, Tensor]:
        """Unrolled hidden states (B, S, H) and rolling cell states (B, S, H), batched."""
        batch, num_steps, _ = x.shape
        kept = num_steps - first
        steps = x.transpose(0, 1)  # (B, T, D) -> (T, B, D)
        rolling_h, rolling_c = self._rolling_states(self.input_dropout(steps))  # (L, T, B, H)

        # Unrolling t starts from the rolling state at t; sequences are ordered t-major, so
        # row t' * B + b is unrolling first + t' of sample b.
        start = (
            rolling_h[:, first:].reshape(self.depth, kept * batch, self.hidden),  # (L, S*B, H)
            rolling_c[:, first:].reshape(self.depth, kept * batch, self.hidden),
        )
        lengths = self.unrolling_lengths(num_steps, sequence_completion)[first:]
        # Both modes read only x[first:]; one dropout mask per (t, b), shared by all repeats.
        unrolled = self._unroll_batched(
            self.input_dropout(steps[first:]), start, lengths, sequence_completion
        )  # (S*B, H)
        unrolled = unrolled.view(kept, batch, self.hidden).transpose(0, 1)  # -> (B, S, H)
        return unrolled, rolling_c[-1, first:].transpose(0, 1)  # (S, B, H) -> (B, S, H)

    def _rolling_states(self, steps: Tensor) -> tuple[Tensor, Tensor]:
        """Run the rolling LSTM over (T, B, D) inputs from the zero state.

        Returns the hidden and cell states after every step, each (L, T, B, H): nn.LSTM only
        returns the last cell state, so the layers are stepped by hand with its weights.
        """
        weight_ih, _, bias, _ = _layer_weights(self.rolling_lstm, 0)
        # The input projection of all T steps is one matrix product.
        input_gates = F.linear(steps, weight_ih, bias)  # (T, B, 4H) (GRU: 3H)
        layers = self._step_layers(self.rolling_lstm, list(input_gates), None)
        all_h = [torch.stack(hs) for hs, _ in layers]  # L x (T, B, H)
        all_c = [torch.stack(cs) for _, cs in layers]
        return torch.stack(all_h), torch.stack(all_c)  # (L, T, B, H)

    def _unroll_batched(
        self,
        inputs: Tensor,
        start: LSTMState,
        lengths: list[int],
        sequence_completion: bool,
    ) -> Tensor:
        """Run S unrollings of B sequences each as one batch of S * B sequences.

        Args:
            inputs: (S, B, D) unrolling inputs, ``inputs[j]`` being ``x_{first + j}``.
            start: initial ``(h, c)``, each (L, S*B, H), rows ordered t-major.
            lengths: unrolling length of each of the S time steps, non-increasing.
            sequence_completion: sequence ``j`` reads ``inputs[j + k]`` at its step ``k``
                (else always ``inputs[j]``).

        Returns:
            the last layer's hidden state of every sequence at its own last step: (S*B, H).
        """
        num_seqs, batch, _ = inputs.shape
        if any(a < b for a, b in zip(lengths, lengths[1:])):
            raise ValueError(f"unrolling lengths must be non-increasing, got {lengths}")
        # Active rows at step k: the sequences longer than k, a prefix since t-major rows
        # are sorted by decreasing length.
        sizes = [batch * sum(length > k for length in lengths) for k in range(lengths[0])]

        weight_ih, _, bias, _ = _layer_weights(self.unrolling_lstm, 0)
        gates = F.linear(inputs, weight_ih, bias)  # (S, B, D) -> (S, B, 4H), once per x_t
        if sequence_completion:
            if lengths != list(range(num_seqs, 0, -1)):
                raise ValueError(f"sequence completion needs lengths S..1, got {lengths}")
            # At step k, sequences j < S - k are active and read x_{first + j + k}.
            step_gates = [gates[k:].flatten(0, 1) for k in range(len(sizes))]  # (S-k)*B, 4H
        else:
            flat_gates = gates.flatten(0, 1)  # (S, B, 4H) -> (S*B, 4H)
            step_gates = [flat_gates[:size] for size in sizes]

        outputs, _ = self._step_layers(self.unrolling_lstm, step_gates, start)[-1]
        return _last_rows(outputs, sizes)

    def _forward_sequential(
        self, x: Tensor, sequence_completion: bool, first: int
    ) -> tuple[Tensor, Tensor]:
        """The reference's structure: step the rolling LSTM, then one unrolling per t."""
        batch, num_steps, _ = x.shape
        steps = x.transpose(0, 1)  # (B, T, D) -> (T, B, D)
        dropped = self.input_dropout(steps)
        state = None
        rolling_states: list[LSTMState] = []
        for t in range(num_steps):
            _, state = run_recurrent(self.rolling_lstm, dropped[t : t + 1], self._rnn_state(state))
            if self.cell == "gru":
                state = (state, state)  # (L, B, H): the GRU hidden state stands in for c
            rolling_states.append(state)  # (L, B, H) x 2

        unrolled = []
        for t in range(first, num_steps):
            if sequence_completion:
                future = steps[t:]  # (T-t, B, D)
            else:
                future = steps[t].expand(num_steps - t + 1, batch, self.feat_dim)  # (T-t+1, B, D)
            outputs, _ = run_recurrent(
                self.unrolling_lstm, self.input_dropout(future), self._rnn_state(rolling_states[t])
            )
            unrolled.append(outputs[-1])  # (B, H)
        rolling_cell = [rolling_states[t][1][-1] for t in range(first, num_steps)]
        return torch.stack(unrolled, dim=1), torch.stack(rolling_cell, dim=1)  # (B, S, H)

    def _rnn_state(self, state: LSTMState | None) -> LSTMState | Tensor | None:
        """What nn.LSTM / nn.GRU take as the initial state: ``(h, c)`` or ``h``."""
        if state is None or self.cell == "lstm":
            return state
        return state[0]

    def _step_layers(
        self, rnn: nn.LSTM | nn.GRU, step_gates: list[Tensor], start: LSTMState | None
    ) -> list[tuple[list[Tensor], list[Tensor]]]:
        """Step the stacked layers of ``rnn`` (the rolling or the unrolling network) over
        consecutive steps, layer by layer: the one loop every path runs.

        Args:
            step_gates: the first layer's input gates at each step, ``W_ih x + b`` (N_k, 4H)
                (GRU: 3H), N_k non-increasing: rows ``N_k:`` have finished before step k (the
                active rows stay a prefix).
            start: the initial ``(h, c)``, each (L, N_0, H), or ``None`` for the zero state.

        Returns:
            for every layer, its hidden and cell states after every step: L x (K x (N_k, H),
            K x (N_k, H)). Each layer above the first reads the one below through the
            between-layers dropout, projected for all steps at once.
        """
        sizes = [gates.shape[0] for gates in step_gates]
        layers: list[tuple[list[Tensor], list[Tensor]]] = []
        for layer in range(self.depth):
            weight_ih, weight_hh, bias, bias_hn = _layer_weights(rnn, layer)
            if layer > 0:
                # Packed outputs of the layer below: one projection for all steps.
                below = torch.cat(layers[-1][0])  # (sum N_k, H)
                packed = F.dropout(below, self.lstm_dropout, self.training)
                step_gates = list(F.linear(packed, weight_ih, bias).split(sizes))
            state = None if start is None else (start[0][layer], start[1][layer])  # (N_0, H)
            hs, cs = [], []
            for gates, size in zip(step_gates, sizes, strict=True):
                if state is not None and size < state[0].shape[0]:  # drop finished rows
                    state = (state[0][:size], state[1][:size])
                state = _cell_step(gates, state, weight_hh, bias_hn)  # (size, H) x 2
                hs.append(state[0])
                cs.append(state[1])
            layers.append((hs, cs))
        return layers

    def _check_features(self, x: Tensor, *, over_time: bool) -> None:
        """The one input-shape check: a sequence (B, T, D) for :meth:`forward`
        (``over_time``), one observation ``x_t`` (B, D) for the online methods."""
        shape = f"(batch, time, {self.feat_dim})" if over_time else f"(batch, {self.feat_dim})"
        if x.dim() != (3 if over_time else 2) or x.shape[-1] != self.feat_dim:
            name = "features" if over_time else "x_t"
            raise ValueError(f"expected {name} of shape {shape}, got {tuple(x.shape)}")

    # ------------------------------------------------------------------ online use

    def roll(self, x_t: Tensor, state: LSTMState | None = None) -> LSTMState:
        """Advance the rolling LSTM by one observation.

        Args:
            x_t: features of the new observation (B, D).
            state: ``(h, c)`` each (L, B, H) after the previous observations, or ``None``
                before the first one.

        Returns:
            the new ``(h, c)``, each (L, B, H).
        """
        self._check_features(x_t, over_time=False)
        if _packed(self.rolling_lstm):  # one step of the layer itself, from ``state``
            inputs = self.input_dropout(x_t).unsqueeze(0)  # (B, D) -> (1, B, D)
            _, new = run_recurrent(self.rolling_lstm, inputs, self._rnn_state(state))
            return new if self.cell == "lstm" else (new, new)  # (h, c), each (L, B, H)
        weight_ih, _, bias, _ = _layer_weights(self.rolling_lstm, 0)
        input_gates = F.linear(self.input_dropout(x_t), weight_ih, bias)  # (B, 4H) (GRU: 3H)
        layers = self._step_layers(self.rolling_lstm, [input_gates], state)
        new_h = [hs[0] for hs, _ in layers]  # L x (B, H)
        new_c = [cs[0] for _, cs in layers]
        return torch.stack(new_h), torch.stack(new_c)  # (L, B, H)

    def unroll(
        self, x_t: Tensor, state: LSTMState, num_steps: int, *, return_context: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict from a rolling state by unrolling ``num_steps`` steps on ``x_t``.

        ``num_steps`` is ``T - t + 1`` to reproduce ``forward``'s output at step ``t`` of a
        ``T``-step sequence (i.e. the number of anticipation steps still to come, plus one).

        Args:
            x_t: features of the current observation (B, D).
            state: rolling ``(h, c)`` after observing ``x_t``, each (L, B, H) (from :meth:`roll`).
            num_steps: number of unrolling steps (>= 1).
            return_context: also return the MATT context (B, 2H).

        Returns:
            logits (B, C), and with ``return_context`` also the context (B, 2H).
        """
        self._check_features(x_t, over_time=False)
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        inputs = self.input_dropout(x_t).unsqueeze(0)  # (B, D) -> (1, B, D)
        unrolled = self._unroll_batched(inputs, state, [num_steps], sequence_completion=False)
        logits = self.classifier(unrolled)  # (B, H) -> (B, C)
        if return_context:
            return logits, torch.cat([unrolled, state[1][-1]], dim=-1)  # (B, 2H)
        return logits

    def unroll_horizons(
        self,
        x_t: Tensor,
        state: LSTMState,
        num_steps: Sequence[int],
        *,
        return_context: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """:meth:`unroll` for several lengths at once, from the same state and input.

        The input is the constant ``x_t``, so one unrolling of ``max(num_steps)`` steps passes
        through every shorter one: its hidden state after ``n`` steps is the ``n``-step
        prediction. Costs ``max(num_steps)`` LSTM steps instead of ``sum(num_steps)``. For the
        online anticipator (eval mode; in training mode the lengths share dropout masks).

        Returns:
            logits (B, K, C) for K = ``len(num_steps)``, and with ``return_context`` also the
            MATT contexts (B, K, 2H).
        """
        self._check_features(x_t, over_time=False)
        if not num_steps or min(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {list(num_steps)}")
        steps = max(num_steps)
        if _packed(self.unrolling_lstm):  # the layer itself, on the repeated x_t
            repeats = self.input_dropout(x_t).unsqueeze(0).expand(steps, -1, -1).contiguous()
            outputs, _ = run_recurrent(self.unrolling_lstm, repeats, self._rnn_state(state))
            hidden = outputs[[n - 1 for n in num_steps]].transpose(0, 1)  # (N, B, H) -> (B, K, H)
        else:
            weight_ih, _, bias, _ = _layer_weights(self.unrolling_lstm, 0)
            first_gates = F.linear(self.input_dropout(x_t), weight_ih, bias)  # once: x_t constant
            last_layer, _ = self._step_layers(self.unrolling_lstm, [first_gates] * steps, state)[-1]
            # The hidden state after n steps is the n-step prediction.
            hidden = torch.stack([last_layer[n - 1] for n in num_steps], dim=1)  # (B, K, H)
        logits = self.classifier(hidden)  # (B, K, C)
        if not return_context:
            return logits
        rolling_cell = state[1][-1].unsqueeze(1).expand_as(hidden)  # (B, H) -> (B, K, H)
        return logits, torch.cat([hidden, rolling_cell], dim=-1)  # (B, K, 2H)


class RULSTMFusion(nn.Module):
    """Several :class:`RULSTM` branches fused by Modality ATTention (MATT) or averaging.

    Args:
        num_classes: number of classes ``C`` (shared by all branches).
        feat_dims: feature size of each modality, in fusion order, e.g.
            ``{"rgb": 1024, "flow": 1024, "obj": 352}``.
        hidden: hidden size ``H_m`` of every branch (one ``int``), or per modality (a mapping
            naming exactly the modalities of ``feat_dims``, e.g. an RGB branch on 768-d
            features with hidden 768 next to 1024-d flow and object branches).
        depth, cell: of every branch (see :class:`RULSTM`).
        dropout: of every branch and of the MATT network.
        fusion: ``"matt"``: an MLP on the branches' contexts gives softmax weights over the
            modalities at every time step; ``"average"``: late fusion, the mean of the
            branches' scores (uniform weights, no parameters).

    MATT reads the concatenated contexts, ``2 * sum(H_m)`` values per step; its layers have
    ``in_size // 4`` and ``in_size // 8`` units (the reference's sizes when every ``H_m`` is
    the same). :attr:`hidden` is that one ``int`` when all branches share it, else
    ``{modality: H_m}``; :attr:`branch_hidden` is always the mapping.

    Raises:
        ValueError: no modality, a ``hidden`` mapping that does not name exactly the
            modalities of ``feat_dims``, or an unknown ``fusion``.

    Use :meth:`from_branches` to fuse already-trained branches.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        feat_dims: Mapping[str, int],
        hidden: int | Mapping[str, int] = 1024,
        dropout: float = 0.8,
        depth: int = 1,
        fusion: FusionMode = "matt",
        cell: Cell = "lstm",
    ) -> None:
        super().__init__()
        if not feat_dims:
            raise ValueError("feat_dims must name at least one modality")
        if isinstance(hidden, Mapping):
            missing = [name for name in feat_dims if name not in hidden]
            extra = [name for name in hidden if name not in feat_dims]
            if missing or extra:
                raise ValueError(
                    f"hidden must name exactly the modalities {list(feat_dims)}: "
                    f"missing {missing}, unexpected {extra}"
                )
            sizes = {name: hidden[name] for name in feat_dims}
        else:
            sizes = dict.fromkeys(feat_dims, hidden)
        branches = {
            name: RULSTM(
                num_classes=num_classes,
                feat_dim=dim,
                hidden=sizes[name],
                dropout=dropout,
                depth=depth,
                cell=cell,
            )
            for name, dim in feat_dims.items()
        }
        self._build(branches, dropout=dropout, fusion=fusion)

    @classmethod
    def from_branches(
        cls, branches: Mapping[str, RULSTM], *, dropout: float = 0.8, fusion: FusionMode = "matt"
    ) -> RULSTMFusion:
        """Fuse existing branches (e.g. trained separately), in the order of ``branches``.

        The branches are used as they are (not copied); they must share ``num_classes``; their
        hidden sizes may differ. ``dropout`` is MATT's.
        """
        if not branches:
            raise ValueError("branches must contain at least one RULSTM")
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused._build(dict(branches), dropout=dropout, fusion=fusion)
        return fused

    def _build(self, branches: dict[str, RULSTM], *, dropout: float, fusion: FusionMode) -> None:
        if fusion not in ("matt", "average"):
            raise ValueError(f"fusion must be 'matt' or 'average', got {fusion!r}")
        first = next(iter(branches.values()))
        for name, branch in branches.items():
            if not isinstance(branch, RULSTM):
                raise TypeError(f"branch {name!r} is a {type(branch).__name__}, not a RULSTM")
            if branch.num_classes != first.num_classes:
                raise ValueError(
                    f"branch {name!r} has num_classes={branch.num_classes}; expected "
                    f"{first.num_classes} like the first branch"
                )
        self.fusion: FusionMode = fusion
        self.num_classes = first.num_classes
        self.branch_hidden: dict[str, int] = {name: b.hidden for name, b in branches.items()}
        sizes = set(self.branch_hidden.values())
        # One int when the branches agree (as before), else {modality: H_m}.
        self.hidden: int | dict[str, int] = (
            next(iter(sizes)) if len(sizes) == 1 else dict(self.branch_hidden)
        )
        self.branches = nn.ModuleDict(branches)
        self.attention: nn.Sequential | None = None
        if fusion == "matt":
            # Context: (unrolled hidden, rolling cell or GRU hidden) of every branch, concatenated:
            # M x (..., 2H_m) -> (..., 2 * sum(H_m)); equal H gives the reference's 2*M*H.
            in_size = 2 * sum(self.branch_hidden.values())
            self.attention = nn.Sequential(
                nn.Linear(in_size, in_size // 4),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(in_size // 4, in_size // 8),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(in_size // 8, len(branches)),
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in fusion order (the order of the weights' last dimension)."""
        return tuple(self.branches.keys())

    def forward(
        self,
        x: Mapping[str, Tensor],
        *,
        sequence_completion: bool = False,
        last_steps: int | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Fused scores.

        Args:
            x: features of every modality, ``{name: (B, T, D_m)}`` with the same B and T.
            sequence_completion, last_steps: passed to every branch (see :meth:`RULSTM.forward`).
            return_weights: also return the fusion weights.

        Returns:
            logits (B, S, C), and with ``return_weights`` also the weights (B, S, M), which
            sum to 1 over the modalities (in :attr:`modalities` order).
        """
        self._check_inputs(x)
        scores, contexts = [], []
        for name, branch in self.branches.items():
            branch_scores, context = branch(
                x[name],
                sequence_completion=sequence_completion,
                return_context=True,
                last_steps=last_steps,
            )
            scores.append(branch_scores)  # (B, S, C)
            contexts.append(context)  # (B, S, 2H_m)
        fused, weights = self.combine(scores, contexts)
        if return_weights:
            return fused, weights
        return fused

    def combine(self, scores: list[Tensor], contexts: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Fuse per-branch scores (..., C) given their contexts (..., 2H_m), in branch order.

        Returns the fused scores (..., C) and the modality weights (..., M). ``forward`` uses
        it on (B, S, ...) tensors; the online anticipator on (K, ...) per-time tensors.
        """
        stacked = torch.stack(scores, dim=-1)  # M x (..., C) -> (..., C, M)
        if self.attention is None:
            weights = stacked.new_full(
                (*stacked.shape[:-2], len(scores)), 1.0 / len(scores)
            )  # (..., M)
        else:
            joined = torch.cat(contexts, dim=-1)  # M x (..., 2H_m) -> (..., 2 * sum(H_m))
            weights = self.attention(joined).softmax(dim=-1)  # (..., M)
        fused = (stacked * weights.unsqueeze(-2)).sum(-1)  # (..., C, M) -> (..., C)
        return fused, weights

    def _check_inputs(self, x: Mapping[str, Tensor]) -> None:
        expected = set(self.branches.keys())
        missing = [name for name in self.branches if name not in x]
        if missing:
            raise KeyError(
                f"missing features for modality {missing} (the model fuses {list(self.branches)})"
            )
        extra = [name for name in x if name not in expected]
        if extra:
            raise KeyError(f"unexpected modality {extra} (the model fuses {list(self.branches)})")
        shapes = {name: tuple(x[name].shape[:2]) for name in self.branches}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"all modalities need the same (batch, time) size, got {shapes}")
