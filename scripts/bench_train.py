"""Training-step throughput of RU-LSTM: straightforward (reference-style) vs fast unrolling.

Prints samples/second of one forward + backward + SGD step (nothing is asserted):

* branch: ``unroll="sequential"`` computing all T outputs the reference way, vs the default
  ``unroll="parallel"`` computing only the ``--loss-steps`` outputs the loss uses;
* fusion: the same for three branches (rgb/flow/obj) fused by MATT;
* optionally (``--dataloader DIR``) the DataLoader throughput over HDF5 features generated at
  the reference dimensions.

Examples::

    python scripts/bench_train.py --sizes small --iters 3
    python scripts/bench_train.py --device cuda --iters 20
    python scripts/bench_train.py --skip-models --dataloader /tmp/bench_features --iters 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rulstm.models import RULSTM, RULSTMFusion


@dataclass(frozen=True)
class Sizes:
    num_steps: int  # T, observed steps (14 in RU-LSTM: 3.5 s at alpha = 0.25 s)
    loss_steps: int  # outputs the loss uses (8 anticipation steps: 2 s .. 0.25 s)
    feat_dims: dict[str, int]  # rgb / flow / obj
    hidden: int
    num_classes: int


REFERENCE = Sizes(14, 8, {"rgb": 1024, "flow": 1024, "obj": 352}, hidden=1024, num_classes=2513)
SMALL = Sizes(14, 8, {"rgb": 64, "flow": 64, "obj": 32}, hidden=64, num_classes=100)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Per-step wall-clock and process CPU seconds of one benchmarked variant."""

    wall: list[float]
    cpu: list[float]

    def rates(self, batch_size: int) -> tuple[float, float]:
        """(samples per wall second, samples per CPU second), from the median step."""
        return (
            batch_size / statistics.median(self.wall),
            batch_size / statistics.median(self.cpu),
        )


def _time_interleaved(
    steps: dict[str, Callable[[], None]], *, iters: int, warmup: int, device: torch.device
) -> dict[str, Timing]:
    """Time the variants alternately, so that load from other processes on a shared machine
    hits them alike; CPU time (all threads of this process) is less sensitive to that load
    than wall-clock time."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    timings = {name: Timing([], []) for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            _sync(device)
            timings[name].wall.append(time.perf_counter() - wall)
            timings[name].cpu.append(time.process_time() - cpu)
    return timings


def _train_step(
    model: torch.nn.Module,
    inputs: torch.Tensor | dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    loss_steps: int,
    fast: bool,
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        # The reference computes every output and the loss keeps the last ones.
        logits = model(inputs, last_steps=loss_steps) if fast else model(inputs)[:, -loss_steps:]
        targets = labels.view(-1, 1).expand(-1, loss_steps).reshape(-1)  # (B,) -> (B*S,)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _set_unroll(model: torch.nn.Module, mode: str) -> None:
    for module in model.modules():
        if isinstance(module, RULSTM):
            module.unroll_mode = mode


def bench_models(
    sizes: Sizes, *, batch_size: int, iters: int, warmup: int, device: torch.device
) -> None:
    """Print branch and fusion training throughput, straightforward vs fast."""
    torch.manual_seed(0)
    labels = torch.randint(sizes.num_classes, (batch_size,), device=device)
    feats = {
        name: torch.randn(batch_size, sizes.num_steps, dim, device=device)
        for name, dim in sizes.feat_dims.items()
    }

    first, first_dim = next(iter(sizes.feat_dims.items()))
    branch = RULSTM(
        num_classes=sizes.num_classes, feat_dim=first_dim, hidden=sizes.hidden, dropout=0.8
    ).to(device)
    fusion = RULSTMFusion(
        num_classes=sizes.num_classes, feat_dims=sizes.feat_dims, hidden=sizes.hidden, dropout=0.8
    ).to(device)
    labels_of = {
        "sequential": f"all {sizes.num_steps} outputs",
        "parallel": f"last_steps={sizes.loss_steps}",
    }
    for name, model, inputs in (
        (f"branch ({first}, D={first_dim})", branch, feats[first]),
        (f"fusion ({'/'.join(f'{k}={v}' for k, v in sizes.feat_dims.items())})", fusion, feats),
    ):
        # Two copies of the weights would double the memory: switch modes before each step.
        steps = {}
        for mode in ("sequential", "parallel"):
            train_step = _train_step(
                model, inputs, labels, loss_steps=sizes.loss_steps, fast=mode == "parallel"
            )
            steps[mode] = _with_unroll(model, mode, train_step)
        timings = _time_interleaved(steps, iters=iters, warmup=warmup, device=device)
        rates = {mode: timing.rates(batch_size) for mode, timing in timings.items()}
        for mode, (wall_rate, cpu_rate) in rates.items():
            print(
                f"{name:<36} {mode:<10} ({labels_of[mode]:<15}) {wall_rate:9.1f} samples/s "
                f"(wall)  {cpu_rate:9.1f} samples/CPU-s",
                flush=True,
            )
        wall_ratio = rates["parallel"][0] / rates["sequential"][0]
        cpu_ratio = rates["parallel"][1] / rates["sequential"][1]
        print(
            f"{name:<36} speed-up parallel/sequential: {wall_ratio:.2f}x (wall), "
            f"{cpu_ratio:.2f}x (CPU time)",
            flush=True,
        )


def _with_unroll(model: torch.nn.Module, mode: str, step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        _set_unroll(model, mode)
        step()

    return run


# --------------------------------------------------------------------------- data loading
# Kept apart from the model benchmark: it depends on ``rulstm.data`` (FeatureStore,
# AnticipationDataset), which is imported only here.


def write_reference_features(
    directory: Path, sizes: Sizes, *, num_videos: int = 8, frames_per_video: int = 1800
) -> dict[str, Path]:
    """Write random features in the project's HDF5 layout (one file per modality) at the
    dimensions of ``sizes``; returns {modality: path}. Existing files are reused."""
    from epic_protocol import FeatureFileWriter

    rng = np.random.default_rng(0)
    paths = {}
    for modality, dim in sizes.feat_dims.items():
        path = directory / f"{modality}.h5"
        paths[modality] = path
        if path.exists():
            continue
        with FeatureFileWriter(path, modality=modality, dim=dim, fps=30.0) as writer:
            for video in range(num_videos):
                frames = np.arange(1, frames_per_video + 1)
                features = rng.standard_normal((frames_per_video, dim), dtype=np.float32)
                writer.write_video(_video_id(video), frames, features)
    return paths


def _video_id(index: int) -> str:
    return f"P01_{index:02d}"


def bench_dataloader(
    directory: Path,
    sizes: Sizes,
    *,
    batch_size: int,
    iters: int,
    num_workers: int,
    num_videos: int = 8,
    frames_per_video: int = 1800,
) -> None:
    """Print DataLoader samples/s (anticipation sampling, all modalities) over generated
    HDF5 features, reading from disk and from RAM (``in_memory``)."""
    from torch.utils.data import DataLoader

    from epic_protocol import Segment
    from rulstm.data import AnticipationDataset, FeatureStore

    paths = write_reference_features(
        directory, sizes, num_videos=num_videos, frames_per_video=frames_per_video
    )
    rng = np.random.default_rng(0)
    num_segments = batch_size * (iters + 1)
    starts = rng.integers(200, frames_per_video, num_segments)
    segments = [
        Segment(
            uid=str(i),
            video_id=_video_id(int(rng.integers(num_videos))),
            start_frame=int(start),
            end_frame=int(start) + 60,
            verb=0,
            noun=0,
            action=0,
        )
        for i, start in enumerate(starts)
    ]
    for in_memory in (False, True):
        stores = {m: FeatureStore(p, in_memory=in_memory) for m, p in paths.items()}
        dataset = AnticipationDataset(segments=segments, stores=stores, steps=sizes.num_steps)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
        batches = iter(loader)
        next(batches)  # worker start-up (and, in memory, loading the files) is not timed
        start = time.perf_counter()
        count = sum(len(batch["uid"]) for batch in batches)
        rate = count / (time.perf_counter() - start)
        source = "RAM (in_memory=True)" if in_memory else "HDF5 on disk"
        print(
            f"dataloader {source:<22} workers={num_workers} {rate:10.1f} samples/s "
            f"({count} samples, modalities {'/'.join(paths)})",
            flush=True,
        )
        for store in stores.values():
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--sizes", choices=("reference", "small"), default="reference")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-models", action="store_true", help="only the DataLoader benchmark")
    parser.add_argument(
        "--dataloader",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for generated HDF5 features (reused if present) for the DataLoader benchmark",
    )
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    sizes = REFERENCE if args.sizes == "reference" else SMALL
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"B={args.batch_size} T={sizes.num_steps} H={sizes.hidden} C={sizes.num_classes} "
        f"iters={args.iters} warmup={args.warmup}"
    )
    if not args.skip_models:
        bench_models(
            sizes, batch_size=args.batch_size, iters=args.iters, warmup=args.warmup, device=device
        )
    if args.dataloader is not None:
        bench_dataloader(
            args.dataloader,
            sizes,
            batch_size=args.batch_size,
            iters=args.iters,
            num_workers=args.workers,
        )


if __name__ == "__main__":
    main()
