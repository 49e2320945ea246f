"""Streaming (online) anticipation with a trained RU-LSTM branch or MATT fusion.

The rolling LSTM is naturally online: every ``alpha`` seconds it consumes one observation and
updates its state; from that state the unrolling LSTM predicts the next action at each
requested anticipation time. Nothing is recomputed over a window: one rolling step and one
unrolling per anticipation time per call.

Equivalence with the offline model: after ``reset()`` and the observations ``x_0 .. x_t`` of a
``T``-step window, the prediction for anticipation time ``(T - t) * alpha`` equals the offline
``net(x)[:, t]`` (an unrolling of ``T - t + 1`` steps), which the tests check. All the
anticipation times share one unrolling (``RULSTM.unroll_horizons``): its state after ``n``
steps is the ``n``-step prediction.

Low-precision weights (``weights=``): a CPU step at the reference sizes is bound by reading
the weights from memory (about 580 MB per fusion step in float32, the unrolling LSTM's
recurrent matrix being read once per unrolling step), so smaller weights are faster:

* ``"bf16"``: a bfloat16 copy of the weights, the step run under bf16 autocast (the LSTM cell
  state stays float32, see ``rulstm.models.rulstm``); half the bytes;
* ``"int8"`` (CPU only): PyTorch's dynamic quantisation (``torch.ao.quantization.
  quantize_dynamic``) of every LSTM and Linear layer: int8 weights (one scale per LSTM weight
  matrix, one per output row of a Linear layer), activations quantised on the fly, float32
  cell state and outputs; a quarter of the bytes.

Both change the scores slightly (tests: top-5 agreement with float32 on random weights);
``scripts/bench_online.py`` prints their latency and agreement side by side.

``"auto"`` picks ``"bf16"`` where the device computes bf16 natively (a GPU with bf16, a CPU
with AVX-512 BF16 or AMX: :mod:`epic_protocol.precision`) and ``"fp32"`` elsewhere: on CPUs
that emulate bf16 a bf16 step is slower, not faster. It is resolved again when
:meth:`OnlineAnticipator.to` moves the network. An explicit ``"bf16"`` on such a CPU warns
once.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from epic_protocol.sampling import anticipation_times, steps_in
from rulstm.models.rulstm import RULSTM, RULSTMFusion

OnlineWeights = Literal["auto", "fp32", "bf16", "int8"]


@dataclass(frozen=True)
class OnlinePrediction:
    """What one :meth:`OnlineAnticipator.step` returns.

    ``probabilities[i]`` is the softmax over actions for an action starting
    ``times[i]`` seconds from now; ``weights[modality][i]`` is that modality's MATT weight
    (``None`` for a single branch).
    """

    step: int
    times: tuple[float, ...]
    logits: torch.Tensor  # (len(times), C)
    probabilities: torch.Tensor  # (len(times), C)
    weights: dict[str, torch.Tensor] | None  # modality -> (len(times),)

    def index_at(self, time: float) -> int:
        """The index into :attr:`times` of the anticipation time nearest ``time`` seconds."""
        return min(range(len(self.times)), key=lambda i: abs(self.times[i] - time))

    def top_k(self, k: int = 5, *, time: float = 1.0) -> list[tuple[int, float]]:
        """``[(action, probability), ...]`` of the ``k`` best actions at ``time`` seconds."""
        index = self.index_at(time)
        values, indices = self.probabilities[index].topk(min(k, self.probabilities.shape[-1]))
        return list(zip(indices.tolist(), values.tolist()))


class OnlineAnticipator:
    """Runs a trained RU-LSTM on a stream of per-modality features, one call every ``alpha``.

    Args:
        net: a :class:`RULSTM` branch or a :class:`RULSTMFusion`.
        modality: the feature key a single branch reads (default: the only key given).
        alpha: seconds between steps (the model's training alpha).
        times: anticipation times in seconds, each a positive multiple of ``alpha``
            (default: 2.0, 1.75, ..., 0.25 for alpha 0.25).
        device: where to run.
        weights: ``"fp32"`` (default, exact), ``"bf16"``, ``"int8"`` (CPU only) or
            ``"auto"`` (bf16 where ``device`` has native bf16, else fp32): the precision of
            the weights the steps run with (see the module docstring); :attr:`weights` holds
            the resolved mode. The low-precision modes work on a copy; ``net`` itself is left
            as it is.

    Raises:
        ValueError: an anticipation time that is not a multiple of ``alpha``, an unknown
            ``weights`` mode, ``"int8"`` on a non-CPU device, or low precision for a branch
            whose recurrent layers are not LSTMs.
    """

    def __init__(
        self,
        net: RULSTM | RULSTMFusion,
        *,
        modality: str | None = None,
        alpha: float = 0.25,
        times: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        weights: OnlineWeights = "fp32",
    ) -> None:
        if not isinstance(net, RULSTM | RULSTMFusion):
            raise TypeError(f"OnlineAnticipator needs a RULSTM or RULSTMFusion, got {type(net)}")
        self.device = torch.device(device)
        #: The mode asked for (``"auto"`` is resolved again by :meth:`to`).
        self.requested_weights: OnlineWeights = weights
        self._source = net
        self.weights: OnlineWeights = _resolve_weights(weights, self.device, net)
        self.net = _with_weights(net.to(self.device).eval(), self.weights, self.device)
        self.modality = modality
        self.alpha = alpha
        self.times = tuple(times) if times is not None else anticipation_times(alpha=alpha)
        self.unroll_steps = []
        for time in self.times:
            # Offline, anticipation time (T - t) * alpha is an unrolling of T - t + 1 steps.
            self.unroll_steps.append(steps_in(time, alpha=alpha) + 1)
        self.branches: dict[str, RULSTM] = (
            dict(self.net.branches.items()) if isinstance(self.net, RULSTMFusion) else {}
        )
        #: Branches of a fusion checkpoint that :meth:`from_checkpoint` left out (no features).
        self.left_out: tuple[str, ...] = ()
        self.reset()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | Sequence[str | Path],
        *,
        modality: str | Sequence[str | None] | None = None,
        available: Sequence[str] | None = None,
        alpha: float | None = None,
        times: Sequence[float] | None = None,
        horizon: float | None = None,
        device: str | torch.device = "cpu",
        weights: OnlineWeights = "fp32",
    ) -> OnlineAnticipator:
        """Build from checkpoints written by ``rulstm fit`` or ``rulstm-import checkpoint``.

        Args:
            path: one branch or fusion checkpoint, or several branch checkpoints (one per
                modality), which are then fused by averaging their scores
                (``RULSTMFusion`` with ``fusion="average"``, the late fusion).
            modality: the modality of each branch checkpoint (one name, or one per path,
                ``None`` where unknown); otherwise the one recorded in its hyper-parameters;
                else, for several checkpoints, the ``rgb`` / ``flow`` / ``obj`` token of the
                file name (``rgb_best.ckpt``), for a single one the only ``available`` one.
            available: the modalities whose features the caller can provide. A fusion
                checkpoint then runs only its branches among them; when some are left out
                (:attr:`left_out`), the rest are fused by averaging (MATT needs every branch).
            alpha: seconds between steps; default the checkpoints' (they must agree), else 0.25.
            times: anticipation times; default ``alpha * k`` for ``k = anticipation_steps ..
                1`` (the checkpoint's steps, else 8), plus ``horizon`` when it is not one of them.
            device, weights: where and in which precision to run (see the class).

        Raises:
            FileNotFoundError: a missing file.
            ValueError: an unreadable checkpoint, a network that is not a RU-LSTM, one trained
                for another task, checkpoints that disagree (alpha, classes), a branch whose
                modality cannot be told, or no branch left among ``available``; the message
                names the file.
        """
        from rulstm.checkpoints import load_net, read_checkpoint

        paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
        if not paths:
            raise ValueError("no checkpoint given")
        names = (
            [modality] * len(paths)
            if modality is None or isinstance(modality, str)
            else list(modality)
        )
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} modalities given for {len(paths)} checkpoints")
        nets: list[tuple[Path, RULSTM | RULSTMFusion, dict]] = []
        alphas: dict[Path, float] = {}
        steps = 8
        for file in paths:
            checkpoint = read_checkpoint(file)
            net = load_net(file, checkpoint=checkpoint)
            if not isinstance(net, RULSTM | RULSTMFusion):
                raise ValueError(
                    f"{file} holds a {type(net).__name__}, not a RU-LSTM branch or fusion"
                )
            hparams = checkpoint.get("hyper_parameters") or {}
            if hparams.get("task", "anticipation") != "anticipation":
                raise ValueError(f"{file} was trained for {hparams['task']}, not anticipation")
            if hparams.get("alpha") is not None:
                alphas[file] = float(hparams["alpha"])
            steps = int(hparams.get("anticipation_steps", steps))
            nets.append((file, net, hparams))
        if alpha is None and len(set(alphas.values())) > 1:
            raise ValueError(f"the checkpoints were trained with different alphas: {alphas}")
        alpha = alpha or next(iter(alphas.values()), None) or 0.25
        if times is None:
            times = list(anticipation_times(alpha=alpha, anticipation_steps=steps))
            if horizon is not None and not _is_output_time(horizon, alpha=alpha, steps=steps):
                times = sorted([*times, horizon], reverse=True)
        if len(nets) == 1 and isinstance(nets[0][1], RULSTMFusion):
            file, fusion, _ = nets[0]
            if available is None or all(m in available for m in fusion.modalities):
                return cls(fusion, alpha=alpha, times=times, device=device, weights=weights)
            kept = {m: b for m, b in fusion.branches.items() if m in available}
            if not kept:
                raise ValueError(
                    f"{file} fuses {list(fusion.modalities)}, none of which is available "
                    f"(available: {list(available)})"
                )
            averaged = RULSTMFusion.from_branches(kept, fusion="average")
            anticipator = cls(averaged, alpha=alpha, times=times, device=device, weights=weights)
            anticipator.left_out = tuple(m for m in fusion.modalities if m not in kept)
            return anticipator
        branches: dict[str, RULSTM] = {}
        for (file, net, hparams), name in zip(nets, names, strict=True):
            if isinstance(net, RULSTMFusion):
                raise ValueError(f"{file} is a fusion checkpoint; give it alone, not with branches")
            name = name or hparams.get("modality")
            if name is None and len(nets) > 1:
                name = _modality_from_name(file)
            if name is None and len(nets) == 1 and available is not None and len(available) == 1:
                name = available[0]
            if name is None and len(nets) > 1:
                raise ValueError(
                    f"{file} does not record its modality and its name holds none of "
                    "rgb/flow/obj; give the modality of each checkpoint (e.g. --modality rgb)"
                )
            if name in branches:
                raise ValueError(f"{file}: two checkpoints for modality {name!r}")
            branches[name] = net
        if len(branches) == 1:
            ((name, net),) = branches.items()
            return cls(net, modality=name, alpha=alpha, times=times, device=device, weights=weights)
        return cls(
            RULSTMFusion.from_branches(branches, fusion="average"),
            alpha=alpha,
            times=times,
            device=device,
            weights=weights,
        )

    @property
    def fusion(self) -> str | None:
        """``"matt"`` or ``"average"`` for several branches, ``None`` for a single branch."""
        return self.net.fusion if isinstance(self.net, RULSTMFusion) else None

    @property
    def feature_dims(self) -> dict[str, int]:
        """The feature size of each modality the model reads (``{}`` for a branch whose
        modality is unknown)."""
        if self.branches:
            return {name: branch.feat_dim for name, branch in self.branches.items()}
        return {self.modality: self.net.feat_dim} if self.modality else {}

    def to(self, device: str | torch.device) -> OnlineAnticipator:
        """Move the network to ``device`` (the state is reset); ``weights="auto"`` is resolved
        for the new device."""
        self.device = torch.device(device)
        resolved = _resolve_weights(self.requested_weights, self.device, self._source)
        if resolved != self.weights:
            self.weights = resolved
            self.net = _with_weights(self._source.to(self.device).eval(), resolved, self.device)
        self.net.to(self.device)
        self.reset()
        return self

    @property
    def modalities(self) -> tuple[str, ...]:
        if self.branches:
            return tuple(self.branches)
        return (self.modality,) if self.modality else ()

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def reset(self) -> None:
        """Start a new stream: forget the rolling state."""
        self._states: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
        self._step = 0

    def _features(
        self, features: Mapping[str, np.ndarray | torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        names = self.modalities or tuple(features)
        if not self.branches and len(names) != 1:
            raise KeyError(
                f"got modalities {list(features)}; pass modality=... to pick the branch's one"
            )
        tensors = {}
        for name in names:
            if name not in features:
                raise KeyError(f"missing features for modality {name!r} (got {list(features)})")
            value = torch.as_tensor(np.asarray(features[name]), dtype=torch.float32)
            tensors[name] = value.reshape(1, -1).to(self.device)  # (D,) -> (1, D)
        return tensors

    @torch.no_grad()
    def step(self, features: Mapping[str, np.ndarray | torch.Tensor]) -> OnlinePrediction:
        """Consume one observation per modality (a ``(D,)`` vector each) and predict."""
        inputs = self._features(features)
        with self._precision():
            if not self.branches:
                ((name, x_t),) = inputs.items()
                branch: RULSTM = self.net  # type: ignore[assignment]
                state = self._roll(branch, x_t, self._states.get(name))
                self._states[name] = state
                logits = self._unroll(branch, x_t, state)[0][0]  # (1, K, C) -> (K, C)
                weights = None
            else:
                logits, weights = self._fused_step(inputs)
        logits = logits.float()
        self._step += 1
        return OnlinePrediction(
            step=self._step - 1,
            times=self.times,
            logits=logits.cpu(),
            probabilities=logits.softmax(-1).cpu(),
            weights=weights,
        )

    def _fused_step(
        self, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        branch_logits, contexts = [], []
        for name, branch in self.branches.items():
            state = self._roll(branch, inputs[name], self._states.get(name))
            self._states[name] = state
            logits, context = self._unroll(branch, inputs[name], state)
            branch_logits.append(logits[0])  # (1, K, C) -> (K, C)
            contexts.append(context[0])  # (1, K, 2H) -> (K, 2H)
        fused, weights = self.net.combine(branch_logits, contexts)  # (K, C), (K, M)
        return fused, {name: weights[:, i].float().cpu() for i, name in enumerate(self.branches)}

    # ------------------------------------------------------------------ precision modes
    def _precision(self) -> contextlib.AbstractContextManager:
        if self.weights == "bf16":
            # The weights are already bf16; autocast lowers the float32 inputs and states.
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _roll(self, branch: RULSTM, x_t: Tensor, state: tuple[Tensor, Tensor] | None):
        # int8 included: the model steps its quantised layers by calling them.
        return branch.roll(x_t, state)

    def _unroll(
        self, branch: RULSTM, x_t: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Logits (B, K, C) and MATT contexts (B, K, 2H) at every anticipation time."""
        # int8 included: RULSTM.unroll_horizons runs quantised layers by calling them.
        return branch.unroll_horizons(x_t, state, self.unroll_steps, return_context=True)


def _resolve_weights(
    weights: str, device: torch.device, net: RULSTM | RULSTMFusion
) -> OnlineWeights:
    """``"auto"`` -> ``"bf16"`` where ``device`` has native bf16 (and the branches are LSTMs,
    which the bf16 mode needs), else ``"fp32"``; an explicit ``"bf16"`` on a CPU that emulates
    bf16 warns once. Other modes are returned as they are."""
    from epic_protocol import precision

    if weights == "auto":
        branches = net.branches.values() if isinstance(net, RULSTMFusion) else [net]
        lstm = all(branch.cell == "lstm" for branch in branches)
        return "bf16" if lstm and precision.bf16_native(device) else "fp32"
    if weights == "bf16":
        precision.warn_if_emulated(device, what="OnlineAnticipator weights='bf16'")
    return weights  # type: ignore[return-value]


def _with_weights(
    net: RULSTM | RULSTMFusion, weights: str, device: torch.device
) -> RULSTM | RULSTMFusion:
    """``net`` itself for float32, else a copy with bf16 or dynamically quantised weights."""
    if weights == "fp32":
        return net
    if weights not in ("bf16", "int8"):
        raise ValueError(f"weights must be 'auto', 'fp32', 'bf16' or 'int8', got {weights!r}")
    branches = net.branches.values() if isinstance(net, RULSTMFusion) else [net]
    for branch in branches:
        recurrent = (branch.rolling_lstm, branch.unrolling_lstm)
        if not all(type(layer) is nn.LSTM for layer in recurrent):
            raise ValueError(
                f"weights={weights!r} supports LSTM branches only, got "
                f"{type(branch.rolling_lstm).__name__}"
            )
    if weights == "bf16":
        return copy.deepcopy(net).to(torch.bfloat16)
    if device.type != "cpu":
        raise ValueError(f"weights='int8' (dynamic quantisation) runs on CPU only, not {device}")
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    # Linear layers (classifier, MATT) get one scale per output row, which keeps the many
    # classifier rows apart; the quantised LSTM supports one scale per weight matrix.
    spec = {nn.LSTM: default_dynamic_qconfig, nn.Linear: per_channel_dynamic_qconfig}
    with warnings.catch_warnings():
        # torch.ao's eager quantisation warns that it will move to torchao; it still works.
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(net), spec, dtype=torch.qint8)


def _modality_from_name(path: Path) -> str | None:
    """The one ``rgb`` / ``flow`` / ``obj`` token of a file name (``rgb_best.ckpt``,
    ``RULSTM-anticipation_0.25_6_8_flow_best``), else ``None``."""
    import re

    tokens = set(re.split(r"[^a-z0-9]+", path.name.lower()))
    found = [m for m in ("rgb", "flow", "obj") if m in tokens]
    return found[0] if len(found) == 1 else None


def _is_output_time(seconds: float, *, alpha: float, steps: int) -> bool:
    """Whether ``seconds`` is one of the anticipation times ``alpha * k``, ``k = 1..steps``."""
    try:
        return steps_in(seconds, alpha=alpha) <= steps
    except ValueError:
        return False  # not a multiple of alpha: the constructor reports it
