"""Planning helpers: the frames sparse extraction needs, and the summary."""

from __future__ import annotations

import numpy as np

from epic_protocol.annotations import Segment
from epic_protocol.sampling import anticipation_frames, early_recognition_frames
from feature_extraction.config import SparseConfig
from feature_extraction.planning import needed_frames
from feature_extraction.runner import Summary


def test_needed_frames_follow_the_sampling_protocol() -> None:
    segments = [
        Segment("1", "P01_01", 300, 360),
        Segment("2", "P01_01", 10, 40),  # early: frames below 1 are clamped by the sampling
        Segment("3", "P01_01", 2, 5),  # no valid anticipation frame: dropped by the sampling
        Segment("4", "P02_01", 100, 130),
    ]
    needed = needed_frames(segments, fps=30, sparse=SparseConfig())
    expected = sorted(
        set(anticipation_frames(300).tolist()) | set(anticipation_frames(10).tolist())
    )
    assert needed["P01_01"].tolist() == expected
    assert needed["P02_01"].tolist() == sorted(set(anticipation_frames(100).tolist()))
    early = needed_frames(segments, fps=30, sparse=SparseConfig(early_recognition=True, steps=2))
    inside = set(early_recognition_frames(300, 360).tolist())
    assert inside <= set(early["P01_01"].tolist())
    assert set(early_recognition_frames(2, 5).tolist()) <= set(early["P01_01"].tolist())
    assert np.all(np.diff(early["P01_01"]) > 0)


def test_summary_reports_counts_speed_and_failures() -> None:
    summary = Summary(
        done=["a", "b"],
        skipped={"c": "already complete"},
        failed={"d": "d.mp4: cannot decode"},
        frames=100,
        video_frames=1000,
        seconds=10.0,
        startup_seconds=5.0,
        sparse=True,
    )
    text = summary.format()
    assert "2 done, 1 skipped, 1 failed" in text
    assert "10.0 frames/s" in text and "20.0 frames/s after" in text
    assert "90.0% saved" in text
    assert "d: d.mp4: cannot decode" in text
    assert summary.exit_code == 1 and Summary(done=["a"]).exit_code == 0
    # A video model on a CPU: speeds in clips, with two significant digits below 1 clip/s.
    slow = Summary(done=["a"], frames=8, seconds=100.0, startup_seconds=5.0, unit="clip")
    assert "clips: 8 extracted in 100.0 s (0.08 clips/s; 0.084 clips/s after a 5.0 s start)" in (
        slow.format()
    )
