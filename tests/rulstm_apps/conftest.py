"""Fixtures of the demo tests: a tiny synthetic video, tiny random RU-LSTM checkpoints and a
tiny extraction config whose feature sizes they match."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from rulstm.models import RULSTM, RULSTMFusion
from rulstm.models.spec import NET_KEY, describe_net

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "extract" / "tiny.yaml"
# Smaller still than tiny.yaml (one model thread: fastest on a busy CI machine): ResNet-18 features stay 512-d and
# the colour-blob detector has its 8 basic colours.
TINY_OVERRIDES = [
    "--decode.width", "64", "--decode.height", "48",
    "--rgb.input_size", "[32, 32]", "--flow.input_size", "[32, 32]", "--threads", "1",
]  # fmt: skip
TINY_DIMS = {"rgb": 512, "flow": 512, "obj": 8}
NUM_CLASSES = 12
VIDEO_FRAMES = 60  # 2 s at 30 fps
VIDEO_SIZE = (64, 48)  # (width, height)


def write_squares_video(path: Path, *, frames: int, width: int, height: int, fps: int = 30) -> Path:
    """Two squares in the detector's red and green moving over a grey background."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for index in range(frames):
            image = np.full((height, width, 3), 40, np.uint8)
            x = (2 * index) % (width - 14)
            image[8:20, x : x + 12] = (220, 40, 40)
            image[28:38, width - 14 - x // 2 : width - 4 - x // 2] = (40, 180, 60)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    width, height = VIDEO_SIZE
    return write_squares_video(
        tmp_path / "P01_01.mp4", frames=VIDEO_FRAMES, width=width, height=height
    )


def save_checkpoint(
    net: torch.nn.Module, path: Path, hyper_parameters: dict[str, Any] | None = None
) -> Path:
    """The layout of ``rulstm fit`` checkpoints: weights under ``net.``, network described."""
    checkpoint: dict[str, Any] = {
        NET_KEY: describe_net(net),
        "state_dict": {f"net.{key}": value for key, value in net.state_dict().items()},
    }
    if hyper_parameters is not None:
        checkpoint["hyper_parameters"] = hyper_parameters
    torch.save(checkpoint, path)
    return path


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    def make(
        kind: str = "fusion",
        *,
        dims: dict[str, int] | None = None,
        hyper_parameters: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Path:
        torch.manual_seed(0)
        dims = dict(TINY_DIMS if dims is None else dims)
        if kind == "fusion":
            net = RULSTMFusion(num_classes=NUM_CLASSES, feat_dims=dims, hidden=8)
        else:
            net = RULSTM(num_classes=NUM_CLASSES, feat_dim=dims[kind], hidden=8)
        return save_checkpoint(net.eval(), tmp_path / (name or f"{kind}.ckpt"), hyper_parameters)

    return make


@pytest.fixture
def actions_csv(tmp_path: Path) -> Path:
    """An EK100-style vocabulary of the NUM_CLASSES actions: action a is (a % 3, a)."""
    lines = ["id,verb,noun,action"]
    verbs = ["take", "put", "open"]
    lines += [f"{a},{a % 3},{a},{verbs[a % 3]} thing{a}" for a in range(NUM_CLASSES)]
    path = tmp_path / "actions.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def demo_args(tiny_video: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """Command-line arguments of a demo run on the tiny video with the tiny config."""

    def args(checkpoint: Path, *extra: str, out: Path | None = None) -> list[str]:
        return [
            "--video", str(tiny_video),
            "--checkpoint", str(checkpoint),
            "--out", str(out or tmp_path / "demo.mp4"),
            "--extract_config", str(TINY_CONFIG),
            "--progress", "false",
            *extra,
            "--", *TINY_OVERRIDES,
        ]  # fmt: skip

    return args


def _decode_all(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "fps": float(stream.average_rate),
        }
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return frames, facts


@pytest.fixture
def decode_all() -> Callable[[Path], tuple[list[np.ndarray], dict[str, Any]]]:
    """Every frame of a video (RGB) and its stream's codec facts."""
    return _decode_all


@pytest.fixture
def tiny() -> SimpleNamespace:
    """The sizes the fixtures use."""
    return SimpleNamespace(
        dims=dict(TINY_DIMS),
        classes=NUM_CLASSES,
        frames=VIDEO_FRAMES,
        size=VIDEO_SIZE,
        config=TINY_CONFIG,
        overrides=list(TINY_OVERRIDES),
    )


@pytest.fixture
def one_thread():
    """One torch thread (as the demo runs with --threads 1), restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def web_model(make_checkpoint, tiny, actions_csv):
    """rulstm-web's model: a tiny fusion checkpoint over the tiny extraction config."""
    from rulstm_apps.web_request import WebModel

    return WebModel(
        checkpoints=(make_checkpoint("fusion"),),
        extract_config=tiny.config,
        extract_overrides=tuple(tiny.overrides),
        actions=str(actions_csv),
    )
