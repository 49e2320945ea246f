"""Training-step throughput of RU-LSTM: straightforward (reference-style) vs fast unrolling.

Prints samples/second of one forward + backward + SGD step (nothing is asserted):

* branch: ``unroll="sequential"`` computing all T outputs the reference way in float32 (the
  straightforward path), vs the default ``unroll="parallel"`` computing only the outputs the
  loss uses, in float32 and under bf16 autocast (what ``precision: bf16-mixed`` runs);
* fusion: the same for three branches (rgb/flow/obj) fused by MATT;
* the peak memory of each variant (RSS of a fresh subprocess on CPU, ``max_memory_allocated``
  on GPU);
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
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from epic_protocol.errors import ArgumentParser, cli_main
from epic_protocol.precision import bf16_native, device_description
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
SIZES = {"reference": REFERENCE, "small": SMALL}


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
    bf16: bool,
    device: torch.device,
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        # What Lightning's precision="bf16-mixed" does: the forward under autocast, the loss
        # and the (float32) weights' update outside it.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            # The reference computes every output and the loss keeps the last ones.
            if fast:
                logits = model(inputs, last_steps=loss_steps)
            else:
                logits = model(inputs)[:, -loss_steps:]
        targets = labels.view(-1, 1).expand(-1, loss_steps).reshape(-1)  # (B,) -> (B*S,)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _set_unroll(model: torch.nn.Module, mode: str) -> None:
    for module in model.modules():
        if isinstance(module, RULSTM):
            module.unroll_mode = mode


#: (unroll mode, bf16 autocast) of each benchmarked variant; the first is the baseline.
VARIANTS = {
    "straightforward fp32": ("sequential", False),
    "fast fp32": ("parallel", False),
    "fast bf16": ("parallel", True),
}


def _build(sizes: Sizes, which: str, device: torch.device) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    if which == "branch":
        first, first_dim = next(iter(sizes.feat_dims.items()))
        model = RULSTM(
            num_classes=sizes.num_classes, feat_dim=first_dim, hidden=sizes.hidden, dropout=0.8
        )
        return model.to(device), first
    model = RULSTMFusion(
        num_classes=sizes.num_classes, feat_dims=sizes.feat_dims, hidden=sizes.hidden, dropout=0.8
    )
    return model.to(device), None


def _inputs(sizes: Sizes, batch_size: int, device: torch.device, modality: str | None):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(sizes.num_classes, (batch_size,), generator=generator).to(device)
    feats = {
        name: torch.randn(batch_size, sizes.num_steps, dim, generator=generator).to(device)
        for name, dim in sizes.feat_dims.items()
    }
    return (feats[modality] if modality else feats), labels


def _variant_step(model, inputs, labels, sizes, variant, device) -> Callable[[], None]:
    mode, bf16 = VARIANTS[variant]
    step = _train_step(
        model,
        inputs,
        labels,
        loss_steps=sizes.loss_steps,
        fast=mode == "parallel",
        bf16=bf16,
        device=device,
    )

    def run() -> None:
        _set_unroll(model, mode)  # one model, so one copy of the weights
        step()

    return run


def peak_memory_mib(
    sizes_name: str, which: str, variant: str, batch_size: int, device: torch.device
) -> tuple[float, float]:
    """(peak, peak minus the idle model and inputs) in MiB over two steps of one variant:
    ``max_memory_allocated`` on GPU; on CPU the peak RSS of a fresh subprocess (a process's
    peak RSS cannot be reset in place)."""
    if device.type == "cuda":
        sizes = SIZES[sizes_name]
        model, modality = _build(sizes, which, device)
        inputs, labels = _inputs(sizes, batch_size, device, modality)
        step = _variant_step(model, inputs, labels, sizes, variant, device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        idle = torch.cuda.memory_allocated(device)
        step()
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak / 2**20, (peak - idle) / 2**20
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-probe",
        f"{sizes_name},{which},{variant},{batch_size}",
        "--threads",
        str(torch.get_num_threads()),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    peak, growth = output.strip().splitlines()[-1].split()
    return float(peak), float(growth)


def _proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status (kB) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_probe(spec: str) -> None:
    sizes_name, which, variant, batch_size = spec.split(",")
    sizes = SIZES[sizes_name]
    device = torch.device("cpu")
    model, modality = _build(sizes, which, device)
    inputs, labels = _inputs(sizes, int(batch_size), device, modality)
    step = _variant_step(model, inputs, labels, sizes, variant, device)
    # Resident memory with the model and inputs built. VmHWM, not ru_maxrss: the latter is
    # inherited from the parent across fork + exec, so it would report the parent's peak.
    idle = _proc_status_mib("VmRSS")
    step()
    step()
    peak = _proc_status_mib("VmHWM")
    print(f"{peak} {peak - idle}")


def bench_models(
    sizes_name: str,
    *,
    batch_size: int,
    iters: int,
    warmup: int,
    device: torch.device,
    memory: bool = True,
) -> None:
    """Print branch and fusion training throughput of every variant, measured interleaved."""
    sizes = SIZES[sizes_name]
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    bf16_ok = bf16_ok or (device.type == "cpu" and _cpu_bf16_ok())
    variants = [v for v in VARIANTS if bf16_ok or not VARIANTS[v][1]]
    if not bf16_ok:
        print("bf16 autocast is not supported on this device: bf16 variants skipped")
    elif not bf16_native(device):
        print("bf16 is emulated on this device (not native): the bf16 variants are slow here")
    dims = "/".join(f"{k}={v}" for k, v in sizes.feat_dims.items())
    first, first_dim = next(iter(sizes.feat_dims.items()))
    for which, label in (
        ("branch", f"branch ({first}, D={first_dim})"),
        ("fusion", f"fusion ({dims})"),
    ):
        model, modality = _build(sizes, which, device)
        inputs, labels = _inputs(sizes, batch_size, device, modality)
        steps = {v: _variant_step(model, inputs, labels, sizes, v, device) for v in variants}
        timings = _time_interleaved(steps, iters=iters, warmup=warmup, device=device)
        del model, steps
        base_wall, base_cpu = timings[variants[0]].rates(batch_size)
        print(f"{label}: B={batch_size}, {iters} interleaved steps each, load {_load()}")
        print(
            f"  {'variant':<22}{'samples/s':>11}{'samples/CPU-s':>15}{'x wall':>8}{'x CPU':>7}"
            f"{'peak MiB':>10}{'step MiB':>10}"
        )
        for variant in variants:
            wall_rate, cpu_rate = timings[variant].rates(batch_size)
            peak, growth = (
                peak_memory_mib(sizes_name, which, variant, batch_size, device)
                if memory
                else (float("nan"), float("nan"))
            )
            print(
                f"  {variant:<22}{wall_rate:>11.1f}{cpu_rate:>15.1f}"
                f"{wall_rate / base_wall:>8.2f}{cpu_rate / base_cpu:>7.2f}{peak:>10.0f}"
                f"{growth:>10.0f}",
                flush=True,
            )
        print(
            "  (peak MiB: RSS on CPU / max_memory_allocated on GPU; step MiB: peak minus the "
            "memory of the idle model and inputs)"
        )


def _cpu_bf16_ok() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except RuntimeError:
        return False
    return True


def _load() -> str:
    """The 1/5/15-minute load averages, to read wall-clock figures against."""
    try:
        return "/".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- data loading
# Kept apart from the model benchmark: it depends on ``rulstm.data`` (FeatureStore,
# AnticipationDataset), which is imported only here.


def write_reference_features(
    directory: Path,
    sizes: Sizes,
    *,
    num_videos: int = 8,
    frames_per_video: int = 1800,
    dtype: str = "float32",
) -> dict[str, Path]:
    """Write random features in the project's HDF5 layout (one file per modality) at the
    dimensions of ``sizes``, stored as ``dtype``; returns {modality: path}. Existing files
    are reused."""
    from epic_protocol import FeatureFileWriter

    rng = np.random.default_rng(0)
    paths = {}
    for modality, dim in sizes.feat_dims.items():
        path = directory / dtype / f"{modality}.h5"
        paths[modality] = path
        if path.exists():
            continue
        partial = path.with_suffix(".h5.partial")
        partial.unlink(missing_ok=True)
        with FeatureFileWriter(partial, modality=modality, dim=dim, fps=30.0, dtype=dtype) as w:
            for video in range(num_videos):
                frames = np.arange(1, frames_per_video + 1)
                features = rng.standard_normal((frames_per_video, dim), dtype=np.float32)
                w.write_video(_video_id(video), frames, features)
        partial.rename(path)  # an interrupted run leaves no half-written file to reuse
    return paths


def _video_id(index: int) -> str:
    return f"P01_{index:02d}"


def _evict_from_page_cache(paths) -> bool:
    """Drop the files' pages from the OS page cache (posix_fadvise DONTNEED: no root
    needed, clean pages only), so that the next reads come from the disk."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:  # (an empty list only asks whether eviction is possible)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return True


class _PerSampleReads(torch.utils.data.Dataset):
    """The dataset without its batched ``__getitems__``: one read per sample and modality
    (the DataLoader falls back to ``__getitem__``), as before batched reads."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset.samples[index]
        item = self.dataset.__getitems__([index])[0]
        assert item["uid"] == sample.segment.uid
        return item


def bench_dataloader(
    directory: Path,
    sizes: Sizes,
    *,
    batch_size: int,
    iters: int,
    num_workers: int,
    num_videos: int = 8,
    frames_per_video: int = 1800,
    repeats: int = 3,
) -> None:
    """Print DataLoader samples/s (anticipation sampling, all modalities, shuffled) over
    generated HDF5 features: per-sample vs batched reads, float32 vs float16 storage, files
    in the page cache (warm) or evicted from it before the run (cold), and from RAM."""
    from torch.utils.data import DataLoader

    from epic_protocol import Segment
    from rulstm.data import AnticipationDataset, FeatureStore

    files = {
        dtype: write_reference_features(
            directory,
            sizes,
            num_videos=num_videos,
            frames_per_video=frames_per_video,
            dtype=dtype,
        )
        for dtype in ("float32", "float16")
    }
    for dtype, paths in files.items():
        size = sum(p.stat().st_size for p in paths.values()) / 2**20
        print(f"dataloader files {dtype}: {size:.1f} MiB on disk ({'/'.join(paths)})")
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
    runs = [
        (dtype, reads, cache)
        for cache in ("warm", "cold")
        for dtype in ("float32", "float16")
        for reads in ("per-sample", "batched")
    ] + [("float32", "RAM", "warm")]
    rates: dict[tuple[str, str, str], list[float]] = {run: [] for run in runs}
    can_evict = _evict_from_page_cache([])
    if not can_evict:
        print("dataloader: cannot evict files from the page cache here: cold runs skipped")
    for _ in range(repeats):  # rounds over every variant: load hits them alike
        for dtype, reads, cache in runs:
            paths = files[dtype]
            if cache == "cold":
                if not can_evict:
                    continue
                _evict_from_page_cache(paths.values())
            else:  # read once so that the files are in the page cache
                for path in paths.values():
                    path.read_bytes()
            stores = {m: FeatureStore(p, in_memory=reads == "RAM") for m, p in paths.items()}
            dataset = AnticipationDataset(segments=segments, stores=stores, steps=sizes.num_steps)
            if reads == "per-sample":
                dataset = _PerSampleReads(dataset)
            loader = DataLoader(
                dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers
            )
            # Timed from the first request: worker start-up is included (small next to the
            # reads), and a cold cache must include the first batch. RAM mode excludes its
            # first batch, which loads the whole files.
            batches = iter(loader)
            if reads == "RAM":
                next(batches)
            start = time.perf_counter()
            count = sum(len(batch["uid"]) for batch in batches)
            rates[(dtype, reads, cache)].append(count / (time.perf_counter() - start))
            for store in stores.values():
                store.close()
            del loader, batches
    print(
        f"dataloader: B={batch_size}, workers={num_workers}, {num_videos} videos x "
        f"{frames_per_video} frames, median of {repeats} interleaved rounds; load {_load()}"
    )
    for run, values in rates.items():
        if values:
            dtype, reads, cache = run
            print(
                f"  {dtype:<8} {reads:<10} {cache:<4} cache {statistics.median(values):9.1f} "
                f"samples/s  (rounds: {', '.join(f'{v:.0f}' for v in values)})",
                flush=True,
            )
    print(
        f"dataloader: peak RSS of the main process {_proc_status_mib('VmHWM'):.0f} MiB (workers not counted)"
    )


@cli_main("bench_train.py")
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory runs (one subprocess each)"
    )
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--videos", type=int, default=8, help="videos of 1800 frames in the DataLoader files"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds of the DataLoader variants"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        _memory_probe(args.memory_probe)
        return
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    sizes = SIZES[args.sizes]
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"device={device}{gpu} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"torch={torch.__version__} B={args.batch_size} T={sizes.num_steps} H={sizes.hidden} "
        f"C={sizes.num_classes} iters={args.iters} warmup={args.warmup} load {_load()}"
    )
    print(device_description(device))
    if not args.skip_models:
        bench_models(
            args.sizes,
            batch_size=args.batch_size,
            iters=args.iters,
            warmup=args.warmup,
            device=device,
            memory=not args.no_memory,
        )
    if args.dataloader is not None:
        bench_dataloader(
            args.dataloader,
            sizes,
            batch_size=args.batch_size,
            iters=args.iters,
            num_workers=args.workers,
            num_videos=args.videos,
            repeats=args.repeats,
        )


if __name__ == "__main__":
    sys.exit(main())
