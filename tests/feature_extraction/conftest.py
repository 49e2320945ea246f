"""Fixtures of the extraction tests: synthetic videos in tmp_path, a tiny offline config."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "extract" / "tiny.yaml"
CODE_BITS = 8  # frame indices up to 255 are drawn as 8 black/white blocks


def coded_frame(index: int, *, height: int = 48, width: int = 64, shift: int = 0) -> np.ndarray:
    """An RGB frame showing ``index`` as a row of 8 binary blocks (robust to lossy coding)
    above a textured band shifted right by ``shift`` pixels (something for optical flow)."""
    frame = np.zeros((height, width, 3), np.uint8)
    block = width // CODE_BITS
    for bit in range(CODE_BITS):
        if (index >> bit) & 1:
            frame[:block, bit * block : (bit + 1) * block] = 255
    rows, cols = np.mgrid[block + 2 : height, 0:width]
    texture = 128 + 100 * np.sin((cols - shift) / 3.0) * np.cos(rows / 4.0)
    frame[block + 2 :, :, 1] = texture.astype(np.uint8)
    frame[block + 2 :, :, 2] = (255 - texture).astype(np.uint8)
    return frame


def read_code(frame: np.ndarray) -> int:
    """Inverse of :func:`coded_frame` (works on resized frames too)."""
    height, width = frame.shape[:2]
    block_w = width / CODE_BITS
    block_h = height * (48 // CODE_BITS) / 48
    value = 0
    for bit in range(CODE_BITS):
        x0, x1 = int(bit * block_w + block_w / 4), int((bit + 1) * block_w - block_w / 4)
        patch = frame[: max(1, int(block_h * 0.7)), x0:x1]
        if patch.mean() > 127:
            value |= 1 << bit
    return value


def write_video(
    path: Path,
    frames: np.ndarray,
    *,
    fps: float = 30.0,
    codec: str = "libx264",
    times: Sequence[Fraction] | None = None,
    rotation: int = 0,
    mirrored: bool = False,
    faststart: bool = False,
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames.

    ``times``: each frame's presentation time in seconds (variable frame rate; default
    i / fps). ``rotation``/``mirrored``: a display matrix turning the picture ``rotation``
    degrees counter-clockwise, then mirroring it, as phones write for portrait video.
    ``faststart``: the MP4 index before the data, so that a file cut short still announces
    every frame.
    """
    import av

    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "faststart"} if faststart else {}
    time_base = Fraction(1, 600)  # a multiple of every rate the tests use (10, 25, 30, 50, 60)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if times is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        if rotation or mirrored:
            stream.set_display_rotation(rotation, hflip=mirrored)
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast"}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = int(Fraction(times[index]) / time_base), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def coded_video(
    path: Path,
    *,
    num_frames: int,
    fps: float = 30.0,
    height: int = 48,
    width: int = 64,
    speed: int = 1,
    **options,
) -> Path:
    """A video whose frame i (0-based) shows the code i+1 and texture shifted by speed*i
    (``options``: see :func:`write_video`)."""
    frames = np.stack(
        [coded_frame(i + 1, height=height, width=width, shift=speed * i) for i in range(num_frames)]
    )
    return write_video(path, frames, fps=fps, **options)


def cut_after_packets(path: Path, out: Path, *, packets: int) -> Path:
    """Copy ``path`` cut short right before its packet number ``packets`` (in file order), as
    an interrupted copy or download leaves it: the container still announces every frame."""
    import av

    with av.open(str(path)) as container:
        positions = sorted(p.pos for p in container.demux(video=0) if p.size)
    out.write_bytes(path.read_bytes()[: positions[packets]])
    return out


@pytest.fixture(autouse=True)
def _single_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and do not fight the other tests' processes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "clip.mp4", **kwargs) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return coded_video(path, **kwargs)

    return make


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Overrides making the tiny config even smaller for tests."""
    return [
        "--decode.width",
        "64",
        "--decode.height",
        "48",
        "--rgb.input_size",
        "[32, 32]",
        "--flow.input_size",
        "[32, 32]",
        "--num_workers",
        "0",
        "--threads",
        "1",
    ]


@pytest.fixture(name="read_code")
def read_code_fixture() -> Callable[[np.ndarray], int]:
    return read_code


@pytest.fixture
def tiny_config() -> Path:
    return TINY_CONFIG
