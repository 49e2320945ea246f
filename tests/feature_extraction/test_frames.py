"""Frame folders: the authors' flat layout and EPIC-KITCHENS' layout, flow stacks, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from feature_extraction.frames import (
    FrameError,
    FrameReader,
    _mapped_count,
    find_frame_videos,
    source_indices,
)


def _gray(path: Path, value: int, *, size: tuple[int, int] = (24, 16), mode: str = "L") -> None:
    """A uniform JPEG (decodes to exactly ``value``): ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = value if mode == "L" else (value, value, value)
    Image.new(mode, size, fill).save(path, quality=95)


def _flat(root: Path, video: str, *, rgb: range, u: range, v: range) -> None:
    for n in rgb:
        _gray(root / "rgb" / f"{video}_frame_{n:010d}.jpg", 10 * n, mode="RGB")
    for n in u:
        _gray(root / "flow" / f"{video}_flow_u_{n:010d}.jpg", 10 * n)
    for n in v:
        _gray(root / "flow" / f"{video}_flow_v_{n:010d}.jpg", 10 * n + 5)


def _level(image: np.ndarray) -> int:
    return int(round(float(image.mean())))


@pytest.mark.parametrize("rate", [60.0, 59.94, 50.0, 30.0, 25.0, 29.97, 90.0])
def test_frame_counts_agree_with_the_decoding_rule(rate: float) -> None:
    for count in (1, 2, 5, 59, 60, 61, 301):
        indices = source_indices(count, rate=rate, fps=30.0)
        assert _mapped_count(count, rate, 30.0) == len(indices), (rate, count)
        expected = [
            math.floor((k - 1) * rate / 30.0 + 1e-9) + 1 for k in range(1, len(indices) + 1)
        ]
        assert indices.tolist() == expected, (rate, count)


def test_flat_layout_stacks_oldest_first_and_repeats_image_1(tmp_path: Path) -> None:
    _flat(tmp_path, "P01_01", rgb=range(1, 8), u=range(1, 8), v=range(1, 8))
    (video,) = find_frame_videos(tmp_path)
    assert video.video_id == "P01_01" and video.layout == "flat" and not video.problem
    reader = FrameReader(video, fps=30, rgb=True, flow=True, stack=5)
    assert reader.frames() == list(range(1, 8))
    levels = {f: [_level(c) for c in reader.flow_stack(f)] for f in (1, 3, 7)}
    # u, v, u, v, ... of images t-4 .. t; before image 1, image 1 again (frame 3: 1,1,1,2,3).
    assert levels[1] == [10, 15] * 5
    assert levels[3] == [10, 15, 10, 15, 10, 15, 20, 25, 30, 35]
    assert levels[7] == [30, 35, 40, 45, 50, 55, 60, 65, 70, 75]
    assert _level(reader.rgb_image(4)) == 40
    assert reader.rgb_image(4).shape == (16, 24, 3) and reader.flow_stack(4).shape == (10, 16, 24)
    # Sparse reading: the wanted frames only, past the end the last one.
    rows = list(reader.rows(np.array([2, 6, 50])))
    assert [row.frame for row in rows] == [2, 6, 7]


def test_a_gap_or_a_missing_v_fails_that_video_naming_the_file(tmp_path: Path) -> None:
    _flat(tmp_path, "P01_01", rgb=range(1, 4), u=range(1, 4), v=range(1, 4))
    _flat(tmp_path, "P01_02", rgb=[1, 2, 4], u=range(1, 5), v=range(1, 5))
    _flat(tmp_path, "P01_03", rgb=range(1, 4), u=range(1, 4), v=range(1, 3))
    videos = {v.video_id: v for v in find_frame_videos(tmp_path)}
    assert not videos["P01_01"].problem
    with pytest.raises(FrameError, match=r"P01_02_frame_0000000003\.jpg: missing.*gap"):
        FrameReader(videos["P01_02"], fps=30, rgb=True, flow=True)
    with pytest.raises(FrameError, match=r"P01_03_flow_v_0000000003\.jpg: missing.*no v"):
        FrameReader(videos["P01_03"], fps=30, rgb=True, flow=True)
    # An unreadable JPEG fails when it is reached.
    (tmp_path / "rgb" / "P01_01_frame_0000000002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    reader = FrameReader(videos["P01_01"], fps=30, rgb=True, flow=False)
    with pytest.raises(FrameError, match=r"P01_01_frame_0000000002\.jpg: cannot read"):
        list(reader.rows())


def test_jpeg_spellings_mixed_in_one_video_are_all_read(tmp_path: Path) -> None:
    """Frames 1-4 ``.jpg``, 5-8 ``.JPG`` (and flow in ``.jpeg`` / ``.JPEG``): all 8 frames."""
    _flat(tmp_path, "P01_01", rgb=range(1, 9), u=range(1, 9), v=range(1, 9))
    renamed = {"rgb": ".JPG", "flow": ".JPEG"}
    for folder, suffix in renamed.items():
        for path in sorted((tmp_path / folder).iterdir()):
            if int(path.stem[-10:]) >= 5:
                path.rename(path.with_suffix(suffix))
    (tmp_path / "flow" / "P01_01_flow_u_0000000002.jpg").rename(
        tmp_path / "flow" / "P01_01_flow_u_0000000002.jpeg"
    )
    (video,) = find_frame_videos(tmp_path)
    assert not video.problem and video.output_frames(30) == 8
    assert video.rgb.path(5).name == "P01_01_frame_0000000005.JPG"
    assert video.rgb.path(4).name == "P01_01_frame_0000000004.jpg"
    reader = FrameReader(video, fps=30, rgb=True, flow=True, stack=5)
    assert reader.frames() == list(range(1, 9))
    assert [_level(reader.rgb_image(k)) for k in (4, 5, 8)] == [40, 50, 80]
    assert [_level(c) for c in reader.flow_stack(2)][-2:] == [20, 25]  # the .jpeg u image
    # The EPIC layout as well.
    epic = tmp_path / "epic" / "rgb_frames" / "P02_01"
    for n in range(1, 5):
        _gray(epic / f"frame_{n:010d}.{'jpg' if n < 3 else 'JPG'}", 10 * n, mode="RGB")
    (video,) = find_frame_videos(tmp_path / "epic", video_info={"P02_01": 30.0})
    assert not video.problem and video.output_frames(30) == 4


def test_a_frame_with_another_extension_or_two_spellings_fails_that_video(tmp_path: Path) -> None:
    """Never cut short: a frame saved as .png (or twice) fails the video, naming the file."""
    _flat(tmp_path, "P01_01", rgb=range(1, 5), u=[], v=[])
    _flat(tmp_path, "P01_02", rgb=range(1, 5), u=[], v=[])
    _flat(tmp_path, "P01_03", rgb=range(1, 5), u=[], v=[])
    rgb = tmp_path / "rgb"
    (rgb / "P01_01_frame_0000000003.jpg").rename(rgb / "P01_01_frame_0000000003.png")
    _gray(rgb / "P01_02_frame_0000000002.JPG", 0, mode="RGB")
    (rgb / "P01_03_frame_0000000005.jpg.xmp").write_text("sidecar")  # not named like a frame
    videos = {v.video_id: v for v in find_frame_videos(tmp_path)}
    with pytest.raises(FrameError, match=r"P01_01_frame_0000000003\.png: named like a frame"):
        FrameReader(videos["P01_01"], fps=30, rgb=True, flow=False)
    with pytest.raises(FrameError, match=r"P01_02_frame_0000000002\.jpg: the same frame as "):
        FrameReader(videos["P01_02"], fps=30, rgb=True, flow=False)
    assert not videos["P01_03"].problem and videos["P01_03"].output_frames(30) == 4


def test_epic_layout_maps_native_rates_onto_30_fps(tmp_path: Path) -> None:
    # 60 fps video: RGB frame 2k - 1 and flow image k (flow at 30 fps) become frame k.
    for n in range(1, 13):
        _gray(
            tmp_path / "P01" / "rgb_frames" / "P01_01" / f"frame_{n:010d}.jpg", 10 * n, mode="RGB"
        )
    for n in range(1, 7):
        for kind, offset in (("u", 0), ("v", 5)):
            path = tmp_path / "P01" / "flow_frames" / "P01_01" / kind / f"frame_{n:010d}.jpg"
            _gray(path, 10 * n + offset)
    # 50 fps video, RGB only: frame k shows RGB frame floor(5(k - 1) / 3) + 1.
    for n in range(1, 11):
        _gray(
            tmp_path / "P02" / "rgb_frames" / "P02_01" / f"frame_{n:010d}.jpg", 10 * n, mode="RGB"
        )
    with pytest.raises(ValueError, match="video_info"):
        find_frame_videos(tmp_path)
    videos = {
        v.video_id: v
        for v in find_frame_videos(tmp_path, video_info={"P01_01": 60.0, "P02_01": 50})
    }
    assert videos["P01_01"].layout == "epic" and not videos["P01_01"].problem
    reader = FrameReader(videos["P01_01"], fps=30, rgb=True, flow=True, stack=5)
    assert reader.frames() == list(range(1, 7))
    assert [_level(reader.rgb_image(k)) for k in range(1, 7)] == [10, 30, 50, 70, 90, 110]
    assert [_level(c) for c in reader.flow_stack(3)] == [10, 15] * 3 + [20, 25, 30, 35]
    reader = FrameReader(videos["P02_01"], fps=30, rgb=True, flow=False)
    assert [_level(reader.rgb_image(k)) for k in reader.frames()] == [10, 20, 40, 60, 70, 90]
    with pytest.raises(FrameError, match="no flow images of P02_01"):
        FrameReader(videos["P02_01"], fps=30, rgb=True, flow=True)
    # A video missing from the video-info CSV fails alone.
    (video,) = [
        v for v in find_frame_videos(tmp_path, video_info={"P01_01": 60}) if v.video_id == "P02_01"
    ]
    assert "not in the video-info CSV" in video.problem


def _extract(frames: Path, out: Path, config: Path, overrides: list[str], *extra: str) -> int:
    from feature_extraction.cli import main

    arguments = ["--frames", str(frames), "--out", str(out), "-c", str(config)]
    return main([*arguments, "--progress", "false", *overrides, *extra])


def _stored(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        return {v: g["frames"][()] for v, g in handle.items() if g.attrs["complete"]}


def test_extract_frames_reports_bad_videos_resumes_and_samples_sparsely(
    tmp_path: Path, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    frames = tmp_path / "frames"
    _flat(frames, "P01_01", rgb=range(1, 13), u=range(1, 13), v=range(1, 13))
    _flat(frames, "P01_02", rgb=[1, 2, 4], u=range(1, 5), v=range(1, 5))  # gap
    _flat(frames, "P01_03", rgb=range(1, 4), u=range(1, 4), v=range(1, 3))  # u without v
    _flat(frames, "P01_04", rgb=range(1, 4), u=range(1, 4), v=range(1, 4))
    (frames / "flow" / "P01_04_flow_u_0000000002.jpg").write_bytes(b"broken")
    out = tmp_path / "out"
    assert _extract(frames, out, tiny_config, tiny_overrides) == 1
    printed = capsys.readouterr().out
    assert "1 done, 0 skipped, 3 failed" in printed
    assert "P01_02_frame_0000000003.jpg: missing" in printed
    assert "P01_03_flow_v_0000000003.jpg: missing" in printed
    assert "P01_04_flow_u_0000000002.jpg: cannot read" in printed
    for modality in ("rgb", "flow", "obj"):
        assert {k: v.tolist() for k, v in _stored(out / f"{modality}.h5").items()} == {
            "P01_01": list(range(1, 13))
        }
    # A rerun skips the finished video and tries the failed ones again.
    assert _extract(frames, out, tiny_config, tiny_overrides) == 1
    assert "0 done, 1 skipped, 3 failed" in capsys.readouterr().out
    # Sparse: only the frames the sampling reads (one segment starting at frame 11, 30 fps).
    annotations = tmp_path / "training.csv"
    annotations.write_text("1,P01_01,11,12,0,0,0\n")
    sparse = tmp_path / "sparse"
    options = ["--annotations", str(annotations), "--only-needed", "--modalities", "rgb", "flow"]
    assert _extract(frames, sparse, tiny_config, tiny_overrides, *options) == 0
    from epic_protocol.sampling import anticipation_frames

    expected = sorted({int(f) for f in anticipation_frames(11)})
    assert _stored(sparse / "flow.h5")["P01_01"].tolist() == expected
    import h5py

    for modality in ("rgb", "flow"):  # the dense run's numbers at those frames
        with h5py.File(sparse / f"{modality}.h5") as s, h5py.File(out / f"{modality}.h5") as d:
            dense = d["P01_01"]["features"][()][np.array(expected) - 1]
            np.testing.assert_allclose(s["P01_01"]["features"][()], dense, rtol=1e-4, atol=1e-5)


def test_extract_frames_with_upper_case_jpg_stores_every_frame(
    tmp_path: Path, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    """The report: frames 7-12 named .JPG were dropped and the video marked complete."""
    frames = tmp_path / "frames"
    _flat(frames, "P01_01", rgb=range(1, 13), u=[], v=[])
    _flat(frames, "P01_02", rgb=range(1, 5), u=[], v=[])
    for path in (frames / "rgb").glob("P01_01_frame_*.jpg"):
        if int(path.stem[-10:]) >= 7:
            path.rename(path.with_suffix(".JPG"))
    (frames / "rgb" / "P01_02_frame_0000000003.jpg").rename(
        frames / "rgb" / "P01_02_frame_0000000003.png"
    )
    out = tmp_path / "out"
    assert _extract(frames, out, tiny_config, tiny_overrides, "--modalities", "rgb") == 1
    printed = capsys.readouterr().out
    assert "P01_02_frame_0000000003.png: named like a frame of P01_02 but not a JPEG" in printed
    assert {k: v.tolist() for k, v in _stored(out / "rgb.h5").items()} == {
        "P01_01": list(range(1, 13))
    }
