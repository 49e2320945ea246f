"""Decoding at a target fps by timestamp, frame selection for sparse extraction, discovery."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from epic_protocol.annotations import convert_frame
from feature_extraction import video as video_module
from feature_extraction.resizing import output_size
from feature_extraction.video import (
    DecodeReport,
    TruncatedVideoError,
    decode_video,
    resample,
    select_frames,
)
from feature_extraction.video_files import VideoError, find_videos, probe_video


def _source_of_each_target(
    pts: list[int], *, fps: float, time_base: Fraction, frame_ticks: Fraction | None = None
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
    frame_ticks = Fraction(1000, 30)
    sources = _source_of_each_target(
        pts, fps=30, time_base=Fraction(1, 1000), frame_ticks=frame_ticks
    )
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
# Exact ticks: a 1-frame 29.97 fps clip lasts 1 tick past frame 2's instant (2 frames).
@example(clock=(Fraction(30000, 1001), Fraction(1, 30000), False), count=1)
# Rounded ticks: 80 frames at 60 fps end at 1333.3 ms, stored as 1317 + 17 = 1334 ms (40 frames).
@example(clock=(Fraction(60), Fraction(1, 1000), True), count=80)
def test_constant_rate_sources_follow_the_rule(clock, count: int) -> None:
    native, time_base, rounded = clock
    times = [Fraction(i) / native for i in range(count)]  # true times
    ticks = [t / time_base for t in times]
    pts = [round(t) for t in ticks] if rounded else [int(t) for t in ticks]
    assert rounded or all(t.denominator == 1 for t in ticks)
    frame_ticks = 1 / (native * time_base)  # not whole when the container rounds
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
    sources = _source_of_each_target(
        pts, fps=30, time_base=Fraction(1, 1000), frame_ticks=Fraction(40)
    )
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


# --------------------------------------------------------------------------- one rule


def _vfr_times() -> list[Fraction]:
    """1 s at 30 fps, 1 s at 10 fps, 1 s at 60 fps."""
    times, start = [], Fraction(0)
    for rate in (30, 10, 60):
        times += [start + Fraction(i, rate) for i in range(rate)]
        start += 1
    return times


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_clip_gives_the_rule_with_both_backends(
    make_video, read_code, suffix: str
) -> None:
    times = _vfr_times()
    path = make_video(f"vfr{suffix}", num_frames=len(times), fps=60, times=times)
    expected = _rule(times, fps=Fraction(30), end=Fraction(3))
    assert len(expected) == 90 and expected[29:34] == [30, 31, 31, 31, 32]  # 10 fps: held
    chosen = {}
    for backend in ("decord", "pyav"):
        decoded = list(decode_video(path, fps=30, backend=backend))
        assert [d.frame for d in decoded] == list(range(1, 91))
        chosen[backend] = [read_code(d.image) for d in decoded]
    assert chosen["decord"] == chosen["pyav"] == expected


# --------------------------------------------------------------------------- truncation


@pytest.fixture
def cut_video(make_video, tmp_path: Path) -> Path:
    """10 s announced (300 frames at 30 fps, index first), the first 180 frames present."""
    from tests.feature_extraction.conftest import cut_after_packets

    full = make_video("full.mp4", num_frames=300, fps=30, faststart=True)
    return cut_after_packets(full, tmp_path / "cut.mp4", packets=180)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_truncated_video_fails_naming_both_counts(cut_video: Path, backend: str) -> None:
    info = probe_video(cut_video)
    assert (info.announced_frames, info.duration_s) == (300, pytest.approx(10.0))
    with pytest.raises(TruncatedVideoError, match=r"cut\.mp4: truncated: 180 .* of 300") as error:
        list(decode_video(cut_video, fps=30, backend=backend))
    assert (error.value.decoded, error.value.announced) == (180, 300)
    # Sparse decoding of frames before the cut is refused too: the file is not what it says.
    with pytest.raises(TruncatedVideoError):
        list(decode_video(cut_video, fps=30, backend=backend, wanted=np.array([5])))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_allow_truncated_keeps_the_decoded_frames(cut_video: Path, read_code, backend) -> None:
    report = DecodeReport()
    decoded = list(
        decode_video(cut_video, fps=30, backend=backend, allow_truncated=True, report=report)
    )
    assert [d.frame for d in decoded] == list(range(1, 181))
    assert [read_code(d.image) for d in decoded] == list(range(1, 181))
    assert (report.truncated, report.decoded_frames, report.announced_frames) == (True, 180, 300)


def test_a_cut_matroska_file_is_truncated_too(make_video, tmp_path: Path) -> None:
    from tests.feature_extraction.conftest import cut_after_packets

    full = make_video("full.mkv", num_frames=300, fps=30)
    cut = cut_after_packets(full, tmp_path / "cut.mkv", packets=150)
    with pytest.raises(TruncatedVideoError, match=r"of 300 announced"):
        list(decode_video(cut, fps=30))
    # A complete file whose duration counts its last frame (or rounds) is not truncated.
    assert len(list(decode_video(full, fps=30))) == 300


def test_a_packet_cut_in_half_is_truncated_with_pyav(make_video, tmp_path: Path) -> None:
    full = make_video("full.mp4", num_frames=300, fps=30, faststart=True)
    data = full.read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # mid-packet: decord cannot open it at all
    with pytest.raises(TruncatedVideoError):
        list(decode_video(cut, fps=30))
    report = DecodeReport()
    decoded = list(decode_video(cut, fps=30, allow_truncated=True, report=report))
    assert report.truncated and len(decoded) == report.decoded_frames < 300


# --------------------------------------------------------------------------- rotation


# (degrees counter-clockwise, mirrored) -> the upright picture, as `ffmpeg -i clip.mp4` shows
# it (checked by hand against ffmpeg 5.1's autorotation for all eight cases).
ORIENTATIONS = {
    (0, False): lambda image: image,
    (90, False): lambda image: np.rot90(image, 1),
    (180, False): lambda image: np.rot90(image, 2),
    (270, False): lambda image: np.rot90(image, 3),
    (0, True): lambda image: image[:, ::-1],
    (90, True): lambda image: np.rot90(image, 1)[:, ::-1],
    (180, True): lambda image: np.rot90(image, 2)[:, ::-1],
    (270, True): lambda image: np.rot90(image, 3)[:, ::-1],
}


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize(("degrees", "mirrored"), list(ORIENTATIONS))
def test_display_rotation_is_applied_before_resizing(
    tmp_path: Path, backend: str, degrees: int, mirrored: bool, caplog
) -> None:
    from tests.feature_extraction.conftest import write_video

    rng = np.random.default_rng(degrees)
    coded = np.kron(rng.integers(0, 2, (3, 6, 8, 1)) * 255, np.ones((1, 8, 8, 3))).astype(np.uint8)
    path = write_video(
        tmp_path / "phone.mp4", coded, fps=30, rotation=degrees, mirrored=mirrored
    )  # (3, 48, 64, 3) landscape pictures
    upright = ORIENTATIONS[(degrees, mirrored)](coded[0])
    info = probe_video(path)
    assert (info.height, info.width) == upright.shape[:2]
    decoded = list(decode_video(path, fps=30, backend=backend))
    assert decoded[0].image.shape == upright.shape
    assert np.abs(decoded[0].image.astype(int) - upright).mean() < 8
    # Resizing to a width keeps the upright aspect ratio: portrait stays portrait.
    small = next(iter(decode_video(path, fps=30, backend=backend, width=24)))
    assert small.image.shape == (24 * upright.shape[0] // upright.shape[1], 24, 3)
    if backend == "decord" and (degrees or mirrored):
        assert "decoded with PyAV: decord 0.6 does not apply the display rotation" in caplog.text
