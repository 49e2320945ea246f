"""Rendering: colours the detector can rely on, no leak of future actions, decodable video."""

from __future__ import annotations

import colorsys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from synthetic_kitchen.recipe import NOUNS, VERBS
from synthetic_kitchen.render import (
    SUPPORTED_VERBS,
    RenderSettings,
    ScheduledAction,
    palette_rgb,
    render_frames,
    write_video,
)

SETTINGS = RenderSettings(width=96, height=72)
COLOURS = palette_rgb(len(NOUNS))


def _render(actions: list[ScheduledAction], num_frames: int, seed: int = 0) -> np.ndarray:
    frames = render_frames(
        actions,
        num_frames,
        verbs=VERBS,
        noun_colours=COLOURS,
        settings=SETTINGS,
        rng=np.random.default_rng(seed),
    )
    return np.stack(list(frames))  # (F, H, W, 3) BGR


def test_palette_colours_are_distinct_and_saturated() -> None:
    assert len(set(COLOURS)) == len(NOUNS)
    hues = []
    for rgb in COLOURS:
        hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
        assert saturation == pytest.approx(1.0) and value == pytest.approx(0.9, abs=0.01)
        hues.append(hue * 360)
    gaps = np.diff(sorted(hues) + [sorted(hues)[0] + 360])
    assert gaps.min() >= 40  # 45 degrees apart for 8 nouns


def test_every_verb_has_a_motion() -> None:
    assert set(VERBS) <= set(SUPPORTED_VERBS)


@pytest.mark.parametrize("verb", range(len(VERBS)), ids=VERBS)
def test_only_the_object_is_saturated(verb: int) -> None:
    """The colour-blob detector may only fire on the action's object: every clearly
    saturated pixel is within a small hue distance of the noun's palette colour."""
    noun = verb % len(NOUNS)
    frames = _render([ScheduledAction(verb=verb, noun=noun, start_frame=5, end_frame=70)], 75)
    hsv = cv2.cvtColor(frames.reshape(-1, SETTINGS.width, 3), cv2.COLOR_BGR2HSV)
    saturated = hsv[..., 1] > 0.5 * 255
    assert saturated.any()
    target = colorsys.rgb_to_hsv(*(c / 255 for c in COLOURS[noun]))[0] * 180  # OpenCV hue
    distance = np.abs(hsv[..., 0][saturated].astype(float) - target)
    distance = np.minimum(distance, 180 - distance)
    assert np.percentile(distance, 99) <= 8
    # outside the action (frames 1-4 and 71-75) nothing is saturated
    idle = cv2.cvtColor(
        np.concatenate([frames[:4], frames[70:]]).reshape(-1, SETTINGS.width, 3), cv2.COLOR_BGR2HSV
    )
    assert (idle[..., 1] > 0.5 * 255).mean() < 1e-3


def test_frames_before_an_action_do_not_depend_on_it() -> None:
    """The premise of the Bayes bound: nothing of the next action is drawn before it starts."""
    first = ScheduledAction(verb=0, noun=0, start_frame=10, end_frame=60)
    frames_a = _render([first, ScheduledAction(verb=3, noun=2, start_frame=70, end_frame=120)], 130)
    frames_b = _render([first, ScheduledAction(verb=5, noun=7, start_frame=70, end_frame=120)], 130)
    np.testing.assert_array_equal(frames_a[:69], frames_b[:69])  # frames 1..69
    assert not np.array_equal(frames_a[69], frames_b[69])


def test_rendering_is_deterministic_per_seed() -> None:
    actions = [ScheduledAction(verb=4, noun=1, start_frame=3, end_frame=30)]
    np.testing.assert_array_equal(_render(actions, 32, seed=1), _render(actions, 32, seed=1))
    assert not np.array_equal(_render(actions, 32, seed=1), _render(actions, 32, seed=2))


def test_video_decodes_with_the_expected_frames(tmp_path: Path) -> None:
    frames = _render([ScheduledAction(verb=6, noun=3, start_frame=5, end_frame=40)], 45)
    path = tmp_path / "clip.mp4"
    assert write_video(path, iter(frames), settings=SETTINGS) == 45
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 30
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    assert len(decoded) == 45
    assert decoded[0].shape == (SETTINGS.height, SETTINGS.width, 3)
    # lossy but close: compression and chroma subsampling only
    assert np.abs(np.stack(decoded).astype(int) - frames).mean() < 8


def test_settings_reject_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        RenderSettings(width=97, height=72)


def test_unknown_verbs_are_rejected() -> None:
    with pytest.raises(ValueError, match="no motion"):
        list(
            render_frames(
                [],
                1,
                verbs=("juggle",),
                noun_colours=COLOURS,
                settings=SETTINGS,
                rng=np.random.default_rng(0),
            )
        )
