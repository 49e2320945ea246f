"""Which frames a sample reads: the RU-LSTM sampling protocol.

Both the training side (to read features) and the extraction side (to extract only the
frames that will be read, ``--only-needed``) call these functions, so they cannot drift apart.

The arithmetic deliberately follows the reference implementation operation by operation
(``start / fps``, minus ``alpha * k``, times ``fps``, floor): reordering it changes the
floating-point rounding and therefore, for some rows, the frame that is read.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Task = Literal["anticipation", "early_recognition"]


def anticipation_frames(
    start_frame: int, *, fps: float = 30.0, alpha: float = 0.25, steps: int = 14
) -> np.ndarray | None:
    """Frames observed before an action that starts at ``start_frame``.

    Returns ``steps`` 1-based frame numbers at times ``start/fps - k*alpha`` for
    ``k = steps .. 1`` (oldest first), or ``None`` when none of them is at least 1 (the
    reference drops such samples). Frames below 1 are replaced by the first valid frame.

    >>> anticipation_frames(1000).tolist()
    [895, 902, 910, 917, 925, 932, 940, 947, 955, 962, 970, 977, 985, 992]
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if fps <= 0 or alpha <= 0:
        raise ValueError(f"fps and alpha must be positive, got fps={fps}, alpha={alpha}")
    action_time = start_frame / fps
    # (steps,) newest first, then reversed so that index -1 is alpha seconds before the action.
    times = (action_time - alpha * np.arange(1, steps + 1))[::-1]
    frames = np.floor(times * fps).astype(np.int64)
    valid = frames >= 1
    if not valid.any():
        return None
    frames[~valid] = frames[valid].min()
    return frames


def early_recognition_frames(start_frame: int, end_frame: int, *, steps: int = 8) -> np.ndarray:
    """Frames observed inside an action: ``linspace(start, end, steps + 1)[1:]`` as integers,
    so step ``i`` has seen ``(i + 1) / steps`` of the action."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if end_frame < start_frame:
        raise ValueError(f"end_frame {end_frame} is before start_frame {start_frame}")
    return np.linspace(start_frame, end_frame, steps + 1).astype(np.int64)[1:]


def anticipation_times(*, alpha: float = 0.25, anticipation_steps: int = 8) -> tuple[float, ...]:
    """Seconds before the action of each anticipation output, oldest first:
    (2.0, 1.75, ..., 0.25) for the defaults."""
    return tuple(alpha * k for k in range(anticipation_steps, 0, -1))


def sample_frames(
    start_frame: int,
    end_frame: int,
    *,
    task: Task,
    fps: float = 30.0,
    alpha: float = 0.25,
    steps: int = 14,
) -> np.ndarray | None:
    """The frames one sample of a segment reads, oldest first: :func:`anticipation_frames`
    (``None`` when the reference discards the sample) or :func:`early_recognition_frames`.

    The single choice both sides make: the DataModule reads these frames and sparse
    extraction (``--only-needed``) stores their union."""
    if task == "anticipation":
        return anticipation_frames(start_frame, fps=fps, alpha=alpha, steps=steps)
    if task == "early_recognition":
        return early_recognition_frames(start_frame, end_frame, steps=steps)
    raise ValueError(f"task must be 'anticipation' or 'early_recognition', got {task!r}")


#: Float error absorbed when seconds become steps or frames (0.25 s x 30 fps x 4 steps is
#: frame 30, not 29; 0.75 s / 0.25 s is 3 steps).
STEP_TOLERANCE = 1e-6


def steps_in(seconds: float, *, alpha: float) -> int:
    """How many ``alpha``-second steps make ``seconds`` (an anticipation time): a positive
    whole number, within :data:`STEP_TOLERANCE`.

    Raises:
        ValueError: ``seconds`` is not a positive multiple of ``alpha``.
    """
    ratio = seconds / alpha
    steps = round(ratio)
    if seconds <= 0 or abs(ratio - steps) > STEP_TOLERANCE:
        raise ValueError(f"anticipation time {seconds} s is not a multiple of alpha={alpha}")
    return steps


def step_frame(step: int, *, alpha: float, fps: float) -> int:
    """The 1-based frame (at ``fps``) on which online step ``step = 1, 2, ...`` falls:
    ``floor(step * alpha * fps)``, the sampling's rounding, so that steps are ``alpha``
    seconds apart on average and never drift (frames 7, 15, 22, 30 for 0.25 s at 30 fps)."""
    return math.floor(step * alpha * fps + STEP_TOLERANCE)


#: The anticipation time every EPIC-KITCHENS table headlines and selects models on.
HEADLINE_SECONDS = 1.0


def anticipation_step(
    seconds: float = HEADLINE_SECONDS, *, alpha: float = 0.25, anticipation_steps: int = 8
) -> int:
    """Index (negative, from the last output) of the output ``seconds`` before the action.

    Outputs are at ``alpha * k`` s for ``k = anticipation_steps .. 1`` (oldest first), so the
    output at ``seconds`` is ``-k`` with ``k = seconds / alpha``: -4 for the reference's 1.0 s
    at 0.25 s, -2 at ``alpha=0.5``. Negative indices also hold for score arrays that keep
    every step, encoding included.

    Raises:
        ValueError: ``seconds`` is not ``alpha`` times an integer in ``1..anticipation_steps``
            (e.g. 1.0 s with ``alpha=0.3``, or with too few steps).
    """
    if alpha <= 0 or anticipation_steps < 1:
        raise ValueError(
            f"alpha must be positive and anticipation_steps >= 1, got alpha={alpha}, "
            f"anticipation_steps={anticipation_steps}"
        )
    k = round(seconds / alpha)
    if not 1 <= k <= anticipation_steps or abs(k * alpha - seconds) > 1e-9:
        times = ", ".join(
            f"{t:g}" for t in anticipation_times(alpha=alpha, anticipation_steps=anticipation_steps)
        )
        raise ValueError(
            f"no output is {seconds:g} s before the action with alpha={alpha:g} and "
            f"anticipation_steps={anticipation_steps} (outputs at {times} s)"
        )
    return -k
