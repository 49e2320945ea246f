"""The reference-like configs (default.yaml, cpu.yaml) run end to end offline: the same
models with random weights (weights none) on a tiny video, so no download is needed."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest

from feature_extraction.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "extract"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "cpu"])
def test_reference_config_runs_offline(name, tmp_path, make_video):
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
            "--device",
            "cpu",
            "--progress",
            "false",
            "--num_workers",
            "0",
            "--threads",
            "1",
            "--decode.width",
            "64",
            "--decode.height",
            "48",
            "--rgb.weights",
            "none",
            "--flow.weights",
            "none",
            "--obj.weights",
            "none",
            "--flow.method",
            "dis",
            "--obj.min_size",
            "64",
            "--obj.max_size",
            "64",
        ]  # fmt: skip
    )
    assert code == 0
    for modality in ("rgb", "flow", "obj"):
        with h5py.File(out / f"{modality}.h5") as handle:
            group = handle["P01_01"]
            assert group.attrs["complete"]
            assert group["frames"][()].tolist() == list(range(1, 9))
            assert group["features"].shape[0] == 8
