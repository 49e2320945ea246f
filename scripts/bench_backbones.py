"""Features/s of the frozen foundation backbones side by side (``bench_extract.py --backbones``).

Usage::

    python scripts/bench_extract.py --backbones                     # the README table (tiny + base)
    python scripts/bench_extract.py --backbones --sizes base --device cuda --flops --ek100
    python scripts/bench_extract.py --backbones --sizes test        # tiny random models (seconds)

Each row builds a backbone with random weights from the real architecture (no download; ``hf:``
rows from the model type's default config, saved to a temporary folder, with the processor of
the shipped config) and times library preprocessing + forward (``FoundationBackbone``) on
frames of a synthetic 640x360 clip decoded at the row's decode size (the shipped config's), one
warm-up batch then ``--repeat`` timed batches, at each ``--precision`` (autocast as
``rulstm-extract`` runs it). A video model's feature reads a clip of T frames (stride 4), so
its features/s is clips/s. The rows print as a Markdown table, the README's.

``--preprocessing library tensor`` times both preprocessing paths of each row side by side, on
the same model and frames, interleaved (library, then tensor, per precision): the preprocessing
alone (``preprocess/s``: decoded uint8 frames to the model's inputs on the device) and end to
end (``features/s``); the tensor path (``rgb.preprocessing: tensor``) is built from the library's
transform (:mod:`feature_extraction.foundation_tensor`); a video batch's clips end at
consecutive frames, so they share frames, which the tensor path preprocesses once.

``--preprocess_only`` skips the end-to-end columns.

``--flops`` adds the forward's floating-point operations per feature, counted by
``torch.utils.flop_counter`` on one feature (2 per multiply-add; the processor not counted).
``--ek100`` adds EK100's sparse features (``--only-needed`` over the RU-LSTM training and
validation splits, and the challenge test timestamps: one feature per frame the sampling reads),
the hours they take at the fastest measured rate on this device, and with ``--flops`` the hours
at ``--assume_tflops`` (an assumed sustained throughput, not a measurement); the same for a
dense extraction (every frame of the 700 videos at 30 fps). ``--flops_only`` counts without
timing (the models on the meta device: seconds per row).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from epic_protocol.annotations import read_annotations  # noqa: E402
from epic_protocol.errors import ArgumentParser, cli_main  # noqa: E402
from epic_protocol.precision import device_description  # noqa: E402
from epic_protocol.sampling import sample_frames  # noqa: E402
from feature_extraction import (  # noqa: E402
    build_foundation_backbone,
    decode_video,
    resolve_device,
    resolve_precision,
)

STRIDE = 4  # clip stride of the shipped video configs (output frames)
_TINY_VIT = {"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 32}
_TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
_SIZE32 = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}


@dataclass(frozen=True)
class Row:
    """One backbone of the table.

    ``backbone``: ``family:architecture``; for ``hf:`` the model type, built from its default
    config updated with ``config``; for ``open_clip:`` with a ``config``, that model config
    (written to a JSON file). ``processor``: the ``transformers`` processor class and its
    arguments saved beside an ``hf:`` config (else the model type's default processor).
    ``decode``: (width, height) of the decoded frames. ``batch``: frames, or clips of a video
    model, per forward."""

    size: str
    label: str
    backbone: str
    decode: tuple[int, int] = (456, 256)
    batch: int = 8
    config: dict[str, Any] = field(default_factory=dict)
    processor: tuple[str, dict[str, Any]] | None = None
    clip_length: int | None = None


#: The README table's rows ("tiny" and "base"), and tiny random models ("test": checks the script).
ROWS: list[Row] = [
    Row("test", "timm test_vit", "timm:test_vit", (96, 64), 4),
    Row("test", "OpenCLIP tiny ViT (config file)", "open_clip:tiny", (96, 64), 4, _TINY_CLIP),
    Row(
        "test",
        "DINOv2 tiny (`hf:`)",
        "hf:dinov2",
        (96, 64),
        4,
        {**_TINY_VIT, "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        ("BitImageProcessor", _SIZE32),
    ),
    Row(
        "test",
        "VideoMAE tiny (`hf:`), T=4",
        "hf:videomae",
        (96, 64),
        2,
        {**_TINY_VIT, "intermediate_size": 64, "image_size": 32, "patch_size": 8, "num_frames": 4},
        ("VideoMAEVideoProcessor", _SIZE32),
    ),
    Row(
        "test",
        "V-JEPA 2 tiny (`hf:`), T=4",
        "hf:vjepa2",
        (96, 64),
        2,
        {
            **_TINY_VIT,
            "mlp_ratio": 2.0,
            "crop_size": 32,
            "patch_size": 8,
            "frames_per_clip": 4,
            "pred_hidden_size": 32,
            "pred_num_hidden_layers": 1,
            "pred_num_attention_heads": 2,
            "pred_num_mask_tokens": 2,
        },
        ("VJEPA2VideoProcessor", _SIZE32),
        clip_length=4,
    ),
    Row("tiny", "timm ViT-Ti/16", "timm:vit_tiny_patch16_224"),
    Row("tiny", "OpenCLIP ViT-B/32", "open_clip:ViT-B-32"),
    Row(
        "tiny",
        "DINOv2 ViT-S/14 (`hf:`)",
        "hf:dinov2",
        config={"hidden_size": 384, "num_attention_heads": 6},
        processor=(
            "BitImageProcessor",
            {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}},
        ),
    ),
    Row(
        "tiny",
        "VideoMAE ViT-S (`hf:`), T=16",
        "hf:videomae",
        (398, 224),
        2,
        {"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536},
    ),
    Row(
        "base",
        "DINOv2 ViT-B/14 (`hf:`, `dinov2.yaml`)",
        "hf:dinov2",
        processor=(
            "BitImageProcessor",
            {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}},
        ),
    ),
    Row("base", "OpenCLIP ViT-B/16 (`clip.yaml`)", "open_clip:ViT-B-16", (398, 224)),
    Row(
        "base",
        "DINOv2 ViT-B/14 at 518x518 (`timm:vit_base_patch14_dinov2`)",
        "timm:vit_base_patch14_dinov2",
    ),
    Row("base", "VideoMAE ViT-B (`hf:`, `videomae.yaml`), T=16", "hf:videomae", (398, 224), 2),
    Row("base", "V-JEPA 2 ViT-L (`vjepa2.yaml`), T=16", "hf:vjepa2", (520, 292), 1, clip_length=16),
]


def build(row: Row, folder: Path, *, tensor: bool = False) -> Any:
    """The row's backbone, random weights (seed 0); ``tensor``: with the tensor preprocessing
    path (:attr:`FoundationBackbone.tensor_transform`, which :func:`preprocessing_mode` sets
    to None for the library's transform)."""
    name = row.backbone
    if name.startswith("hf:"):
        import transformers

        config = transformers.AutoConfig.for_model(name[3:], **row.config)
        target = folder / f"{name[3:]}_{row.size}"
        config.save_pretrained(target)
        if row.processor is not None:
            processor_class, arguments = row.processor
            getattr(transformers, processor_class)(**arguments).save_pretrained(target)
        name = f"hf:{target}"
    elif name.startswith("open_clip:") and row.config:
        path = folder / f"{name.partition(':')[2]}.json"
        path.write_text(json.dumps(row.config))
        name = f"open_clip:{path}"
    return build_foundation_backbone(
        name=name,
        weights="none",
        clip_length=row.clip_length,
        clip_stride=STRIDE,
        tensor_preprocessing=tensor,
    )


@contextlib.contextmanager
def preprocessing_mode(backbone: Any, mode: str) -> Any:
    """``backbone`` preprocessing as ``mode`` (``library`` or ``tensor``) inside the block."""
    kept = backbone.tensor_transform
    if mode == "library":
        backbone.tensor_transform = None
    try:
        yield backbone
    finally:
        backbone.tensor_transform = kept


def params_run(backbone: Any) -> float:
    """Millions of parameters of the modules that compute the feature (OpenCLIP: the image
    tower; V-JEPA 2: the encoder, its predictor being skipped)."""
    model = backbone.model
    total = sum(p.numel() for p in getattr(model, "visual", model).parameters())
    if backbone.record.get("model_type") == "vjepa2":
        total -= sum(p.numel() for p in model.predictor.parameters())
    return total / 1e6


def inputs_for(backbone: Any, frames: Sequence[np.ndarray], batch: int) -> torch.Tensor:
    """(B, H, W, 3) frames, or (B, T, H, W, 3) causal clips ending at the last frames."""
    if not backbone.is_video:
        return torch.from_numpy(np.stack(frames[:batch]))
    length = backbone.clip_length
    clips = [
        np.stack([frames[max(0, k - j * STRIDE)] for j in range(length - 1, -1, -1)])
        for k in range(len(frames) - batch, len(frames))
    ]
    return torch.from_numpy(np.stack(clips))


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast of a Lightning precision, as ``rulstm-extract`` runs it."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def timed(function: Callable[[], object], *, repeat: int, device: torch.device) -> float:
    """Seconds per call: one warm-up call, then the mean of ``repeat`` calls."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    sync()
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    sync()
    return (time.perf_counter() - started) / repeat


def count_flops(backbone: Any, inputs: torch.Tensor) -> float:
    """Floating-point operations of the forward of one feature (2 per multiply-add), counted
    on the meta device (moves ``backbone`` there): on a CPU or GPU, fused kernels such as
    ``nn.MultiheadAttention``'s inference fast path are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone.to("meta")
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        backbone(inputs[:1])
    return float(counter.get_total_flops())


@functools.cache
def ek100_needed() -> tuple[tuple[int, ...], ...]:
    """Per EK100 video, the frames ``--only-needed`` extracts for the RU-LSTM training and
    validation splits and the test timestamps (30 fps, alpha 0.25, 14 anticipation steps)."""
    resources = REPO / "rulstm" / "resources" / "ek100"
    per_video: dict[str, set[int]] = {}
    for name in ("training.csv", "validation.csv", "test_timestamps.csv"):
        for segment in read_annotations(resources / name):
            chosen = sample_frames(
                segment.start_frame,
                segment.end_frame,
                task="anticipation",
                fps=30.0,
                alpha=0.25,
                steps=14,
            )
            if chosen is not None:
                per_video.setdefault(segment.video_id, set()).update(
                    int(f) for f in chosen if f >= 1
                )
    return tuple(tuple(sorted(frames)) for frames in per_video.values())


def ek100_all_frames() -> int:
    """EK100's frames at 30 fps (the durations of ``EPIC_100_video_info.csv``, 700 videos):
    the features of a dense extraction."""
    import csv

    path = REPO / "rulstm" / "resources" / "ek100" / "epic" / "EPIC_100_video_info.csv"
    with path.open(newline="") as handle:
        return sum(int(float(row["duration"]) * 30) for row in csv.DictReader(handle))


def ek100_features(clip_length: int) -> tuple[int, int]:
    """(features, frames decoded) of EK100's sparse extraction (:func:`ek100_needed`): a video
    model decodes each feature's clip frames too (stride 4, the first frame repeated)."""
    needed = ek100_needed()
    features = sum(len(frames) for frames in needed)
    decoded = sum(
        len({max(1, f - j * STRIDE) for f in frames for j in range(clip_length)})
        for frames in needed
    )
    return features, decoded


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose rows and columns (also accepted by ``bench_extract.py``, whose
    other options are the extraction config's: ``--device``, ``--precision``, ``--threads``)."""
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], help="test, tiny, base")
    parser.add_argument("--only", default=None, help="Only the rows whose label contains this.")
    parser.add_argument("--repeat", type=int, default=2, help="Timed batches per row.")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="Frames per batch of the image models (a GPU wants the configs' 32; default: "
        "each row's).",
    )
    parser.add_argument(
        "--clip_batch", type=int, default=None, help="Clips per batch of the video models."
    )
    parser.add_argument(
        "--preprocessing",
        nargs="+",
        choices=["library", "tensor"],
        default=["library"],
        help="Preprocessing paths to time, side by side (library: the library's own transform; "
        "tensor: rgb.preprocessing tensor); with both, preprocess/s columns are added.",
    )
    parser.add_argument("--flops", action="store_true", help="Add GFLOP per feature.")
    parser.add_argument("--ek100", action="store_true", help="Add EK100 sparse and dense hours.")
    parser.add_argument(
        "--assume_tflops",
        type=float,
        default=300.0,
        help="Assumed sustained TFLOP/s for the --flops --ek100 estimate (300: about 30 %% of "
        "an H100's dense bf16 peak).",
    )
    parser.add_argument(
        "--flops_only",
        action="store_true",
        help="Count the FLOPs without timing anything (the model on the meta device: no "
        "arithmetic, seconds per row); implies --flops.",
    )
    parser.add_argument(
        "--preprocess_only",
        action="store_true",
        help="With --preprocessing library tensor: time the preprocessing alone, not the "
        "forward (minutes instead of tens of minutes for the base rows on a CPU).",
    )


@cli_main("bench_backbones.py")
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_selection_arguments(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["32", "auto"],
        help="Lightning precisions to time, one column each (auto resolved as rulstm-extract "
        "does; duplicates after resolving are timed once).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads.")
    options = parser.parse_args(argv)
    options.flops = options.flops or options.flops_only
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    precisions = list(dict.fromkeys(resolve_precision(p, device) for p in options.precision))
    if options.flops_only:
        precisions, device = [], torch.device("meta")
    if options.preprocess_only:
        precisions = []
    rows = [r for r in ROWS if r.size in options.sizes]
    if options.only:
        rows = [r for r in rows if options.only.lower() in r.label.lower()]
    if not rows:
        raise SystemExit(f"no row matches --sizes {options.sizes} --only {options.only}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    gpu += " (FLOPs counted, nothing timed)" if options.flops_only else ""
    modes = list(dict.fromkeys(options.preprocessing))
    compare = (len(modes) > 1 or options.preprocess_only) and not options.flops_only
    timing = (
        ""
        if options.flops_only
        else f"{' vs '.join(modes)} preprocessing included; {options.repeat} timed batches "
        "after one warm-up; "
    )
    print(
        f"device: {device}{gpu}, {os.cpu_count()} CPUs; torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}; load average {load}; random weights (real "
        f"architectures); {timing}video clips: T frames at stride {STRIDE}"
    )
    print(device_description(device if device.type != "meta" else torch.device("cpu")))
    header = ["size", "backbone", "dim", "params run", "frames", "batch"]
    if compare:
        header += [f"preprocess/s {m}" for m in modes]
        header += [f"features/s {p} {m}" for p in precisions for m in modes]
    else:
        header += [f"features/s {p}" for p in precisions]
    if options.flops:
        header.append("GFLOP/feature")
    dense = ek100_all_frames() if options.ek100 else 0
    if options.ek100:
        header.append("EK100 sparse features (decoded frames)")
        assumed = f"at {options.assume_tflops:g} TFLOP/s (assumed)"
        for extent in ("sparse", f"dense ({dense:,} frames)"):
            header += [f"EK100 {extent} hours at the fastest rate"] if precisions else []
            header += [f"EK100 {extent} hours {assumed}"] if options.flops else []
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ek100_cache: dict[int, tuple[int, int]] = {}
    frames_cache: dict[tuple[int, int], list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        from bench_extract import synthetic_video  # the scripts folder is on the path

        video = synthetic_video(work / "synthetic.mp4", seconds=3.0)
        for row in rows:
            if row.decode not in frames_cache:
                width, height = row.decode
                frames_cache[row.decode] = [
                    d.image for d in decode_video(video, fps=30, width=width, height=height)
                ]
            backbone = build(row, work, tensor="tensor" in modes).to(device).eval()
            batch = (options.clip_batch if backbone.is_video else options.batch) or row.batch
            inputs = inputs_for(backbone, frames_cache[row.decode], batch)
            prepared = []
            for mode in modes if compare else []:
                with torch.inference_mode(), preprocessing_mode(backbone, mode):
                    seconds = timed(
                        lambda b=backbone, x=inputs: b.inputs(x),
                        repeat=options.repeat,
                        device=device,
                    )
                prepared.append(batch / seconds)
            rates = []
            for precision in precisions:
                for mode in modes:
                    with (
                        torch.inference_mode(),
                        autocast(precision, device),
                        preprocessing_mode(backbone, mode),
                    ):
                        seconds = timed(
                            lambda b=backbone, x=inputs: b(x), repeat=options.repeat, device=device
                        )
                    rates.append(batch / seconds)
            unit = "clip" if backbone.is_video else "frame"
            params = params_run(backbone)
            cells = [
                row.size,
                row.label,
                str(backbone.feature_dim),
                f"{params:.1f} M" if params >= 1 else f"{params:.2g} M",
                f"{row.decode[0]}x{row.decode[1]}",
                f"{batch} {unit}{'s' if batch > 1 else ''}",
                *(f"{rate:.3g}" for rate in prepared),
                *(f"{rate:.3g}" for rate in rates),
            ]
            flops = None
            if options.flops:  # the forward's, preprocessing not counted (library's, on the CPU)
                with preprocessing_mode(backbone, "library"):
                    flops = count_flops(backbone, inputs)
            if flops is not None:
                cells.append(f"{flops / 1e9:.3g}")
            if options.ek100:
                length = backbone.clip_length
                if length not in ek100_cache:
                    ek100_cache[length] = ek100_features(length)
                features, decoded = ek100_cache[length]
                cells.append(f"{features:,} ({decoded:,})")
                for count in (features, dense):
                    cells += [f"{count / max(rates) / 3600:.3g}"] if rates else []
                    if flops is not None:
                        hours = count * flops / (options.assume_tflops * 1e12) / 3600
                        cells.append(f"{hours:.2g}")
            print("| " + " | ".join(cells) + " |", flush=True)
            del backbone, inputs
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average after: {load}")


if __name__ == "__main__":
    sys.exit(main())
