"""The causal clip rule of video backbones: frames before the first repeat the first, offline
reads the union of the clips' frames, and the streaming buffer keeps only the clip span."""

from __future__ import annotations

import pytest
import torch

from feature_extraction.clips import ClipBuffer, clip_context, clip_frames


def test_clip_rule_repeats_the_first_frame_and_buffers_only_the_span() -> None:
    assert clip_frames(7, length=4, stride=2) == [1, 3, 5, 7]
    assert clip_frames(2, length=4, stride=2) == [1, 1, 1, 2]
    assert clip_context([5, 9], length=3, stride=2).tolist() == [1, 3, 5, 7, 9]
    buffer = ClipBuffer(length=3, stride=2)
    for frame in range(1, 10):
        buffer.push(frame, torch.full((1, 1, 3), frame, dtype=torch.uint8))
    assert buffer.clip(9)[:, 0, 0, 0].tolist() == [5, 7, 9]
    assert len(buffer._frames) <= 5  # frames 5..9 at most
    with pytest.raises(ValueError, match="pushed after"):
        buffer.push(9, torch.zeros((1, 1, 3), dtype=torch.uint8))


def test_a_clip_across_a_gap_repeats_the_latest_frame_before_each_number() -> None:
    buffer = ClipBuffer(length=3, stride=1)
    for frame in (1, 2, 5):  # frames 3 and 4 were skipped
        buffer.push(frame, torch.full((1, 1, 3), frame, dtype=torch.uint8))
    assert buffer.clip(5)[:, 0, 0, 0].tolist() == [2, 2, 5]  # clip frames 3, 4, 5
