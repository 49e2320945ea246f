"""Write random-weight TSN checkpoints in the RU-LSTM authors' layout (``TSN-rgb.pth.tar``,
``TSN-flow.pth.tar``): for trying ``configs/extract/rulstm_tsn.yaml`` and the released-model
demo end to end without the authors' files. The features mean nothing, but they respond to
their input: BatchNorm statistics are calibrated on random images or on ``--frames`` (a folder
of RGB JPEGs and, for flow, u/v flow JPEGs in the authors' flat layout).

    python scripts/make_tsn_checkpoints.py --out models/ [--frames sample_data/] [--seed 0]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epic_protocol.errors import ArgumentParser, cli_main  # noqa: E402
from feature_extraction import (  # noqa: E402
    BNInception,
    FrameReader,
    TSNBackbone,
    calibrate_batchnorm,
    find_frame_videos,
    save_tsn_checkpoint,
)


def calibration_images(frames: Path | None, *, flow: bool, count: int, seed: int) -> torch.Tensor:
    """(count, C, H, W) uint8 images (RGB, or 10-channel flow stacks)."""
    if frames is not None:
        video = find_frame_videos(frames)[0]
        reader = FrameReader(video, fps=30, rgb=not flow, flow=flow)
        picks = np.linspace(1, reader.total, count).round().astype(int)
        rows = [
            reader.flow_stack(k) if flow else reader.rgb_image(k).transpose(2, 0, 1) for k in picks
        ]
        return torch.from_numpy(np.stack(rows))
    rng = np.random.default_rng(seed)
    if flow:  # smooth motion around "no motion" (128)
        return torch.from_numpy(
            rng.normal(128, 12, (count, 10, 256, 454)).clip(0, 255).astype(np.uint8)
        )
    return torch.from_numpy(rng.integers(0, 256, (count, 3, 256, 454), dtype=np.uint8))


@cli_main("make_tsn_checkpoints.py")
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for TSN-rgb.pth.tar and TSN-flow.pth.tar"
    )
    parser.add_argument("--frames", type=Path, default=None, help="Calibrate on these frames.")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--count", type=int, default=8, help="Calibration images.")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for modality, channels in (("rgb", 3), ("flow", 10)):
        torch.manual_seed(args.seed + channels)
        net = BNInception(in_channels=channels)
        wrapper = TSNBackbone(trunk=net, feature_dim=1024, modality=modality)  # type: ignore[arg-type]
        images = calibration_images(
            args.frames, flow=modality == "flow", count=args.count, seed=args.seed
        )
        calibrate_batchnorm(wrapper, images)
        path = save_tsn_checkpoint(args.out / f"TSN-{modality}.pth.tar", net, seed=args.seed)
        print(f"{path}: random BN-Inception ({channels} input channels), BatchNorm calibrated")


if __name__ == "__main__":
    sys.exit(main())
