"""Fixtures shared by the whole suite: W&B off, and synthetic feature files in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
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
