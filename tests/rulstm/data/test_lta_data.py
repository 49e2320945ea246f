"""LTA samples read the right feature rows, for clip-keyed and parent-video-keyed files."""

from __future__ import annotations

import numpy as np
import pytest

from epic_protocol.ego4d_lta import LTAAction, build_windows
from epic_protocol.features import FeatureFileWriter, FeatureStore
from rulstm.data.lta import LTADataset


def actions(clip="c", video="v", parent=100):
    # 3 actions of 10 frames each: 0..9, 10..19, 20..29 (clip-relative, 0-based)
    return [LTAAction(clip, video, i, 10 * i, 10 * i + 9, parent, i, i) for i in range(3)]


def store_with(tmp_path, key, first_frame, count):
    """Feature value == the 1-based frame number, so a sample shows which frames it read."""
    path = tmp_path / f"{key}.h5"
    frames = np.arange(first_frame, first_frame + count)
    with FeatureFileWriter(path, modality="rgb", dim=1, fps=30.0) as writer:
        writer.write_video(key, frames, frames[:, None].astype(np.float32))
    return FeatureStore(path)


@pytest.mark.parametrize(
    "keying, key, first_frame, expected",
    [
        # observed actions 0 and 1, S=2: clip frames 4, 9, 14, 19 -> 1-based 5, 10, 15, 20
        ("clip", "c", 1, [5, 10, 15, 20]),
        # parent video: clip frame f is video frame 100 + f + 1
        ("video", "v", 1, [105, 110, 115, 120]),
    ],
)
def test_both_keyings_read_the_mapped_frames(tmp_path, keying, key, first_frame, expected):
    windows = build_windows({"c": actions()}, num_input_actions=2, num_future_actions=1)
    store = store_with(tmp_path, key, first_frame, 200)
    sample = LTADataset(windows=windows, store=store, keying=keying, steps_per_action=2)[0]
    assert sample["features"][:, 0].tolist() == expected
    assert sample["id"] == "c_1"
    assert sample["verbs"].tolist() == [2] and sample["nouns"].tolist() == [2]
    # never a frame after the end of the last observed action (clip frame 19)
    assert max(sample["features"][:, 0].tolist()) == expected[-1]


def test_a_clip_read_against_the_wrong_key_is_named(tmp_path):
    windows = build_windows({"c": actions()}, num_input_actions=2, num_future_actions=1)
    store = store_with(tmp_path, "c", 1, 200)
    with pytest.raises(KeyError, match="no complete video 'v' for window c_1 .*keying: video"):
        LTADataset(windows=windows, store=store, keying="video")
