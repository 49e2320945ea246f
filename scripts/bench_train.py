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
"""

from __future__ import annotations

import argparse
import os
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


def _throughput(
    step: Callable[[], None], *, batch_size: int, iters: int, warmup: int, device: torch.device
) -> float:
    """Samples per second of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return batch_size * iters / (time.perf_counter() - start)


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
    common = {"batch_size": batch_size, "iters": iters, "warmup": warmup, "device": device}

    first, first_dim = next(iter(sizes.feat_dims.items()))
    branch = RULSTM(
        num_classes=sizes.num_classes, feat_dim=first_dim, hidden=sizes.hidden, dropout=0.8
    ).to(device)
    fusion = RULSTMFusion(
        num_classes=sizes.num_classes, feat_dims=sizes.feat_dims, hidden=sizes.hidden, dropout=0.8
    ).to(device)
    for name, model, inputs in (
        (f"branch ({first}, D={first_dim})", branch, feats[first]),
        (f"fusion ({'/'.join(f'{k}={v}' for k, v in sizes.feat_dims.items())})", fusion, feats),
    ):
        rates = {}
        for mode, fast in (("sequential", False), ("parallel", True)):
            _set_unroll(model, mode)
            step = _train_step(model, inputs, labels, loss_steps=sizes.loss_steps, fast=fast)
            rates[mode] = _throughput(step, **common)
            label = (
                f"all {sizes.num_steps} outputs" if not fast else f"last_steps={sizes.loss_steps}"
            )
            print(f"{name:<40} {mode:<10} ({label:<15}) {rates[mode]:10.1f} samples/s", flush=True)
        print(
            f"{name:<40} speed-up parallel/sequential: {rates['parallel'] / rates['sequential']:.2f}x"
        )


# --------------------------------------------------------------------------- data loading
# The DataLoader part depends on ``rulstm.data`` (FeatureStore, AnticipationDataModule),
# written separately; ``write_reference_features`` only prepares the HDF5 files.


def write_reference_features(
    directory: Path, sizes: Sizes, *, num_videos: int = 20, frames_per_video: int = 3000
) -> dict[str, Path]:
    """Write random features in the project's HDF5 layout (one file per modality), at the
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
                writer.write_video(f"P01_{video:02d}", frames, features)
    return paths


def bench_dataloader(directory: Path, sizes: Sizes, *, batch_size: int, iters: int) -> None:
    """DataLoader samples/s over generated features. TODO(lead): build the dataset/loader
    from ``rulstm.data`` over ``paths`` and time ``iters`` batches."""
    paths = write_reference_features(directory, sizes)
    print(f"features written to {', '.join(str(p) for p in paths.values())}")
    raise NotImplementedError(
        "the DataLoader benchmark needs rulstm.data (FeatureStore, AnticipationDataModule)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--sizes", choices=("reference", "small"), default="reference")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--only",
        choices=("models", "dataloader", "all"),
        default="models",
        help="which benchmarks to run (dataloader needs --dataloader)",
    )
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
    if args.only in ("models", "all"):
        bench_models(
            sizes, batch_size=args.batch_size, iters=args.iters, warmup=args.warmup, device=device
        )
    if args.only in ("dataloader", "all") or args.dataloader is not None:
        if args.dataloader is None:
            parser.error("--only dataloader needs --dataloader DIR")
        bench_dataloader(args.dataloader, sizes, batch_size=args.batch_size, iters=args.iters)


if __name__ == "__main__":
    main()
