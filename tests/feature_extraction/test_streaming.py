"""The streaming extractor gives the batch extraction's features, frame by frame."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from feature_extraction.cli import main
from feature_extraction.config import load_config
from feature_extraction.streaming import StreamingExtractor
from feature_extraction.video import decode_video


def test_streaming_matches_the_batch_extraction(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    path = make_video("videos/clip.mp4", num_frames=12, fps=30, width=96, height=64, speed=2)
    out = tmp_path / "out"
    assert (
        main(
            [
                "--videos",
                str(path),
                "--out",
                str(out),
                "-c",
                str(tiny_config),
                "--progress",
                "false",
                *tiny_overrides,
            ]
        )
        == 0
    )
    config = load_config(tiny_config, tiny_overrides)
    extractor = StreamingExtractor(config)
    assert extractor.dims == {"rgb": 512, "flow": 512, "obj": 8}
    # Native-size frames: the extractor resizes them exactly like the batch decoder does.
    streamed = [extractor.push(decoded.image) for decoded in decode_video(path, fps=30)]
    assert extractor.frame_number == 12 and extractor.last_detections is not None
    for modality in ("rgb", "flow", "obj"):
        with h5py.File(out / f"{modality}.h5", "r") as handle:
            stored = handle["clip/features"][()]
        pushed = np.stack([features[modality] for features in streamed])
        np.testing.assert_allclose(pushed, stored, rtol=1e-4, atol=1e-5)
    # reset() starts a new video: the first frame again has no motion history.
    first_flow = streamed[0]["flow"]
    extractor.reset()
    again = extractor.push(next(iter(decode_video(path, fps=30))).image)
    np.testing.assert_allclose(again["flow"], first_flow, rtol=1e-5, atol=1e-6)
    # Pushing without computing (the demo computes one frame in 7.5) keeps the flow history.
    extractor.reset()
    frames = [decoded.image for decoded in decode_video(path, fps=30)]
    for index, image in enumerate(frames[:9]):
        assert extractor.push(image, compute=False, flow=index >= 3) == {}
    tenth = extractor.push(frames[9])
    np.testing.assert_allclose(tenth["flow"], streamed[9]["flow"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tenth["rgb"], streamed[9]["rgb"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="RGB uint8"):
        extractor.push(np.zeros((4, 4), np.uint8))


def test_a_portrait_phone_clip_streams_upright(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    # Coded as 64x48 landscape with a display matrix turning it 90 degrees: 48x64 portrait,
    # resized to height 96 with its portrait aspect kept (72x96).
    path = make_video("phone.mp4", num_frames=4, fps=30, rotation=90)
    config = load_config(
        tiny_config, [*tiny_overrides, "--decode.width", "null", "--decode.height", "96"]
    )
    extractor = StreamingExtractor(config)
    for decoded in decode_video(path, fps=30):
        assert decoded.image.shape == (64, 48, 3)
        features = extractor.push(decoded.image)
        assert extractor.last_image is not None and extractor.last_image.shape == (96, 72, 3)
        assert set(features) == {"rgb", "flow", "obj"}


def test_stored_flow_extractor_takes_stacks_not_videos(
    tiny_config: Path, tiny_overrides: list[str]
) -> None:
    """With flow_from_images no flow is estimated: push_stored takes the stored stack (frame
    folders), push is refused, and a missing or misshapen stack is named."""
    config = load_config(tiny_config, [*tiny_overrides, "--modalities", "rgb", "flow"])
    extractor = StreamingExtractor(config, flow_from_images=True)
    assert extractor.models.cpu_flow is None and extractor.models.raft is None
    image = np.full((48, 64, 3), 90, np.uint8)
    image.setflags(write=False)  # as JPEG readers return them
    still = np.full((2 * config.flow.stack, 48, 64), 128, np.uint8)
    moving = still.copy()
    moving[:, 10:30, 10:30] = 200
    features = extractor.push_stored(image, flow=still)
    assert set(features) == {"rgb", "flow"} and features["flow"].shape == (512,)
    again = extractor.push_stored(image, flow=moving)
    np.testing.assert_array_equal(features["rgb"], again["rgb"])
    assert not np.allclose(features["flow"], again["flow"])  # the stack is what is read
    with pytest.raises(ValueError, match="use push_stored"):
        extractor.push(image)
    with pytest.raises(ValueError, match="flow stack"):
        extractor.push_stored(image)
    with pytest.raises(ValueError, match=r"uint8 \(10, H, W\)"):
        extractor.push_stored(image, flow=still[:4])
