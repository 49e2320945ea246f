"""Progress a user can trust: model loading shown as a step, a frame bar that moves after every
modality's batch, and an up-front estimate when the chosen models will take long."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from feature_extraction import progress
from feature_extraction.cli import build_parser, main
from feature_extraction.config import ExtractConfig, config_from_namespace
from feature_extraction.loop import ExtractionModule, StagingSink
from feature_extraction.models import FeatureComputer, build_models
from feature_extraction.pipeline import Chunk
from feature_extraction.progress import format_estimate, format_rate
from feature_extraction.runner import describe_models, slow_run_hint


def load_extract_config(path: Path, overrides: list[str]) -> ExtractConfig:
    parser = build_parser()
    namespace = parser.parse_args(["--videos", ".", "--out", ".", "-c", str(path), *overrides])
    return config_from_namespace(parser, namespace)


class Listener:
    def __init__(self) -> None:
        self.frames: list[float] = []

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


def test_the_module_reports_each_modality_batch_and_the_features_stay_the_same(
    tiny_config: Path, tiny_overrides: list[str]
) -> None:
    config = load_extract_config(tiny_config, tiny_overrides)
    computer = FeatureComputer.from_models(build_models(config, device=torch.device("cpu")))
    listener = Listener()
    module = ExtractionModule(computer=computer, batch_size=4, progress=listener)
    modalities = ("rgb", "flow", "obj")
    first = module.predict_step(_chunk(modalities, 6), 0)
    module.predict_step(_chunk(modalities, 2), 1)
    # The bar moves after each modality: a third of the chunk's frames each time.
    assert listener.frames == [2.0, 2.0, 2.0, 2 / 3, 2 / 3, 2 / 3]
    # Reporting progress changes nothing in the features.
    plain = ExtractionModule(computer=computer, batch_size=4).predict_step(_chunk(modalities, 6), 0)
    for modality in ("rgb", "flow", "obj"):
        assert (first[modality] == plain[modality]).all(), modality


def test_format_estimate() -> None:
    assert format_estimate(0.2) == "about 1 s"
    assert format_estimate(75) == "about 75 s"
    assert format_estimate(12 * 60 + 10) == "about 12 min"
    assert format_estimate(3 * 3600) == "about 3.0 h"


def test_format_rate() -> None:
    assert format_rate(18.4) == "18 frames/s"
    assert format_rate(2.44) == "2.4 frames/s"
    assert format_rate(0.351) == "0.35 frames/s"
    assert format_rate(0.0842, "clip") == "0.084 clips/s"


def _feed_sink(
    tmp_path: Path,
    *,
    planned: int,
    batches: list[tuple[int, float]],
    rank: int = 0,
    startup: float = 0.0,
    unit: str = "frame",
) -> StagingSink:
    """A StagingSink told of ``batches`` (frames, wall seconds each took) of one video's
    rgb features, under a fake clock starting at the bar's start, the first batch beginning
    ``startup`` seconds later; long runs are those over 120 s, measured after 10 s, roughly
    estimated from a first batch of at least 30 s."""
    now = [1000.0]
    sink = StagingSink(
        out=tmp_path / "features",
        dims={"rgb": 4},
        fps=30.0,
        provenances={"rgb": {}},
        keep_detections=False,
        class_names=(),
        progress=False,
        slow_hint="try a smaller config",
        long_run_seconds=120.0,
        clock=lambda: now[0],
        measure_seconds=10.0,
        rough_seconds=30.0,
        unit=unit,
    )
    # Two ranks, each with one video of ``planned`` frames.
    plan = SimpleNamespace(jobs=[SimpleNamespace(expected=planned)] * 2)
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(plan=plan, num_workers=0),
        global_rank=rank,
        world_size=2,
        received_sigterm=False,
    )
    sink.setup(trainer, None, "predict")  # type: ignore[arg-type]
    now[0] += startup
    first = 1
    for index, (frames, seconds) in enumerate(batches):
        numbers = torch.arange(first, first + frames)
        first += frames
        chunk = Chunk(
            video="P01_01",
            modalities=("rgb",),
            frames=numbers,
            keep=torch.ones(frames, dtype=torch.bool),
            images=torch.zeros(0, dtype=torch.uint8),
            flow=torch.zeros(0, dtype=torch.uint8),
            last=False,
        )
        sink.on_predict_batch_start(trainer, None, chunk, index)  # type: ignore[arg-type]
        now[0] += seconds
        sink.computed(frames)
        rows = {"rgb": np.full((frames, 4), index, dtype=np.float32)}
        sink.write_on_batch_end(trainer, None, rows, None, chunk, index)  # type: ignore[arg-type]
    sink.on_predict_end(trainer, None)  # type: ignore[arg-type]
    return sink


def test_no_estimate_from_a_short_warm_up_batch_alone(tmp_path: Path, capsys) -> None:
    # A cold first batch of 8 frames in 20 s would announce 1000 frames in 42 min; it is
    # too short for a rough estimate and not counted in the measured one, and one more batch
    # of 2 s is too short a measure.
    sink = _feed_sink(tmp_path, planned=1000, batches=[(8, 20.0), (8, 2.0)])
    assert sink.estimated_seconds is None
    assert "rulstm-extract" not in capsys.readouterr().err


def _messages(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "rulstm-extract" in line]


def test_the_estimate_comes_from_the_frames_per_second_after_the_warm_up(
    tmp_path: Path, capsys
) -> None:
    batches = [(8, 20.0), (8, 4.0), (8, 4.0), (8, 4.0), (8, 1.0), (8, 100.0)]
    sink = _feed_sink(tmp_path, planned=1000, batches=batches)
    # Measured from the end of the warm-up to the third batch after it (12 s >= 10 s):
    # 24 frames in 12 s, 2 frames/s. The run: the 32 s so far, plus the 968 frames left at
    # 2 frames/s (484 s). Later batches change nothing.
    assert sink.estimated_seconds == pytest.approx(32.0 + 484.0)
    assert _messages(capsys) == [
        "rulstm-extract: about 9 min for 1000 frames on cpu (measured: 2.0 frames/s over 24 "
        "frames after the first batch); try a smaller config"
    ]


def test_a_slow_first_batch_gives_a_rough_estimate_refined_after_the_next(
    tmp_path: Path, capsys
) -> None:
    """A very slow model (V-JEPA 2 ViT-L on a CPU: 0.08 clips/s): the first batch of 8 clips
    takes 100 s, 5 s after the bar appeared; the estimate is not withheld until the second
    batch (another 100 s) but given, marked rough, from the first, and then refined."""
    batches = [(8, 100.0), (8, 95.0), (8, 95.0)]
    sink = _feed_sink(tmp_path, planned=400, batches=batches[:1], startup=5.0, unit="clip")
    # Rough: 8 clips in the 100 s of the first batch (warm-up included), 0.08 clips/s: the
    # 105 s so far plus the 392 clips left at that rate (4900 s).
    assert sink.estimated_seconds == pytest.approx(105.0 + 4900.0)
    assert _messages(capsys) == [
        "rulstm-extract: rough estimate: about 83 min for 400 clips on cpu (the first batch: "
        "8 clips in 100 s, warm-up included; refined after the next batches); try a smaller "
        "config"
    ]
    sink = _feed_sink(tmp_path, planned=400, batches=batches, startup=5.0, unit="clip")
    # Refined after the next batch (95 s >= 10 s): 8 clips in 95 s; the 200 s so far plus
    # the 384 clips left at 0.084 clips/s (4560 s).
    assert sink.estimated_seconds == pytest.approx(200.0 + 384 * 95.0 / 8)
    assert _messages(capsys)[1:] == [
        "rulstm-extract: refined estimate: about 79 min for 400 clips on cpu (measured: "
        "0.084 clips/s over 8 clips after the first batch)"
    ]


def test_a_rough_estimate_is_refined_even_when_the_run_turns_out_short(
    tmp_path: Path, capsys
) -> None:
    # A first batch of 40 s (a cold start) says 1000 frames take long; the next batches are
    # fast: the refined estimate is said too, so that the rough one does not stand.
    batches = [(8, 40.0), (8, 1.0), (8, 1.0), (8, 10.0)]
    sink = _feed_sink(tmp_path, planned=200, batches=batches)
    assert sink.estimated_seconds == pytest.approx(52.0 + 168 / 2.0)
    messages = _messages(capsys)
    assert len(messages) == 2
    assert messages[0].startswith("rulstm-extract: rough estimate: about 17 min for 200 frames")
    assert messages[1] == (
        "rulstm-extract: refined estimate: about 2 min for 200 frames on cpu (measured: 2.0 "
        "frames/s over 24 frames after the first batch)"
    )


@pytest.mark.parametrize(
    ("planned", "rank", "seconds"),
    [(100, 0, 32.0 + 34.0), (1000, 1, 32.0 + 484.0)],  # 66 s is not long; rank 1 is quiet
)
def test_short_runs_and_other_ranks_print_no_estimate(
    tmp_path: Path, capsys, planned: int, rank: int, seconds: float
) -> None:
    batches = [(8, 20.0), (8, 4.0), (8, 4.0), (8, 4.0)]
    sink = _feed_sink(tmp_path, planned=planned, batches=batches, rank=rank)
    assert sink.estimated_seconds == pytest.approx(seconds)
    assert "rulstm-extract" not in capsys.readouterr().err


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
    # A foundation backbone on a CPU: not the ResNet-18s of cpu_small.yaml.
    vjepa2 = load_extract_config(repo / "configs" / "extract" / "vjepa2.yaml", [])
    hint = slow_run_hint(vjepa2, torch.device("cpu"))
    assert "GPU work" in hint and "--only-needed" in hint and "cpu_small" not in hint


@pytest.mark.parametrize(("long_run", "rough"), [(False, False), (True, False), (True, True)])
def test_a_run_shows_loading_a_moving_frame_bar_and_an_estimate_when_long(
    tmp_path: Path,
    make_video,
    tiny_config: Path,
    tiny_overrides: list[str],
    capsys,
    monkeypatch,
    long_run: bool,
    rough: bool,
) -> None:
    make_video("videos/P01_01.mp4", num_frames=20, fps=30)
    make_video("videos/P01_02.mp4", num_frames=12, fps=30)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # draw every update (tqdm reads TQDM_*)
    # rough: every first batch is slow enough for a rough estimate; else none however slow
    # the first batch is on a loaded machine.
    monkeypatch.setattr(progress, "ROUGH_SECONDS", 0.0 if rough else float("inf"))
    if long_run:  # every run counts as long, measured from the second batch on
        monkeypatch.setattr(progress, "LONG_RUN_SECONDS", -1.0)
        monkeypatch.setattr(progress, "MEASURE_SECONDS", 0.0)
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
    assert lines[0].endswith("(for cpu, 32-true)")  # the device and the precision
    assert re.fullmatch(r"models ready in \d+\.\d s: rgb 512-d, flow 512-d, obj 8-d", lines[1])
    bar = captured.err.replace("\r", "\n")
    # One bar over the 32 frames of both videos, in frames, with the rate and the videos done.
    assert "32/32 frames" in bar and "frame/s" in bar and "2/2 videos" in bar
    assert "| 0/32 frames" in bar and "decoding; 0/2 videos" in bar  # shown before the frames
    assert "| 0/32 frames" in bar and "P01_01 (first batch, warm-up); 0/2 videos" in bar
    # It moved more often than once per video.
    counts = {int(n) for n in re.findall(r"\| (\d+)/32 frames", bar)}
    assert len(counts) > 3, counts
    said = [line for line in bar.splitlines() if line.startswith("rulstm-extract:")]
    measured = (
        r"rulstm-extract: (refined estimate: )?about \d+ (s|min) for 32 frames on cpu "
        r"\(measured: [\d.]+ frames/s over 4 frames after the first batch\)"
    )
    hint = "; the models are small already"
    if not long_run:
        assert said == [], said
    elif not rough:
        assert len(said) == 1 and re.fullmatch(measured + hint + ".*", said[0]), said
    else:  # the rough one from the first batch of 4 frames, then the measured one
        assert len(said) == 2, said
        assert re.fullmatch(
            r"rulstm-extract: rough estimate: about \d+ (s|min) for 32 frames on cpu \(the "
            r"first batch: 4 frames in \d+ s, warm-up included; refined after the next "
            r"batches\)" + hint + ".*",
            said[0],
        ), said
        assert re.fullmatch(measured, said[1]) and "refined estimate" in said[1], said
