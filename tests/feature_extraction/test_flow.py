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


class _Shift(torch.nn.Module):
    """A stand-in for RAFT: the field is (current - previous) of the first two channels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return (current[:, :2].float() - previous[:, :2].float()) * self.scale


def test_the_flow_source_is_chosen_once_and_both_streams_share_one_interface() -> None:
    from feature_extraction.flow import FLOW_FROM_IMAGES, FlowSource, RaftStream

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 16, 20, 3), dtype=np.uint8)  # (B, H, W, 3)
    keep = [False, True, False, False, True, True]
    common = {"length": 3, "bound": 20.0, "quantize": True}

    cpu = FlowSource(method="dis", estimator=make_cpu_flow("dis"), **common)
    assert not cpu.on_device and cpu.estimated
    stream = cpu.new_stream()
    assert isinstance(stream, CausalFlow)
    stacks = stream.push_frames(range(1, 7), images, keep)
    assert stacks.shape == (3, 6, 16, 20)  # (K, 2 * length, H, W) of the kept rows
    one_by_one = cpu.new_stream()
    for frame, image in enumerate(images, 1):  # the same stacks, frame by frame
        pushed = one_by_one.push_frames([frame], image[None], [keep[frame - 1]])
        if keep[frame - 1]:
            np.testing.assert_array_equal(pushed[0], stacks[keep[:frame].count(True) - 1])
        else:
            assert pushed is None

    raft = FlowSource(method="raft_small", raft=_Shift(), **common)  # type: ignore[arg-type]
    assert raft.on_device
    gpu = raft.new_stream()
    assert isinstance(gpu, RaftStream)
    first = torch.from_numpy(images[:1])
    assert gpu.push_frames([1], first, [False], estimate=False) is None  # no field for frame 1
    out = gpu.push_frames([2, 3, 4], images[1:4], [False, False, True])  # numpy: to the device
    assert isinstance(out, torch.Tensor) and out.shape == (1, 6, 16, 20)
    with pytest.raises(RuntimeError, match="raft_small"):
        raft.for_workers().new_stream()  # workers never hold RAFT
    with pytest.raises(RuntimeError, match="images"):
        FlowSource(method=FLOW_FROM_IMAGES, **common).new_stream()
    assert not FlowSource(method=FLOW_FROM_IMAGES, **common).estimated


def test_the_model_builder_picks_the_flow_source() -> None:
    from feature_extraction import load_config
    from feature_extraction.models import build_models

    overrides = ["--modalities", "flow", "--flow.weights", "none", "--flow.backbone", "resnet18"]
    config = load_config(None, overrides)
    models = build_models(config, device=torch.device("cpu"))
    assert models.flow_source is not None and models.flow_source.method == "dis"  # auto on CPU
    assert models.cpu_flow is models.flow_source.estimator is not None and models.raft is None
    stored = build_models(config, device=torch.device("cpu"), flow_from_images=True)
    assert stored.flow_source is not None and stored.flow_source.method == "images"
    assert stored.cpu_flow is None and stored.raft is None
