"""Latency of live anticipation, against the budget of one step every alpha (250 ms).

1. The online anticipator alone (``OnlineAnticipator.step``), per branch (RGB 1024-d, Flow
   1024-d, Obj 352-d) and for the MATT fusion of the three, at the reference sizes
   (hidden 1024, 2513 classes, 8 anticipation times), with random weights.
2. Extraction + anticipation per step: a StreamingExtractor (reference-like config, random
   weights so nothing is downloaded) fed 456x256 frames at 30 fps, and one fusion step every
   alpha, i.e. what ``rulstm-demo`` does between two predictions.

Usage::

    python scripts/bench_online.py --device cpu --steps 200
    python scripts/bench_online.py --device cuda --extract_config configs/extract/default.yaml
    python scripts/bench_online.py --extract_steps 0      # anticipator only

Timings are wall-clock medians and 95th percentiles after a warm-up.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rulstm.models import RULSTM, RULSTMFusion  # noqa: E402
from rulstm.online import OnlineAnticipator  # noqa: E402

REFERENCE_DIMS = {"rgb": 1024, "flow": 1024, "obj": 352}
FRAME_SIZE = (256, 456)  # (H, W) of the reference's decoded frames


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    """(median, p95) in milliseconds."""
    values = sorted(seconds)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return 1000 * statistics.median(values), 1000 * p95


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    call: Callable[[], object], *, steps: int, warmup: int, device: torch.device
) -> list[float]:
    for _ in range(warmup):
        call()
    _sync(device)
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        _sync(device)
        durations.append(time.perf_counter() - start)
    return durations


def bench_anticipator(
    *, hidden: int, classes: int, times: int, steps: int, warmup: int, device: torch.device
) -> dict[str, tuple[float, float]]:
    """(median, p95) ms of one step for each branch and for the fusion."""
    torch.manual_seed(0)
    results: dict[str, tuple[float, float]] = {}
    anticipation = tuple(0.25 * k for k in range(times, 0, -1))
    nets: dict[str, tuple[RULSTM | RULSTMFusion, str | None]] = {
        name: (RULSTM(num_classes=classes, feat_dim=dim, hidden=hidden), name)
        for name, dim in REFERENCE_DIMS.items()
    }
    nets["fusion (MATT)"] = (
        RULSTMFusion(num_classes=classes, feat_dims=REFERENCE_DIMS, hidden=hidden),
        None,
    )
    features = {name: torch.randn(dim) for name, dim in REFERENCE_DIMS.items()}
    for label, (net, modality) in nets.items():
        online = OnlineAnticipator(net.eval(), modality=modality, times=anticipation, device=device)
        inputs = {modality: features[modality]} if modality else features
        step = partial(online.step, inputs)
        results[label] = _percentiles(time_calls(step, steps=steps, warmup=warmup, device=device))
    return results


def synthetic_frames(count: int, *, height: int, width: int) -> list[np.ndarray]:
    """RGB frames with a moving texture and a moving flat-coloured square (flow and
    detections have something to find)."""
    rows, cols = np.mgrid[0:height, 0:width]
    frames = []
    for index in range(count):
        texture = 128 + 90 * np.sin((cols - 3 * index) / 9.0) * np.cos(rows / 11.0)
        frame = np.stack([texture, 255 - texture, np.full_like(texture, 90)], axis=-1)
        x = (8 * index) % (width - 60)
        frame[60:120, x : x + 60] = (220, 40, 40)
        frames.append(frame.astype(np.uint8))
    return frames


def bench_extraction(
    *,
    config_path: Path | None,
    overrides: list[str],
    hidden: int,
    classes: int,
    times: int,
    steps: int,
    warmup: int,
    device: torch.device,
) -> dict[str, object]:
    """Per-step latency of pushing alpha's worth of frames and one fusion step."""
    from feature_extraction.config import load_config
    from feature_extraction.streaming import StreamingExtractor
    from rulstm_apps.demo import FramePusher, StepClock

    config = load_config(config_path, overrides)
    extractor = StreamingExtractor(config, device=device)
    dims: Mapping[str, int] = extractor.dims
    net = RULSTMFusion(num_classes=classes, feat_dims=dict(dims), hidden=hidden).eval()
    online = OnlineAnticipator(
        net, times=tuple(0.25 * k for k in range(times, 0, -1)), device=device
    )
    clock = StepClock(alpha=online.alpha, fps=config.fps)
    pusher = FramePusher(extractor, clock)
    frame_count = round((steps + warmup + 1) * online.alpha * config.fps) + 2
    frames = synthetic_frames(frame_count, height=FRAME_SIZE[0], width=FRAME_SIZE[1])
    step_s, push_s, step_push_s, anticipate_s = [], [], [], []
    pending = 0.0  # extraction time since the last step
    done = 0
    for number, frame in enumerate(frames, start=1):
        due = clock.steps_at(number)
        start = time.perf_counter()
        features = pusher.push(frame, frame=number, due=due > 0)
        _sync(device)
        pushed = time.perf_counter() - start
        pending += pushed
        if not due:
            if done >= warmup:
                push_s.append(pushed)
            continue
        start = time.perf_counter()
        online.step(features)
        _sync(device)
        stepped = time.perf_counter() - start
        if done >= warmup:
            step_s.append(pending + stepped)
            step_push_s.append(pushed)
            anticipate_s.append(stepped)
        pending = 0.0
        done += 1
        if done >= warmup + steps:
            break
    return {
        "config": str(config_path) if config_path else "(defaults)",
        "dims": dict(dims),
        "frames_per_step": config.fps * online.alpha,
        "skips_features": pusher.can_skip,
        "skips_flow": pusher.can_skip_flow,
        "per_step": _percentiles(step_s),
        "push_step_frame": _percentiles(step_push_s),
        "push_other_frame": _percentiles(push_s) if push_s else (float("nan"),) * 2,
        "anticipation": _percentiles(anticipate_s),
        "steps": len(step_s),
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    parser = ArgumentParser(prog="bench_online", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:N or auto.")
    parser.add_argument("--steps", type=int, default=200, help="Timed anticipator steps.")
    parser.add_argument("--warmup", type=int, default=20, help="Untimed steps first.")
    parser.add_argument("--hidden", type=int, default=1024, help="LSTM hidden size.")
    parser.add_argument("--classes", type=int, default=2513, help="Action classes.")
    parser.add_argument("--times", type=int, default=8, help="Anticipation times per step.")
    parser.add_argument("--threads", type=int | None, default=None, help="torch CPU threads.")
    parser.add_argument(
        "--extract_config",
        "--extract-config",
        type=Path | None,
        default=Path("configs/extract/cpu.yaml"),
        help="Extraction config of part 2.",
    )
    parser.add_argument(
        "--extract_steps",
        "--extract-steps",
        type=int,
        default=10,
        help="Timed steps of part 2 (0 skips it).",
    )
    parser.add_argument(
        "--extract_warmup", "--extract-warmup", type=int, default=2, help="Untimed steps of part 2."
    )
    parser.add_argument(
        "--weights",
        type=str | None,
        default=None,
        help="Extraction weights (rgb, flow, obj); default random, offline.",
    )
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    budget_ms = 250.0
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, hidden {args.hidden}, "
        f"classes {args.classes}, {args.times} anticipation times; budget {budget_ms:.0f} ms "
        "per step (alpha = 0.25 s)"
    )
    print(f"\nOnlineAnticipator.step ({args.steps} steps after {args.warmup} warm-up)")
    print(f"{'model':<16}{'median ms':>12}{'p95 ms':>10}{'of budget':>12}")
    for label, (median, p95) in bench_anticipator(
        hidden=args.hidden,
        classes=args.classes,
        times=args.times,
        steps=args.steps,
        warmup=args.warmup,
        device=device,
    ).items():
        print(f"{label:<16}{median:>12.2f}{p95:>10.2f}{100 * median / budget_ms:>11.1f}%")

    if args.extract_steps > 0:
        weights = args.weights or "none"
        overrides = ["--device", str(device)]
        for key in ("--rgb.weights", "--flow.weights", "--obj.weights"):
            overrides += [key, weights]
        if weights == "none":
            overrides += ["--flow.raft_weights", "none"]
        result = bench_extraction(
            config_path=args.extract_config,
            overrides=overrides,
            hidden=args.hidden,
            classes=args.classes,
            times=args.times,
            steps=args.extract_steps,
            warmup=args.extract_warmup,
            device=device,
        )
        median, p95 = result["per_step"]
        print(
            f"\nExtraction + anticipation per step: {result['config']} (weights {weights}), "
            f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]} frames, dims {result['dims']}, "
            f"{result['frames_per_step']:g} frames per step, features "
            f"{'only on step frames' if result['skips_features'] else 'on every frame'}"
            f"{' (flow only on the frames its stacks read)' if result['skips_flow'] else ''}; "
            f"{result['steps']} steps after {args.extract_warmup} warm-up"
        )
        print(f"{'part':<28}{'median ms':>12}{'p95 ms':>10}")
        rows = [
            ("push, step frame", result["push_step_frame"]),
            ("push, other frames", result["push_other_frame"]),
            ("anticipator step (fusion)", result["anticipation"]),
            ("total per step", result["per_step"]),
        ]
        for label, (m, p) in rows:
            print(f"{label:<28}{m:>12.1f}{p:>10.1f}")
        verdict = "within" if median <= budget_ms else "over"
        print(
            f"per step: median {median:.0f} ms = {median / budget_ms:.2f} x the {budget_ms:.0f} ms "
            f"budget ({verdict}): {budget_ms / median:.2f} x real time"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
