"""The causal flow stack (order, start of video, gaps), quantisation and the estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feature_extraction.flow import (
    CausalFlow,
    FlowStacker,
    flow_to_unit,
    flow_to_unit_tensor,
    make_cpu_flow,
    zero_field,
)


def _field(frame: int) -> np.ndarray:
    """A recognisable (2, 2, 2) field: u = frame, v = -frame."""
    return np.stack([np.full((2, 2), frame), np.full((2, 2), -frame)]).astype(np.float32)


def _channel_values(stack: np.ndarray) -> list[float]:
    return [float(channel[0, 0]) for channel in stack]


def test_stack_is_oldest_first_u_then_v_and_repeats_the_first_field() -> None:
    stacker = FlowStacker(length=5)
    zero = np.zeros((2, 2, 2), np.float32)
    stacks = {}
    for frame in range(1, 9):
        stacker.push(frame, _field(frame) if frame > 1 else None, zero=zero)
        stacks[frame] = _channel_values(stacker.stack())
    assert stacks[1] == [0.0] * 10  # no previous frame: no motion
    assert stacks[2] == [2, -2] * 5  # only field 2 exists: repeated
    assert stacks[3] == [2, -2, 2, -2, 2, -2, 2, -2, 3, -3]
    assert stacks[8] == [4, -4, 5, -5, 6, -6, 7, -7, 8, -8]  # fields k-4 .. k


def test_a_gap_needs_the_context_frames_again() -> None:
    stacker = FlowStacker(length=2)
    zero = np.zeros((2, 2, 2), np.float32)
    for frame in (1, 2, 3):
        stacker.push(frame, _field(frame) if frame > 1 else None, zero=zero)
    stacker.push(10, None, zero=zero)  # frame 9 was not decoded
    with pytest.raises(RuntimeError, match="field 9"):
        stacker.stack()
    stacker.push(11, _field(11), zero=zero)
    stacker.push(12, _field(12), zero=zero)
    assert _channel_values(stacker.stack()) == [11, -11, 12, -12]


def test_causal_flow_feeds_each_field_from_the_previous_frame() -> None:
    calls = []

    def estimator(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        calls.append((int(previous[0, 0, 0]), int(current[0, 0, 0])))
        return np.full((2, 4, 4), float(current[0, 0, 0]), np.float32)  # "motion" = frame number

    flow = CausalFlow(estimator=estimator, length=3, bound=20.0, quantize=False)
    for frame in range(1, 6):
        flow.push(frame, np.full((4, 4, 3), frame, np.uint8))
    assert calls == [(1, 2), (2, 3), (3, 4), (4, 5)]
    unit = [round(float(c[0, 0]) * 40 - 20) for c in flow.stack()]  # back to pixels
    assert unit == [3, 3, 4, 4, 5, 5]


def test_quantisation_clips_to_the_bound_and_maps_to_0_255() -> None:
    field = np.array([[[-50.0, -20.0, 0.0, 20.0, 50.0]]] * 2, np.float32)  # (2, 1, 5)
    quantised = flow_to_unit(field, bound=20.0, quantize=True)
    assert quantised.dtype == np.uint8
    assert quantised[0, 0].tolist() == [0, 0, 128, 255, 255]
    as_float = flow_to_unit(field, bound=20.0, quantize=False)
    assert as_float.dtype == np.float16
    assert as_float[0, 0].tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    tensor = flow_to_unit_tensor(torch.from_numpy(field), bound=20.0, quantize=True)
    assert tensor.numpy().tolist() == quantised.tolist()
    assert zero_field(1, 5, quantize=True)[0, 0].tolist() == [128] * 5


@pytest.mark.parametrize("method", ["dis", "tvl1"])
def test_cpu_flow_sees_a_rightward_motion_as_positive_u(method: str) -> None:
    rows, cols = np.mgrid[0:64, 0:96]
    pattern = lambda shift: (  # noqa: E731
        128 + 100 * np.sin((cols - shift) / 4.0) * np.cos(rows / 5.0)
    ).astype(np.uint8)
    previous = np.repeat(pattern(0)[..., None], 3, axis=2)
    current = np.repeat(pattern(2)[..., None], 3, axis=2)
    field = make_cpu_flow(method)(previous, current)
    assert field.shape == (2, 64, 96)
    centre = field[:, 16:48, 24:72]
    assert centre[0].mean() == pytest.approx(2.0, abs=0.5)
    assert abs(centre[1].mean()) < 0.5
