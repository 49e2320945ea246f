"""Benchmark the extraction: frames/s of decoding, flow, each model alone and end to end.

Usage::

    python scripts/bench_extract.py -c configs/extract/quickstart.yaml
    python scripts/bench_extract.py -c configs/extract/cpu.yaml --video clip.mkv --rgb.weights none
    python scripts/bench_extract.py -c configs/extract/rulstm_tsn.yaml --max_frames 64 --models_only
    python scripts/bench_extract.py --backbones            # foundation families side by side
    python scripts/bench_extract.py --backbones --sizes base --device cuda --flops --ek100

``--backbones`` times the frozen foundation backbones (extra [backbones]) side by side, at tiny
and base sizes, with random weights built from the real architectures (no download): library
preprocessing + forward, features per second (a video model's feature reads a clip of T
frames, so its frames/s is clips/s); see ``scripts/bench_backbones.py`` for its options.

Without ``--video`` it generates a synthetic clip (moving coloured shapes, 640x360, 30 fps).
Any config field can be overridden as in ``rulstm-extract``. The "overhead" column compares
the end-to-end time with the models' forward time alone on the same frames: what decoding,
flow and writing cost on top of the models (negative when workers hide them completely).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backbones import add_selection_arguments  # noqa: E402
from bench_backbones import main as bench_backbones  # noqa: E402

from epic_protocol.errors import ArgumentParser, cli_main  # noqa: E402
from epic_protocol.precision import device_description  # noqa: E402
from feature_extraction import (  # noqa: E402
    ExtractConfig,
    FeatureComputer,
    RunOptions,
    build_models,
    decode_video,
    load_config,
    resolve_device,
    resolve_precision,
    run_extraction,
)


def synthetic_video(
    path: Path, *, seconds: float, fps: int = 30, width: int = 640, height: int = 360
) -> Path:
    """Flat-coloured shapes moving over a textured background (H.264)."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    background = (100 + 40 * np.sin(cols / 17.0) * np.cos(rows / 23.0)).astype(np.uint8)
    colors = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (235, 220, 50)]
    starts = rng.uniform([0, 0], [width, height], size=(len(colors), 2))
    speeds = rng.uniform(-4, 4, size=(len(colors), 2))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20"}
        for index in range(int(seconds * fps)):
            frame = np.repeat(background[..., None], 3, axis=2)
            for color, start, speed in zip(colors, starts, speeds):
                x, y = (start + speed * index) % (width, height)
                cv2.rectangle(frame, (int(x), int(y)), (int(x) + 60, int(y) + 40), color, -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def timed(function: Callable[[], object], *, repeat: int = 1) -> float:
    function()  # warm-up (allocations, lazy initialisation)
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat


@cli_main("bench_extract.py")
def main(argv: Sequence[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--config", type=Path, default=None)
    parser.add_argument(
        "--video", type=Path, default=None, help="Video to benchmark (default: a synthetic one)."
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="Length of the synthetic video."
    )
    parser.add_argument(
        "--max_frames", type=int, default=300, help="Frames used for the model-only timings."
    )
    parser.add_argument(
        "--models_only",
        action="store_true",
        help="Skip the end-to-end runs (decoding, flow and each model alone only).",
    )
    parser.add_argument(
        "--backbones",
        action="store_true",
        help="Time the foundation backbones side by side instead (extra [backbones]), with "
        "the options below and --device, --precision (one or more), --threads; see "
        "scripts/bench_backbones.py.",
    )
    backbones = parser.add_argument_group("with --backbones")
    add_selection_arguments(backbones)
    if "--backbones" in argv:  # bench_backbones.py's main: its status, its error line
        return bench_backbones([a for a in argv if a != "--backbones"])
    known, overrides = parser.parse_known_args(argv)
    config: ExtractConfig = load_config(known.config, overrides)
    torch.set_num_threads(config.resolved_threads())
    device = resolve_device(config.device)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        video = known.video or synthetic_video(work / "synthetic.mp4", seconds=known.seconds)
        print(
            f"video: {video}; device: {device}; torch threads: {torch.get_num_threads()}; "
            f"workers: {config.resolved_workers()}; batch: {config.batch_size}; "
            f"precision: {config.precision} -> {resolve_precision(config.precision, device)}"
        )
        print(device_description(device))

        started = time.perf_counter()
        frames = [
            d.image
            for d in decode_video(
                video,
                fps=config.fps,
                width=config.decode.width,
                height=config.decode.height,
                backend=config.decode.backend,
            )
        ]
        decode_s = time.perf_counter() - started
        print(
            f"decode ({config.decode.backend}, {frames[0].shape[1]}x{frames[0].shape[0]}): "
            f"{len(frames) / decode_s:8.1f} frames/s ({len(frames)} frames)"
        )

        models = build_models(config, device=device)
        computer = FeatureComputer.from_models(models).to(device).eval()
        sample = frames[: known.max_frames]
        batches = [
            torch.from_numpy(np.stack(sample[i : i + config.batch_size])).to(device)
            for i in range(0, len(sample), config.batch_size)
        ]
        forward_fps: dict[str, float] = {}
        stacks = None
        if models.flow_source is not None and models.cpu_flow is not None:
            flow = models.flow_source.new_stream()
            started = time.perf_counter()
            stacks = []
            for k, image in enumerate(sample, 1):
                stacks.append(flow.push_frames([k], image[None], [True])[0])
            flow_s = time.perf_counter() - started
            print(
                f"flow {models.flow_method} (fields + stacks): {len(sample) / flow_s:8.1f} frames/s"
            )
        with torch.no_grad():
            if computer.rgb is not None:
                seconds = timed(lambda: [computer.rgb_features(b) for b in batches])
                forward_fps["rgb"] = len(sample) / seconds
            if computer.flow is not None:
                if stacks is not None:
                    flow_batches = [
                        torch.from_numpy(np.stack(stacks[i : i + config.batch_size])).to(device)
                        for i in range(0, len(stacks), config.batch_size)
                    ]
                    seconds = timed(lambda: [computer.flow_features(b) for b in flow_batches])
                else:  # RAFT: time fields and backbone together, as they run in the main process

                    def raft_and_backbone() -> None:
                        stream = computer.new_flow_stream()
                        for start, batch in zip(range(0, len(sample), config.batch_size), batches):
                            numbers = list(range(start + 1, start + 1 + len(batch)))
                            stacks = stream.push_frames(numbers, batch, [True] * len(batch))
                            computer.flow_features(stacks)

                    seconds = timed(raft_and_backbone)
                forward_fps["flow"] = len(sample) / seconds
            if computer.detector is not None:
                seconds = timed(lambda: [computer.object_features(b) for b in batches])
                forward_fps["obj"] = len(sample) / seconds
        for modality, fps in forward_fps.items():
            backbone = (
                getattr(config, modality).backbone if modality != "obj" else config.obj.detector
            )
            print(f"model only {modality:4s} ({backbone}): {fps:8.1f} frames/s")
        if known.models_only:
            return

        print("end to end (rulstm-extract, fresh output folder, models built beforehand excluded):")
        runs = [[m] for m in config.modalities] + (
            [list(config.modalities)] if len(config.modalities) > 1 else []
        )
        for modalities in runs:
            run_config = replace(config, modalities=modalities)
            out = work / ("out_" + "_".join(modalities))
            summary = run_extraction(
                run_config, RunOptions(videos=video, out=out, progress=False), log=lambda *_: None
            )
            assert summary is not None and not summary.failed, summary and summary.failed
            forward_s = sum(summary.frames / forward_fps[m] for m in modalities)
            running_s = summary.seconds - summary.startup_seconds
            overhead = running_s - forward_s
            print(
                f"  {'+'.join(modalities):13s}: {summary.frames_per_second:8.1f} frames/s overall, "
                f"{summary.steady_frames_per_second:8.1f} after the {summary.startup_seconds:.1f} s start "
                f"| models alone {forward_s:.2f} s vs {running_s:.2f} s running: overhead "
                f"{overhead:+.2f} s ({overhead / running_s:+.0%})"
            )


if __name__ == "__main__":
    sys.exit(main())
