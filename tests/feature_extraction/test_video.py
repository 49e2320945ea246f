"""Decoding at a target fps by timestamp, frame selection for sparse extraction, discovery."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epic_protocol.annotations import convert_frame
from feature_extraction import video as video_module
from feature_extraction.video import (
    VideoError,
    decode_video,
    find_videos,
    output_size,
    probe_video,
    resample,
    select_frames,
)


def _source_of_each_target(
    pts: list[int], *, fps: float, time_base: Fraction, frame_ticks: int | None = None
) -> list[int]:
    """1-based source frame of each target frame."""
    timed = ((t, None, index) for index, t in enumerate(pts))
    return [
        index + 1
        for _, index in resample(timed, fps=fps, time_base=time_base, frame_ticks=frame_ticks)
    ]


def _rule(times: list[Fraction], *, fps: Fraction, end: Fraction) -> list[int]:
    """The rule in exact arithmetic: target frame k shows the latest source frame whose time
    is at or before (k-1)/fps, for every instant (k-1)/fps before the end."""
    chosen = []
    k = 1
    while Fraction(k - 1) / fps < end:
        chosen.append(max(i + 1 for i, t in enumerate(times) if t <= Fraction(k - 1) / fps))
        k += 1
    return chosen


def test_same_fps_is_identity_even_with_millisecond_timestamps() -> None:
    pts = [round(i * 1000 / 30) for i in range(100)]  # Matroska stores ms: 0, 33, 67, 100
    sources = _source_of_each_target(pts, fps=30, time_base=Fraction(1, 1000), frame_ticks=33)
    assert sources == list(range(1, 101))


@settings(max_examples=60, deadline=None)
@given(
    clock=st.sampled_from(
        [  # (native rate, time base, whether the container rounds times to its ticks)
            (Fraction(30), Fraction(1, 15360), False),
            (Fraction(30000, 1001), Fraction(1, 30000), False),
            (Fraction(50), Fraction(1, 12800), False),
            (Fraction(60), Fraction(1, 15360), False),
            (Fraction(25), Fraction(1, 1000), False),
            (Fraction(90), Fraction(1, 90000), False),
            (Fraction(60), Fraction(1, 1000), True),
            (Fraction(48), Fraction(1, 1000), True),
            (Fraction(30), Fraction(1, 1000), True),
        ]
    ),
    count=st.integers(1, 400),
)
def test_constant_rate_sources_follow_the_rule(clock, count: int) -> None:
    native, time_base, rounded = clock
    times = [Fraction(i) / native for i in range(count)]  # true times
    ticks = [t / time_base for t in times]
    pts = [round(t) for t in ticks] if rounded else [int(t) for t in ticks]
    assert rounded or all(t.denominator == 1 for t in ticks)
    frame_ticks = round(1 / (native * time_base))
    sources = _source_of_each_target(pts, fps=30, time_base=time_base, frame_ticks=frame_ticks)
    assert sources == _rule(times, fps=Fraction(30), end=Fraction(count) / native)
    # The closed form for constant rates, and the frame count.
    assert sources == [math.floor((k - 1) * native / 30) + 1 for k in range(1, len(sources) + 1)]
    assert len(sources) == math.ceil(count * 30 / native)
    # The annotations' conversion lands within one target frame of it.
    for k, n in enumerate(sources, 1):
        assert abs(convert_frame(n, native_fps=float(native), fps=30) - k) <= 1


def test_upsampling_repeats_the_frame_on_screen() -> None:
    pts = [i * 40 for i in range(25)]  # 1 s at 25 fps (ms) -> 30 target frames
    sources = _source_of_each_target(pts, fps=30, time_base=Fraction(1, 1000), frame_ticks=40)
    assert len(sources) == 30
    for k, n in enumerate(sources, 1):
        assert Fraction(pts[n - 1], 1000) <= Fraction(k - 1, 30)  # on screen at (k-1)/30 ...
        assert n == len(pts) or Fraction(pts[n], 1000) > Fraction(k - 1, 30)  # ... the latest


def test_variable_frame_rate_uses_raw_times() -> None:
    pts = [0, 10, 50, 51, 120, 200]  # irregular, in ms; the last frame lasts 80 ms
    sources = _source_of_each_target(pts, fps=30, time_base=Fraction(1, 1000))
    times = [Fraction(t, 1000) for t in pts]
    assert sources == _rule(times, fps=Fraction(30), end=Fraction(280, 1000))
    assert sources[:5] == [1, 2, 4, 4, 5]


def test_select_frames_adds_flow_context_and_clamps_past_the_end() -> None:
    stream = [(k, f"img{k}") for k in range(1, 21)]
    picked = list(select_frames(iter(stream), wanted=np.array([3, 12]), context=2))
    assert [(k, keep) for k, _, keep in picked] == [
        (1, False),
        (2, False),
        (3, True),
        (10, False),
        (11, False),
        (12, True),
    ]
    clamped = list(select_frames(iter(stream), wanted=np.array([5, 99]), context=2))
    assert [(k, keep) for k, _, keep in clamped] == [
        (3, False),
        (4, False),
        (5, True),
        (18, False),
        (19, False),
        (20, True),
    ]
    assert [k for k, _, _ in select_frames(iter(stream), wanted=None)] == list(range(1, 21))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_decoding_a_50_fps_source_at_30_fps(
    make_video, read_code, backend: str, suffix: str
) -> None:
    path = make_video(f"fifty{suffix}", num_frames=100, fps=50)
    decoded = list(decode_video(path, fps=30, backend=backend))
    frames = [d.frame for d in decoded]
    sources = [read_code(d.image) for d in decoded]
    assert frames == list(range(1, 61))  # 2 s at 30 fps, numbered from 1
    assert sources == [math.floor((k - 1) * 50 / 30) + 1 for k in frames]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_sparse_decoding_and_resize(make_video, read_code, backend: str) -> None:
    path = make_video("clip.mp4", num_frames=30, fps=30)
    decoded = list(
        decode_video(path, fps=30, backend=backend, width=32, wanted=np.array([10, 40]), context=1)
    )
    assert [(d.frame, d.keep) for d in decoded] == [(9, False), (10, True), (29, False), (30, True)]
    assert [read_code(d.image) for d in decoded] == [9, 10, 29, 30]
    assert decoded[0].image.shape == (24, 32, 3)  # aspect ratio kept


def test_pyav_takes_over_when_decord_fails_midway(
    make_video, read_code, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video("clip.mp4", num_frames=12, fps=30)
    original = video_module._decode_with_decord

    def flaky(*args, **kwargs):
        for count, decoded in enumerate(original(*args, **kwargs)):
            if count == 5:
                raise RuntimeError("simulated decord failure")
            yield decoded

    monkeypatch.setattr(video_module, "_decode_with_decord", flaky)
    decoded = list(decode_video(path, fps=30, backend="auto"))
    assert [d.frame for d in decoded] == list(range(1, 13))
    assert [read_code(d.image) for d in decoded] == list(range(1, 13))


def test_unreadable_files_raise_video_error_naming_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    for path in (empty, garbage):
        with pytest.raises(VideoError, match=path.name):
            list(decode_video(path, fps=30))
        with pytest.raises(VideoError, match=path.name):
            probe_video(path)


def test_probe_reads_rate_duration_and_size(make_video) -> None:
    info = probe_video(make_video("clip.mkv", num_frames=50, fps=50))
    assert info.native_fps == pytest.approx(50)
    assert (info.width, info.height) == (64, 48)
    assert info.estimated_frames(30) == 30


def test_find_videos_ignores_other_files_and_hidden_folders(tmp_path: Path) -> None:
    (tmp_path / "P01").mkdir()
    for name in ("P01/P01_01.MP4", "P01/P01_02.mkv", "notes.txt", "frames.jpg", ".hidden/x.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [v.video_id for v in find_videos(tmp_path)] == ["P01_01", "P01_02"]
    (tmp_path / "P01_01.avi").write_bytes(b"x")
    with pytest.raises(ValueError, match="P01_01"):
        find_videos(tmp_path)


def test_output_size_keeps_aspect_when_one_side_is_given() -> None:
    assert output_size(1920, 1080, target_width=None, target_height=256) == (456, 256)
    assert output_size(640, 480, target_width=None, target_height=None) is None
    assert output_size(640, 480, target_width=456, target_height=256) == (456, 256)
