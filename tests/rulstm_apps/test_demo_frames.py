"""rulstm-demo on frame folders (--frames): the RU-LSTM authors' flat layout and EPIC-KITCHENS'
layout, features as rulstm-extract --frames computes them (flow from the stored flow JPEGs),
and one-line errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rulstm_apps.demo import DemoError, main
from rulstm_apps.demo_inputs import (
    FrameFolder,
    FrameFolderSource,
    build_extractor,
    load_extract_config,
)

FRAMES = 40  # 1.33 s at 30 fps: steps at frames 7, 15, 22, 30, 37
STEP_FRAMES = [7, 15, 22, 30, 37]
SIZE = (64, 48)  # (width, height)


def _rgb(index: int) -> np.ndarray:
    """(H, W, 3) BGR for cv2: a red and a green square moving over grey."""
    width, height = SIZE
    image = np.full((height, width, 3), 40, np.uint8)
    x = (2 * index) % (width - 14)
    image[8:20, x : x + 12] = (40, 40, 220)
    image[28:38, width - 14 - x // 2 : width - 4 - x // 2] = (60, 180, 40)
    return image


def _flow(index: int, component: int) -> np.ndarray:
    """(H, W) uint8 flow image: 128 = no motion, a moving patch of motion."""
    width, height = SIZE
    image = np.full((height, width), 128, np.uint8)
    x = (2 * index) % (width - 14)
    image[8:20, x : x + 12] = 160 if component == 0 else 100
    return image


def write_flat(
    root: Path, video: str = "P01_01", *, frames: int = FRAMES, skip: Path | None = None
) -> Path:
    """The authors' flat layout: <video>_frame_<n>.jpg and <video>_flow_{u,v}_<n>.jpg."""
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "flow").mkdir(parents=True, exist_ok=True)
    for n in range(1, frames + 1):
        cv2.imwrite(str(root / "rgb" / f"{video}_frame_{n:010d}.jpg"), _rgb(n))
        for component, kind in enumerate("uv"):
            cv2.imwrite(
                str(root / "flow" / f"{video}_flow_{kind}_{n:010d}.jpg"), _flow(n, component)
            )
    return root


def _args(frames: Path, checkpoint: Path, tmp_path: Path, tiny, *extra: str) -> list[str]:
    return [
        "--frames", str(frames),
        "--checkpoint", str(checkpoint),
        "--out", str(tmp_path / "frames.mp4"),
        "--predictions-out", str(tmp_path / "frames.jsonl"),
        "--extract_config", str(tiny.config),
        "--progress", "false",
        *extra,
        "--", *tiny.overrides,
    ]  # fmt: skip


def test_flat_frame_folder_gives_the_video_and_the_predictions(
    make_checkpoint, tmp_path, tiny, decode_all
):
    frames = write_flat(tmp_path / "data")
    checkpoint = make_checkpoint("fusion")
    assert main(_args(frames, checkpoint, tmp_path, tiny)) == 0
    video, facts = decode_all(tmp_path / "frames.mp4")
    # 64x48 JPEGs scaled up to 360 rows (480 wide) beside the 330-pixel panel, every frame.
    assert len(video) == FRAMES and video[0].shape == (360, 480 + 330, 3)
    assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "fps": 30.0}
    records = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == STEP_FRAMES
    assert [r["step"] for r in records] == list(range(len(STEP_FRAMES)))
    assert {r["fusion"] for r in records} == {"matt"}
    assert {len(r["anticipations"][0]["top_k"]) for r in records} == {5}


def test_step_features_are_those_of_rulstm_extract_frames(tmp_path, tiny, one_thread):
    """The demo's features of a step frame equal the stored features of rulstm-extract
    --frames (RGB JPEG as stored, flow from the stored u/v JPEGs, no flow estimated)."""
    from epic_protocol.features import FeatureStore
    from feature_extraction import RunOptions, run_extraction

    frames = write_flat(tmp_path / "data", frames=12)
    overrides = [*tiny.overrides, "--modalities", "rgb", "flow", "--num_workers", "0"]
    config = load_extract_config(tiny.config, overrides)
    summary = run_extraction(
        config, RunOptions(videos=None, frames=frames, out=tmp_path / "features", progress=False)
    )
    assert summary is not None and summary.done == ["P01_01"]
    folder = FrameFolder(
        frames, video_id=None, video_info=None, fps=30.0, flow=True, stack=config.flow.stack
    )
    extractor = build_extractor(
        config,
        needed={"rgb": 512, "flow": 512},
        device=None,
        checkpoint="test",
        config_name="tiny",
        flow_from_images=True,
    )
    assert extractor.models.cpu_flow is None  # no flow estimated
    source = FrameFolderSource(folder, extractor)

    class Steps:  # steps on frames 3, 7 and 12
        next_frame = 0

        def steps_at(self, frame: int) -> int:
            return int(frame in (3, 7, 12))

    records = list(source.records(Steps()))
    assert [r.frame for r in records] == list(range(1, 13))
    for record in records:
        if record.frame not in (3, 7, 12):
            assert record.steps == 0 and record.features == {}
            continue
        assert record.steps == 1
        for modality in ("rgb", "flow"):
            store = FeatureStore(tmp_path / "features" / f"{modality}.h5")
            stored = store.lookup("P01_01", np.array([record.frame]))[0]
            np.testing.assert_allclose(record.features[modality], stored, atol=1e-4, rtol=1e-4)


def test_epic_layout_needs_the_video_info_and_maps_60_fps(
    make_checkpoint, tmp_path, tiny, decode_all, capsys
):
    root = tmp_path / "epic"
    rgb = root / "rgb_frames" / "P01_01"
    rgb.mkdir(parents=True)
    for n in range(1, 33):  # 32 frames at 60 fps: 16 output frames at 30 fps
        cv2.imwrite(str(rgb / f"frame_{n:010d}.jpg"), _rgb(n))
    for component, kind in enumerate("uv"):
        folder = root / "flow_frames" / "P01_01" / kind
        folder.mkdir(parents=True)
        for n in range(1, 17):  # flow at half the rate
            cv2.imwrite(str(folder / f"frame_{n:010d}.jpg"), _flow(n, component))
    checkpoint = make_checkpoint("fusion")
    assert main(_args(root, checkpoint, tmp_path, tiny)) == 1
    assert "--video_info" in capsys.readouterr().err
    info = tmp_path / "EPIC_100_video_info.csv"
    info.write_text("video_id,duration,fps,resolution\nP01_01,0.53,60.0,1920x1080\n")
    assert main(_args(root, checkpoint, tmp_path, tiny, "--video-info", str(info))) == 0
    video, _ = decode_all(tmp_path / "frames.mp4")
    assert len(video) == 16
    records = (tmp_path / "frames.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in records] == [7, 15]


@pytest.mark.parametrize(
    "missing, named",
    [
        ("rgb/P01_01_frame_0000000009.jpg", "P01_01_frame_0000000009.jpg: missing"),
        ("flow/P01_01_flow_v_0000000040.jpg", "P01_01_flow_v_0000000040.jpg: missing"),
    ],
)
def test_a_gap_or_a_missing_v_fails_naming_the_file(
    make_checkpoint, tmp_path, tiny, capsys, missing, named
):
    frames = write_flat(tmp_path / "data")
    (frames / missing).unlink()
    checkpoint = make_checkpoint("fusion")
    assert main(_args(frames, checkpoint, tmp_path, tiny)) == 1
    error = capsys.readouterr().err.strip()
    assert named in error and len(error.splitlines()) == 1
    assert not (tmp_path / "frames.jsonl").exists()
    assert not (tmp_path / "frames.jsonl.partial").exists()


def test_the_input_is_a_video_or_a_folder_and_one_video_of_it(tmp_path, tiny):
    frames = write_flat(tmp_path / "data", frames=3)
    write_flat(tmp_path / "data", "P01_02", frames=3)
    kwargs = {"video_info": None, "fps": 30.0, "flow": True, "stack": 5}
    with pytest.raises(DemoError, match="holds 2 videos.*--video_id"):
        FrameFolder(frames, video_id=None, **kwargs)
    with pytest.raises(DemoError, match="no frames of video P02_01"):
        FrameFolder(frames, video_id="P02_01", **kwargs)
    assert FrameFolder(frames, video_id="P01_02", **kwargs).total == 3
    with pytest.raises(DemoError, match="at 30 fps"):
        FrameFolder(frames, video_id="P01_02", **{**kwargs, "fps": 25.0})
    with pytest.raises(DemoError, match="frame folder not found"):
        FrameFolder(tmp_path / "nowhere", video_id=None, **kwargs)
    from epic_protocol.errors import UsageError
    from rulstm_apps.demo import DemoOptions, parse_options, run_demo

    for extra in ([], ["--video", "v.mp4", "--frames", str(frames)]):
        with pytest.raises(UsageError, match="either --video or --frames"):
            parse_options(["--checkpoint", "c.ckpt", *extra])

    for video, folder in ((None, None), (tmp_path / "v.mp4", frames)):
        options = DemoOptions(checkpoint=Path("c.ckpt"), video=video, frames=folder)
        with pytest.raises(DemoError, match="either --video or --frames"):
            run_demo(options)
