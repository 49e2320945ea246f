"""Progress a user can trust: model loading shown as a step, a frame bar that moves after every
modality's batch, and an up-front estimate when the chosen models will take long."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from feature_extraction import loop
from feature_extraction.cli import build_parser, main
from feature_extraction.config import ExtractConfig, config_from_namespace
from feature_extraction.loop import ExtractionModule, format_estimate
from feature_extraction.models import FeatureComputer, build_models
from feature_extraction.pipeline import Chunk
from feature_extraction.runner import describe_models, slow_run_hint


def load_extract_config(path: Path, overrides: list[str]) -> ExtractConfig:
    parser = build_parser()
    namespace = parser.parse_args(["--videos", ".", "--out", ".", "-c", str(path), *overrides])
    return config_from_namespace(parser, namespace)


class Listener:
    def __init__(self) -> None:
        self.timed: list[dict[str, float]] = []
        self.frames: list[float] = []

    def first_frame_timed(self, seconds: dict[str, float]) -> None:
        self.timed.append(seconds)

    def computed(self, frames: float) -> None:
        self.frames.append(frames)


def _chunk(modalities: tuple[str, ...], kept: int) -> Chunk:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (kept, 48, 64, 3), dtype=torch.uint8, generator=generator)
    flow = torch.randint(0, 256, (kept, 10, 48, 64), dtype=torch.uint8, generator=generator)
    return Chunk(
        video="P01_01",
        modalities=modalities,
        frames=torch.arange(1, kept + 1),
        keep=torch.ones(kept, dtype=torch.bool),
        images=images,
        flow=flow if "flow" in modalities else torch.zeros(0, dtype=torch.uint8),
        last=False,
    )


def test_the_module_reports_each_modality_batch_and_times_one_frame_once(
    tiny_config: Path, tiny_overrides: list[str]
) -> None:
    config = load_extract_config(tiny_config, tiny_overrides)
    computer = FeatureComputer.from_models(build_models(config, device=torch.device("cpu")))
    listener = Listener()
    module = ExtractionModule(computer=computer, batch_size=4, progress=listener)
    modalities = ("rgb", "flow", "obj")
    first = module.predict_step(_chunk(modalities, 6), 0)
    module.predict_step(_chunk(modalities, 2), 1)
    # One estimate, before the first batch, with every modality's time for one frame.
    assert len(listener.timed) == 1 and set(listener.timed[0]) == set(modalities)
    assert all(seconds >= 0 for seconds in listener.timed[0].values())
    # The bar moves after each modality: a third of the chunk's frames each time.
    assert listener.frames == [2.0, 2.0, 2.0, 2 / 3, 2 / 3, 2 / 3]
    # Timing one frame alone changes nothing in the features.
    plain = ExtractionModule(computer=computer, batch_size=4).predict_step(_chunk(modalities, 6), 0)
    for modality in ("rgb", "flow", "obj"):
        assert (first[modality] == plain[modality]).all(), modality


def test_format_estimate() -> None:
    assert format_estimate(0.2) == "about 1 s"
    assert format_estimate(75) == "about 75 s"
    assert format_estimate(12 * 60 + 10) == "about 12 min"
    assert format_estimate(3 * 3600) == "about 3.0 h"


def test_describe_models_and_the_cpu_hint() -> None:
    repo = Path(__file__).resolve().parents[2]
    default = load_extract_config(repo / "configs" / "extract" / "default.yaml", [])
    text = describe_models(default)
    assert "rgb resnet50 (ImageNet weights)" in text
    assert "obj faster_rcnn fasterrcnn_resnet50_fpn (COCO weights)" in text
    hint = slow_run_hint(default, torch.device("cpu"))
    assert "--modalities rgb flow" in hint and "configs/extract/cpu_small.yaml" in hint
    small = load_extract_config(
        repo / "configs" / "extract" / "cpu_small.yaml", ["--rgb.weights", "none"]
    )
    assert tuple(small.modalities) == ("rgb", "flow")
    assert "rgb resnet18 (seeded random weights)" in describe_models(small)


@pytest.mark.parametrize("long_run", [False, True])
def test_a_run_shows_loading_a_moving_frame_bar_and_an_estimate_when_long(
    tmp_path: Path,
    make_video,
    tiny_config: Path,
    tiny_overrides: list[str],
    capsys,
    monkeypatch,
    long_run: bool,
) -> None:
    make_video("videos/P01_01.mp4", num_frames=20, fps=30)
    make_video("videos/P01_02.mp4", num_frames=12, fps=30)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # draw every update (tqdm reads TQDM_*)
    if long_run:  # every run counts as long
        monkeypatch.setattr(loop, "LONG_RUN_SECONDS", -1.0)
    code = main(
        [
            "--videos",
            str(tmp_path / "videos"),
            "--out",
            str(tmp_path / "features"),
            "-c",
            str(tiny_config),
            *tiny_overrides,
            "--batch_size",
            "4",
            "--progress",
            "true",
        ]  # fmt: skip
    )
    assert code == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("loading the models: rgb resnet18 (seeded random weights)")
    assert re.fullmatch(r"models ready in \d+\.\d s", lines[1])
    bar = captured.err.replace("\r", "\n")
    # One bar over the 32 frames of both videos, in frames, with the rate and the videos done.
    assert "32/32 frames" in bar and "frame/s" in bar and "2/2 videos" in bar
    assert "| 0/32 frames" in bar and "decoding; 0/2 videos" in bar  # shown before the frames
    # It moved more often than once per video.
    counts = {int(n) for n in re.findall(r"\| (\d+)/32 frames", bar)}
    assert len(counts) > 3, counts
    estimate = re.search(
        r"rulstm-extract: about \d+ s for 32 frames on cpu \(one frame took rgb \d+ ms, "
        r"flow \d+ ms, obj \d+ ms\); the models are small already",
        captured.err,
    )
    assert (estimate is not None) == long_run, captured.err
