"""Compare ``rulstm-extract --frames`` features with a re-statement of the RU-LSTM authors'
example extraction scripts (``FEATEXT/extract_example_rgb.py`` / ``extract_example_flow.py``).

    python scripts/check_tsn_reference.py --data ../shared/data/rulstm_featext/data \\
        --features OUT --rgb-weights TSN-rgb.pth.tar --flow-weights TSN-flow.pth.tar

The reference side is written separately from the project's code path: glob + sorted file
names, torchvision ``Resize``/``ToTensor``/``Normalize`` on PIL images, the authors' flow
buffer (five copies of the first image, then drop the oldest pair), their state-dict
handling (``replace('module.base_model.', '')``, non-strict load), one image per forward.
Only the network class is shared (``--network project``), unless ``--network
pretrainedmodels`` uses the one the authors imported (``pretrainedmodels`` must be
importable; it is not a dependency of the project). Prints the largest absolute difference
per modality; exits 1 above ``--tolerance``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from glob import glob
from os.path import basename
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from epic_protocol.errors import ArgumentParser, cli_main


def reference_network(kind: str, in_channels: int, weights: str) -> nn.Module:
    if kind == "pretrainedmodels":
        import importlib.util

        # The module file alone: the package's __init__ imports dataset helpers (six, munch).
        package = importlib.util.find_spec("pretrainedmodels")
        if package is None or package.origin is None:
            raise SystemExit("--network pretrainedmodels: the package is not importable")
        path = Path(package.origin).parent / "models" / "bninception.py"
        spec = importlib.util.spec_from_file_location("authors_bninception", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.BNInception(num_classes=1000)
        if in_channels != 3:
            model.conv1_7x7_s2 = nn.Conv2d(
                in_channels, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3)
            )
        model.last_linear = nn.Identity()
        model.global_pool = nn.AdaptiveAvgPool2d(1)
    else:
        from feature_extraction import BNInception

        model = BNInception(in_channels=in_channels)
    state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    state = {k.replace("module.base_model.", ""): v for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    return model.eval()


@torch.no_grad()
def rgb_reference(data: Path, model: nn.Module) -> dict[str, np.ndarray]:
    transform = transforms.Compose(
        [
            transforms.Resize([256, 454]),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: x[[2, 1, 0], ...] * 255),
            transforms.Normalize(mean=[104, 117, 128], std=[1, 1, 1]),
        ]
    )
    out = {}
    for path in sorted(glob(str(data / "**" / "*_frame_*.jpg"), recursive=True)):
        image = Image.open(path)
        out[basename(path)] = model(transform(image).unsqueeze(0)).squeeze().numpy()
    return out


@torch.no_grad()
def flow_reference(data: Path, model: nn.Module) -> dict[str, np.ndarray]:
    transform = transforms.Compose(
        [
            transforms.Resize([256, 454]),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: x * 255),
            transforms.Normalize(mean=[128], std=[1]),
        ]
    )
    out = {}
    buffer: list[torch.Tensor] = []
    for path in sorted(glob(str(data / "**" / "*_u_*.jpg"), recursive=True)):
        key = basename(path).replace("flow_u_", "frame_")
        u = Image.open(path).convert("L")
        v = Image.open(path.replace("_u_", "_v_")).convert("L")
        for _ in range(1 if buffer else 5):
            buffer.append(transform(u))
            buffer.append(transform(v))
        if len(buffer) > 10:
            del buffer[0]
            del buffer[0]
        out[key] = model(torch.cat(buffer[-10:], 0).unsqueeze(0)).squeeze().numpy()
    return out


def project_features(path: Path) -> dict[str, np.ndarray]:
    """``{<video>_frame_<10 digits>.jpg: feature}`` from a project feature file."""
    import h5py

    out = {}
    with h5py.File(path, "r") as handle:
        for video in handle:
            group = handle[video]
            for frame, row in zip(group["frames"][:], group["features"][:]):
                out[f"{video}_frame_{int(frame):010d}.jpg"] = row
    return out


@cli_main("check_tsn_reference.py")
def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="The authors' sample data.")
    parser.add_argument("--features", type=Path, required=True, help="rulstm-extract --out.")
    parser.add_argument("--rgb-weights", default=None)
    parser.add_argument("--flow-weights", default=None)
    parser.add_argument("--network", choices=["project", "pretrainedmodels"], default="project")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    worst = 0.0
    for modality, weights, channels, compute in (
        ("rgb", args.rgb_weights, 3, rgb_reference),
        ("flow", args.flow_weights, 10, flow_reference),
    ):
        if weights is None:
            continue
        reference = compute(args.data, reference_network(args.network, channels, weights))
        ours = project_features(args.features / f"{modality}.h5")
        missing = sorted(set(reference) - set(ours))
        if missing:
            print(f"{modality}: {len(missing)} reference keys missing, e.g. {missing[:2]}")
            return 1
        difference = max(float(np.abs(reference[k] - ours[k]).max()) for k in reference)
        scale = float(np.mean([np.abs(v).mean() for v in reference.values()]))
        # How much the features move from frame to frame: a tolerance means something only
        # if this is far above it (default-initialised random networks fail that).
        spread = float(np.stack(list(reference.values())).std(axis=0).mean())
        print(
            f"{modality}: {len(reference)} frames, max |difference| {difference:.2e} "
            f"(mean |feature| {scale:.3g}, mean spread across frames {spread:.3g}, "
            f"network: {args.network})"
        )
        worst = max(worst, difference)
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
