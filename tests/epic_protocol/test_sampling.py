from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epic_protocol.annotations import read_rulstm_split
from epic_protocol.sampling import (
    anticipation_frames,
    anticipation_times,
    early_recognition_frames,
)
from rulstm.resources import resolve_path


def reference_style_frames(start: int, fps: float, alpha: float, steps: int):
    """An independent transcription of the reference sampling, scalar by scalar."""
    point = start / fps
    frames = [math.floor((point - alpha * k) * fps) for k in range(steps, 0, -1)]
    valid = [f for f in frames if f >= 1]
    if not valid:
        return None
    return [f if f >= 1 else min(valid) for f in frames]


def test_issue_examples():
    assert anticipation_frames(1000).tolist() == [
        895,
        902,
        910,
        917,
        925,
        932,
        940,
        947,
        955,
        962,
        970,
        977,
        985,
        992,
    ]
    assert anticipation_frames(60).tolist() == [7] * 8 + [15, 22, 30, 37, 45, 52]


def test_too_early_is_dropped():
    # The newest observation is floor((s/30 - 0.25) * 30): 0 for s = 8, 1 for s = 9.
    assert anticipation_frames(8) is None
    assert anticipation_frames(9).tolist() == [1] * 14


def test_configurable_protocol():
    frames = anticipation_frames(500, fps=50.0, alpha=0.5, steps=3)
    assert frames.tolist() == [425, 450, 475]


def test_early_recognition_frames():
    assert early_recognition_frames(100, 180).tolist() == [110, 120, 130, 140, 150, 160, 170, 180]
    assert early_recognition_frames(5, 6, steps=4).tolist() == [5, 5, 5, 6]
    with pytest.raises(ValueError, match="before start_frame"):
        early_recognition_frames(10, 5)


def test_anticipation_times():
    assert anticipation_times() == (2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25)


def test_bad_arguments():
    with pytest.raises(ValueError):
        anticipation_frames(100, steps=0)
    with pytest.raises(ValueError):
        anticipation_frames(100, fps=0)


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(min_value=1, max_value=2_000_000),
    fps=st.sampled_from([30.0, 25.0, 50.0, 59.94, 60.0]),
    alpha=st.sampled_from([0.25, 0.5, 0.125, 1.0]),
    steps=st.integers(min_value=1, max_value=20),
)
def test_properties(start, fps, alpha, steps):
    frames = anticipation_frames(start, fps=fps, alpha=alpha, steps=steps)
    expected = reference_style_frames(start, fps, alpha, steps)
    if expected is None:
        assert frames is None
        return
    assert frames.tolist() == expected
    assert len(frames) == steps
    assert np.all(np.diff(frames) >= 0), "frames must be non-decreasing"
    assert frames.min() >= 1
    # Every observed frame is at or before the last observation point, alpha s before start.
    assert frames.max() <= start - alpha * fps + 1e-6


@pytest.mark.parametrize(
    "split",
    [
        "ek55/validation.csv",
        "ek55/test_seen.csv",
        "ek55/test_unseen.csv",
        "ek100/validation.csv",
        "ek100/test_timestamps.csv",
    ],
)
def test_agrees_with_reference_on_every_shipped_row(split):
    segments = read_rulstm_split(resolve_path(f"builtin:{split}"))
    assert len(segments) > 2000
    for segment in segments:
        frames = anticipation_frames(segment.start_frame)
        expected = reference_style_frames(segment.start_frame, 30.0, 0.25, 14)
        assert (frames is None and expected is None) or frames.tolist() == expected, segment


def test_anticipation_step_of_the_headline_time_follows_alpha():
    from epic_protocol.sampling import anticipation_step

    assert anticipation_step(1.0) == -4  # reference: 2.0 ... 0.25 s
    assert anticipation_step(1.0, alpha=0.5, anticipation_steps=4) == -2
    assert anticipation_step(1.0, alpha=0.5, anticipation_steps=8) == -2
    times = anticipation_times(alpha=0.5, anticipation_steps=4)
    assert times[anticipation_step(1.0, alpha=0.5, anticipation_steps=4)] == 1.0
    with pytest.raises(ValueError, match="no output is 1 s before the action with alpha=0.3"):
        anticipation_step(1.0, alpha=0.3, anticipation_steps=8)
    with pytest.raises(ValueError, match="anticipation_steps=3"):
        anticipation_step(1.0, alpha=0.25, anticipation_steps=3)


def test_steps_in_and_step_frame_are_the_one_time_step_rule():
    from epic_protocol.sampling import step_frame, steps_in

    assert [steps_in(t, alpha=0.25) for t in (0.25, 0.75, 1.0, 2.0)] == [1, 3, 4, 8]
    assert steps_in(0.1 * 3, alpha=0.1) == 3  # 0.30000000000000004 s
    for bad in (0.3, 0.0, -0.25):
        with pytest.raises(ValueError, match="not a multiple of alpha=0.25"):
            steps_in(bad, alpha=0.25)
    # floor(j * alpha * fps), float error absorbed: 0.25 * 30 * 4 is frame 30, not 29.
    assert [step_frame(j, alpha=0.25, fps=30) for j in range(1, 9)] == [
        7,
        15,
        22,
        30,
        37,
        45,
        52,
        60,
    ]
    assert step_frame(3, alpha=0.1, fps=10) == 3  # 3 * 0.1 * 10 = 3.0000000000000004 or 2.99...
