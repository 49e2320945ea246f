"""Fixtures shared by the whole suite: W&B off, and synthetic feature files in tmp_path."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

# The suite runs one pytest-xdist worker per core with tiny models: one intra-op thread per
# worker avoids oversubscription (two contending threads were several times slower here).
torch.set_num_threads(1)

from epic_protocol.features import FeatureFileWriter  # noqa: E402


def write_split(path: Path, rows: Iterable[tuple]) -> Path:
    """Write a RU-LSTM style split CSV (no header)."""
    path.write_text("".join(",".join(str(c) for c in row) + "\n" for row in rows))
    return path


def write_features(
    path: Path,
    videos: dict[str, int],
    *,
    dim: int,
    modality: str = "rgb",
    fps: float = 30.0,
    every: int = 1,
    value: Callable[[str, np.ndarray], np.ndarray] | None = None,
    record_length: bool = True,
) -> Path:
    """A feature file whose row for frame f of video v is ``value(v, frames)`` (default: the
    frame number in column 0 and a per-video code in column 1, so lookups are checkable).
    ``videos`` maps each video to its length in frames, recorded as ``num_frames`` unless
    ``record_length`` is False (files written before the attribute existed)."""
    with FeatureFileWriter(path, modality=modality, dim=dim, fps=fps) as writer:
        for index, (video, num_frames) in enumerate(videos.items()):
            frames = np.arange(1, num_frames + 1, every)
            if value is None:
                features = np.zeros((len(frames), dim), np.float32)
                features[:, 0] = frames
                if dim > 1:
                    features[:, 1] = index
            else:
                features = value(video, frames)
            writer.write_video(
                video, frames, features, num_frames=num_frames if record_length else None
            )
    return path


@pytest.fixture
def feature_file(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "rgb.h5", **kwargs) -> Path:
        return write_features(tmp_path / name, **kwargs)

    return make


def fast_dev_run_args(
    *configs: Path,
    features: Mapping[str, Path],
    train: Path,
    val: Path,
    root: Path,
    actions: Path | str = "null",
    batch_size: int = 4,
    hidden: int = 8,
) -> list[str]:
    """``rulstm fit`` arguments that run ``configs`` (applied in order) for one batch
    (``fast_dev_run``) on CPU at a tiny hidden size: no logger, no initialisation checkpoints,
    the run folder ``root``. Append options to the returned list to override more."""
    args = ["fit"]
    for config in configs:
        args += ["-c", str(config)]
    return args + [
        "--data.features", str({m: str(p) for m, p in features.items()}),
        "--data.train_annotations", str(train),
        "--data.val_annotations", str(val),
        "--data.actions", str(actions),
        "--data.batch_size", str(batch_size),
        "--data.num_workers", "0",
        "--model.net.init_args.hidden", str(hidden),
        "--model.init_checkpoint", "null",
        "--model.branch_checkpoints", "null",
        "--trainer.fast_dev_run", "true",
        "--trainer.logger", "false",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.default_root_dir", str(root),
    ]  # fmt: skip


@pytest.fixture(name="fast_dev_run_args")
def fast_dev_run_args_fixture() -> Callable[..., list[str]]:
    """:func:`fast_dev_run_args`, for test modules (conftest is not importable under
    ``--import-mode=importlib``)."""
    return fast_dev_run_args


@pytest.fixture
def tiny_extraction_options() -> list[str]:
    """``rulstm-extract`` options for a quick offline run of any extraction config on CPU:
    64x48 frames, random weights (no download), DIS flow, one thread, no workers."""
    return [
        "--device", "cpu",
        "--progress", "false",
        "--num_workers", "0",
        "--threads", "1",
        "--decode.width", "64",
        "--decode.height", "48",
        "--rgb.weights", "none",
        "--flow.weights", "none",
        "--obj.weights", "none",
        "--flow.method", "dis",
        "--obj.min_size", "64",
        "--obj.max_size", "64",
    ]  # fmt: skip


@pytest.fixture
def load_script() -> Callable[[str], object]:
    """``load_script("train_egtea")``: a module of ``scripts/`` (not a package), imported
    from its file so that tests can call its functions."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"

    def load(name: str) -> object:
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def force_bf16_native(monkeypatch) -> Callable[[bool], None]:
    """``force_bf16_native(True/False)``: make the precision rule
    (:func:`epic_protocol.precision.cpu_bf16_native`) say this CPU has native bf16 or not,
    so both branches run on any machine."""
    from epic_protocol import precision

    def force(native: bool) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_native", lambda: native)
        monkeypatch.setattr(precision, "_warned", set())

    return force
