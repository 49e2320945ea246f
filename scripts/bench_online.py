"""Latency of live anticipation, against the budget of one step every alpha (250 ms).

1. The online anticipator alone (``OnlineAnticipator.step``), per branch (RGB 1024-d, Flow
   1024-d, Obj 352-d) and for the MATT fusion of the three, at the reference sizes
   (hidden 1024, 2513 classes, 8 anticipation times), with random weights, for each weights
   mode (fp32, bf16, int8) interleaved step by step, with the top-5 agreement of the low
   precisions with fp32. ``--checkpoint`` with ``--features`` adds the agreement of a trained
   network on stored features (e.g. a quickstart fusion checkpoint and its features/).
2. Extraction + anticipation per step: a StreamingExtractor (reference-like config, random
   weights so nothing is downloaded) fed 456x256 frames at 30 fps, and one fusion step every
   alpha, i.e. what ``rulstm-demo`` does between two predictions.

Usage::

    python scripts/bench_online.py --device cpu --steps 200
    python scripts/bench_online.py --device cuda --extract_config configs/extract/default.yaml
    python scripts/bench_online.py --extract_steps 0      # anticipator only
    python scripts/bench_online.py --extract_steps 0 --models [fusion] --threads 2 \
        --checkpoint quickstart_output/runs/fusion/checkpoints/best.ckpt \
        --features quickstart_output/features

Timings are wall-clock medians and 95th percentiles after a warm-up.
"""

from __future__ import annotations

import io
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epic_protocol.errors import cli_main  # noqa: E402
from epic_protocol.precision import device_description  # noqa: E402
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


WEIGHTS = ("fp32", "bf16", "int8")


def feature_stream(
    dims: Mapping[str, int], steps: int, *, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Random per-step features that drift slowly (AR(1), correlation 0.9 between steps), like
    consecutive frames, so the rolling state evolves as on a video."""
    generator = torch.Generator().manual_seed(seed)
    current = {m: torch.randn(d, generator=generator) for m, d in dims.items()}
    stream = []
    for _ in range(steps):
        current = {
            m: 0.9 * v + (1 - 0.9**2) ** 0.5 * torch.randn(v.shape, generator=generator)
            for m, v in current.items()
        }
        stream.append(current)
    return stream


def _top5_at(prediction, time: float = 1.0) -> frozenset[int]:
    return frozenset(action for action, _ in prediction.top_k(5, time=time))


def compare_weights(
    net: RULSTM | RULSTMFusion,
    stream: list[dict[str, torch.Tensor]],
    *,
    modality: str | None,
    times: tuple[float, ...],
    warmup: int,
    device: torch.device,
    weights: Sequence[str] = WEIGHTS,
) -> dict[str, dict[str, float]]:
    """Step one anticipator per weights mode through the same stream, interleaved (each
    stream step runs every mode back to back, so machine load hits them alike).

    Returns per mode: median and p95 ms (after ``warmup`` steps) and the fraction of steps
    whose top-5 set at 1 s equals fp32's.
    """
    anticipators = {}
    for mode in weights:
        if mode == "int8" and device.type != "cpu":
            continue
        anticipators[mode] = OnlineAnticipator(
            net, modality=modality, times=times, device=device, weights=mode
        )
    durations: dict[str, list[float]] = {mode: [] for mode in anticipators}
    agree = dict.fromkeys(anticipators, 0)
    for index, features in enumerate(stream):
        tops = {}
        for mode, online in anticipators.items():
            _sync(device)
            start = time.perf_counter()
            prediction = online.step(features)
            _sync(device)
            if index >= warmup:
                durations[mode].append(time.perf_counter() - start)
            tops[mode] = _top5_at(prediction)
        for mode in anticipators:
            agree[mode] += tops[mode] == tops["fp32"]
    results = {}
    for mode, online in anticipators.items():
        median, p95 = _percentiles(durations[mode]) if durations[mode] else (float("nan"),) * 2
        results[mode] = {
            "median": median,
            "p95": p95,
            "top5_agree": agree[mode] / len(stream),
            "weight_mib": _weight_mib(online.net),
        }
    return results


def _weight_mib(net: torch.nn.Module) -> float:
    """Serialized size of the weights (int8 packed weights included)."""
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.tell() / 2**20


def _load() -> str:
    try:
        return "/".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak GPU memory (max_memory_allocated) {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    # ru_maxrss is in KiB on Linux.
    return f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def bench_anticipator(
    *,
    hidden: int,
    classes: int,
    times: int,
    steps: int,
    warmup: int,
    device: torch.device,
    weights: Sequence[str] = WEIGHTS,
    models: Sequence[str] = (*REFERENCE_DIMS, "fusion"),
) -> dict[str, dict[str, dict[str, float]]]:
    """Per model (each branch and the fusion): per weights mode, ms and top-5 agreement."""
    torch.manual_seed(0)
    anticipation = tuple(0.25 * k for k in range(times, 0, -1))
    nets: dict[str, tuple[RULSTM | RULSTMFusion, str | None]] = {
        name: (RULSTM(num_classes=classes, feat_dim=dim, hidden=hidden), name)
        for name, dim in REFERENCE_DIMS.items()
        if name in models
    }
    if "fusion" in models:
        nets["fusion (MATT)"] = (
            RULSTMFusion(num_classes=classes, feat_dims=REFERENCE_DIMS, hidden=hidden),
            None,
        )
    stream = feature_stream(REFERENCE_DIMS, steps + warmup)
    results = {}
    for label, (net, modality) in nets.items():
        branch_stream = [{modality: f[modality]} for f in stream] if modality else stream
        results[label] = compare_weights(
            net.eval(),
            branch_stream,
            modality=modality,
            times=anticipation,
            warmup=warmup,
            device=device,
            weights=weights,
        )
    return results


def checkpoint_stream(
    checkpoint: Path, features_dir: Path, *, videos: int, alpha: float = 0.25
) -> tuple[RULSTM | RULSTMFusion, str | None, list[dict[str, torch.Tensor]]]:
    """A trained network and the stored features of the first ``videos`` videos of
    ``features_dir`` (``<modality>.h5``), one step every ``alpha`` seconds, videos one after
    the other (the stream is not reset between videos, as a live camera would not be)."""
    from epic_protocol.features import FeatureStore
    from rulstm.checkpoints import load_net

    net = load_net(checkpoint)
    if isinstance(net, RULSTMFusion):
        modalities, modality = list(net.modalities), None
    else:
        modalities = [m for m in REFERENCE_DIMS if (features_dir / f"{m}.h5").is_file()][:1]
        modality = modalities[0]
    stores = {m: FeatureStore(features_dir / f"{m}.h5") for m in modalities}
    first = stores[modalities[0]]
    stream = []
    for video in sorted(first.videos())[:videos]:
        frames = first.stored_frames(video)
        step_frames = np.arange(
            math.ceil(frames[0] / (alpha * first.info.fps)),
            math.floor(frames[-1] / (alpha * first.info.fps)) + 1,
        )
        step_frames = np.floor(step_frames * alpha * first.info.fps + 1e-6).astype(np.int64)
        step_frames = step_frames[step_frames >= frames[0]]
        rows = {m: store.lookup(video, step_frames) for m, store in stores.items()}
        stream += [
            {m: torch.from_numpy(rows[m][i]) for m in modalities} for i in range(len(step_frames))
        ]
    for store in stores.values():
        store.close()
    return net, modality, stream


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
    from feature_extraction import StreamingExtractor, load_config
    from rulstm_apps.demo_inputs import FramePusher, StepClock

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


@cli_main("bench_online.py")
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
    parser.add_argument(
        "--precisions",
        type=list[str],
        default=list(WEIGHTS),
        help="OnlineAnticipator weights modes compared with fp32 (fp32 is always run).",
    )
    parser.add_argument(
        "--models",
        type=list[str],
        default=[*REFERENCE_DIMS, "fusion"],
        help="Which anticipators of part 1: rgb, flow, obj, fusion.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path | None,
        default=None,
        help="A trained branch/fusion checkpoint: also measure top-5 agreement on --features.",
    )
    parser.add_argument(
        "--features",
        type=Path | None,
        default=None,
        help="Folder with <modality>.h5 (e.g. the quickstart's features/) for --checkpoint.",
    )
    parser.add_argument("--videos", type=int, default=20, help="Videos streamed for --checkpoint.")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    modes = ["fp32", *(m for m in args.precisions if m != "fp32")]
    budget_ms = 250.0
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"device {device}{gpu}, torch threads {torch.get_num_threads()} of {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, hidden {args.hidden}, classes {args.classes}, "
        f"{args.times} anticipation times; budget {budget_ms:.0f} ms per step (alpha = 0.25 s); "
        f"load {_load()}"
    )
    print(device_description(device))
    print(
        f"\nOnlineAnticipator.step, random weights, a drifting random feature stream: "
        f"{args.steps} steps after {args.warmup} warm-up, the weights modes interleaved step "
        "by step; agree = steps whose top-5 at 1 s equals fp32's"
    )
    print(
        f"{'model':<16}{'weights':<9}{'median ms':>10}{'p95 ms':>9}{'of budget':>11}"
        f"{'x fp32':>8}{'agree':>8}{'weights MiB':>13}"
    )
    results = bench_anticipator(
        hidden=args.hidden,
        classes=args.classes,
        times=args.times,
        steps=args.steps,
        warmup=args.warmup,
        device=device,
        weights=modes,
        models=args.models,
    )
    for label, per_mode in results.items():
        base = per_mode["fp32"]["median"]
        for mode, r in per_mode.items():
            print(
                f"{label:<16}{mode:<9}{r['median']:>10.2f}{r['p95']:>9.2f}"
                f"{100 * r['median'] / budget_ms:>10.1f}%{base / r['median']:>8.2f}"
                f"{100 * r['top5_agree']:>7.1f}%{r['weight_mib']:>13.1f}"
            )
    print(f"load after part 1: {_load()}; {_peak_memory(device)}")

    if args.checkpoint is not None:
        if args.features is None:
            parser.error("--checkpoint needs --features (a folder with <modality>.h5)")
        net, modality, stream = checkpoint_stream(
            args.checkpoint, args.features, videos=args.videos
        )
        per_mode = compare_weights(
            net.eval(),
            stream,
            modality=modality,
            times=tuple(0.25 * k for k in range(args.times, 0, -1)),
            warmup=min(args.warmup, len(stream) // 2),
            device=device,
            weights=modes,
        )
        print(
            f"\nTrained checkpoint {args.checkpoint} on {len(stream)} steps of the stored "
            f"features of {args.videos} videos in {args.features}:"
        )
        for mode, r in per_mode.items():
            print(
                f"  {mode:<6} median {r['median']:.2f} ms, top-5 at 1 s equal to fp32's on "
                f"{100 * r['top5_agree']:.1f} % of steps"
            )

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
