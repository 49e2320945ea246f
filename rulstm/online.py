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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from epic_protocol.sampling import anticipation_times
from rulstm.models.rulstm import RULSTM, RULSTMFusion


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

    def top_k(self, k: int = 5, *, time: float = 1.0) -> list[tuple[int, float]]:
        """``[(action, probability), ...]`` of the ``k`` best actions at ``time`` seconds."""
        index = min(range(len(self.times)), key=lambda i: abs(self.times[i] - time))
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
    """

    def __init__(
        self,
        net: RULSTM | RULSTMFusion,
        *,
        modality: str | None = None,
        alpha: float = 0.25,
        times: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(net, RULSTM | RULSTMFusion):
            raise TypeError(f"OnlineAnticipator needs a RULSTM or RULSTMFusion, got {type(net)}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.modality = modality
        self.alpha = alpha
        self.times = tuple(times) if times is not None else anticipation_times(alpha=alpha)
        self.unroll_steps = []
        for time in self.times:
            ratio = time / alpha
            if time <= 0 or abs(ratio - round(ratio)) > 1e-6:
                raise ValueError(f"anticipation time {time} s is not a multiple of alpha={alpha}")
            # Offline, anticipation time (T - t) * alpha is an unrolling of T - t + 1 steps.
            self.unroll_steps.append(round(ratio) + 1)
        self.branches: dict[str, RULSTM] = (
            dict(net.branches.items()) if isinstance(net, RULSTMFusion) else {}
        )
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> OnlineAnticipator:
        """Build from a checkpoint written by ``rulstm fit`` or ``rulstm-import checkpoint``."""
        from rulstm.checkpoints import load_net

        return cls(load_net(path), **kwargs)

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
        if not self.branches:
            ((name, x_t),) = inputs.items()
            branch: RULSTM = self.net  # type: ignore[assignment]
            state = branch.roll(x_t, self._states.get(name))
            self._states[name] = state
            logits = branch.unroll_horizons(x_t, state, self.unroll_steps)[0]  # (K, C)
            weights = None
        else:
            logits, weights = self._fused_step(inputs)
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
            state = branch.roll(inputs[name], self._states.get(name))
            self._states[name] = state
            logits, context = branch.unroll_horizons(
                inputs[name], state, self.unroll_steps, return_context=True
            )
            branch_logits.append(logits[0])  # (1, K, C) -> (K, C)
            contexts.append(context[0])  # (1, K, 2H) -> (K, 2H)
        fused, weights = self.net.combine(branch_logits, contexts)  # (K, C), (K, M)
        return fused, {name: weights[:, i].cpu() for i, name in enumerate(self.branches)}
