"""The reference-like configs (default.yaml, cpu.yaml) run end to end offline: the same
models with random weights (weights none) on a tiny video, so no download is needed."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from feature_extraction.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "extract"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "cpu"])
def test_reference_config_runs_offline(name, tmp_path, make_video, tiny_extraction_options):
    video = make_video("videos/P01_01.mp4", num_frames=8)
    out = tmp_path / "out"
    code = main(
        [
            "--videos",
            str(video.parent),
            "--out",
            str(out),
            "-c",
            str(CONFIGS / f"{name}.yaml"),
            *tiny_extraction_options,
        ]  # fmt: skip
    )
    assert code == 0
    for modality in ("rgb", "flow", "obj"):
        with h5py.File(out / f"{modality}.h5") as handle:
            group = handle["P01_01"]
            assert group.attrs["complete"]
            assert group["frames"][()].tolist() == list(range(1, 9))
            assert group["features"].shape[0] == 8


def _authors_rgb_and_flow(frames: Path, rgb_net, flow_net) -> dict[str, dict[str, np.ndarray]]:
    """The RU-LSTM authors' example extraction scripts, restated: torchvision transforms on
    PIL images, their flow buffer (five copies of image 1, then drop the oldest pair), one
    image per forward."""
    from glob import glob
    from os.path import basename

    import torch
    from PIL import Image
    from torchvision import transforms

    rgb_transform = transforms.Compose(
        [
            transforms.Resize([256, 454]),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: x[[2, 1, 0], ...] * 255),
            transforms.Normalize(mean=[104, 117, 128], std=[1, 1, 1]),
        ]
    )
    flow_transform = transforms.Compose(
        [
            transforms.Resize([256, 454]),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: x * 255),
            transforms.Normalize(mean=[128], std=[1]),
        ]
    )
    out: dict[str, dict[str, np.ndarray]] = {"rgb": {}, "flow": {}}
    with torch.no_grad():
        for path in sorted(glob(str(frames / "*_frame_*.jpg"))):
            data = rgb_transform(Image.open(path)).unsqueeze(0)
            out["rgb"][basename(path)] = rgb_net(data).squeeze().numpy()
        buffer: list = []
        for path in sorted(glob(str(frames / "*_u_*.jpg"))):
            u = Image.open(path).convert("L")
            v = Image.open(path.replace("_u_", "_v_")).convert("L")
            for _ in range(1 if buffer else 5):
                buffer += [flow_transform(u), flow_transform(v)]
            if len(buffer) > 10:
                del buffer[:2]
            key = basename(path).replace("flow_u_", "frame_")
            out["flow"][key] = flow_net(torch.cat(buffer, 0).unsqueeze(0)).squeeze().numpy()
    return out


@pytest.mark.slow
def test_rulstm_tsn_config_matches_the_authors_scripts_on_frames(tmp_path):
    """rulstm_tsn.yaml offline (random BN-Inception checkpoints in the authors' layout) on a
    tiny frame folder in the authors' flat layout: within 1e-3 of their scripts, restated."""
    import torch
    from PIL import Image

    from feature_extraction.bninception import BNInception
    from feature_extraction.tsn import calibrate_batchnorm

    rng = np.random.default_rng(0)
    frames = tmp_path / "frames"
    frames.mkdir()
    for n in range(1, 4):
        name = f"P01_01_frame_{n:010d}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(frames / name)
        for kind in ("u", "v"):
            flow = rng.normal(128, 20, (48, 64)).clip(0, 255).astype(np.uint8)
            Image.fromarray(flow).save(frames / f"P01_01_flow_{kind}_{n:010d}.jpg")
    nets, weights = {}, {}
    for modality, channels in (("rgb", 3), ("flow", 10)):
        torch.manual_seed(channels)
        net = BNInception(in_channels=channels)
        # Calibrated BatchNorm statistics: default-initialised random features hardly depend
        # on the input, which would make a 1e-3 comparison meaningless.
        calibration = torch.randn(2, channels, 256, 454) * 60
        calibrate_batchnorm(net, calibration)
        state = {f"module.base_model.{k}": v for k, v in net.state_dict().items()}
        state |= {
            "module.new_fc.weight": torch.randn(4, 1024),
            "module.new_fc.bias": torch.zeros(4),
        }
        weights[modality] = tmp_path / f"TSN-{modality}.pth.tar"
        torch.save({"state_dict": state}, weights[modality])
        nets[modality] = net
    out = tmp_path / "out"
    code = main(
        [
            "--frames",
            str(frames),
            "--out",
            str(out),
            "-c",
            str(CONFIGS / "rulstm_tsn.yaml"),
            "--device",
            "cpu",
            "--progress",
            "false",
            "--num_workers",
            "0",
            "--threads",
            "1",
            "--rgb.weights",
            str(weights["rgb"]),
            "--flow.weights",
            str(weights["flow"]),
        ]  # fmt: skip
    )
    assert code == 0
    reference = _authors_rgb_and_flow(frames, nets["rgb"], nets["flow"])
    for modality in ("rgb", "flow"):
        with h5py.File(out / f"{modality}.h5") as handle:
            group = handle["P01_01"]
            assert group["frames"][()].tolist() == [1, 2, 3]
            ours = group["features"][()]
        expected = np.stack([reference[modality][f"P01_01_frame_{n:010d}.jpg"] for n in (1, 2, 3)])
        assert ours.shape == (3, 1024)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-3)
        # The features respond to their input far beyond the tolerance.
        assert np.abs(expected[1] - expected[0]).max() > 0.1, modality
