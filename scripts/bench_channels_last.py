"""Forward time of two convolutional backbones with and without channels-last memory format
(``rgb.channels_last``), side by side; no assertion, a measurement to read.

Usage::

    python scripts/bench_channels_last.py            # ResNet-18 and timm convnext_atto, CPU
    python scripts/bench_channels_last.py --repeat 5 --batch 16
    python scripts/bench_channels_last.py --timm convnext_atto convnext_tiny

Random weights (no download). Input (batch, 3, 224, 224) float; the model and its input are
converted as ``rulstm-extract`` does (:mod:`feature_extraction.memory_format`). One warm-up
forward per variant, then ``--repeat`` rounds timing off and on alternately (interleaved, so a
load change on a shared machine hits both), in float32 and, where the CPU computes bf16
natively, under bf16 autocast. Prints min and median ms per forward.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epic_protocol.errors import ArgumentParser, cli_main  # noqa: E402
from epic_protocol.precision import cpu_bf16_native  # noqa: E402
from feature_extraction.memory_format import channels_last_input  # noqa: E402


def _models(timm_names: list[str]) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {"resnet18": torchvision.models.resnet18().eval()}
    try:
        import timm
    except ImportError:
        print(f"timm not installed: no rows for {', '.join(timm_names)}")
    else:
        for name in timm_names:
            models[name] = timm.create_model(name, pretrained=False, num_classes=0).eval()
    return models


@cli_main("bench_channels_last.py")
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="Timed rounds per variant.")
    parser.add_argument(
        "--timm",
        nargs="+",
        default=["convnext_atto"],
        metavar="MODEL",
        help="timm image models to time after ResNet-18 (random weights).",
    )
    args = parser.parse_args(argv)
    images = torch.rand(args.batch, 3, 224, 224)
    inputs = {False: images, True: channels_last_input(images, True)}
    precisions = ["fp32"] + (["bf16"] if cpu_bf16_native() else [])
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch} x 3 x 224 x 224")
    for name, model in _models(args.timm).items():
        variants = {False: model, True: copy.deepcopy(model).to(memory_format=torch.channels_last)}
        for precision in precisions:
            autocast = (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if precision == "bf16"
                else contextlib.nullcontext()
            )
            times: dict[bool, list[float]] = {False: [], True: []}
            with torch.inference_mode(), autocast:
                for on in (False, True):
                    variants[on](inputs[on])  # warm-up
                for _ in range(args.repeat):
                    for on in (False, True):
                        start = time.perf_counter()
                        variants[on](inputs[on])
                        times[on].append((time.perf_counter() - start) * 1000)
            cells = [
                f"{label} min {min(times[on]):6.0f} median {statistics.median(times[on]):6.0f} ms"
                for label, on in (("off", False), ("on", True))
            ]
            print(f"{name:14s} {precision}  {cells[0]} | {cells[1]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
