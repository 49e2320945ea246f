"""A synthetic anticipation dataset whose labels are predictable from the features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from epic_protocol.features import FeatureFileWriter


@dataclass(frozen=True)
class SyntheticData:
    root: Path
    train: Path
    val: Path
    features: dict[str, Path]
    num_classes: int


def pair(action: int) -> tuple[int, int]:
    """A distinct (verb, noun) per action, within the EK100 verb/noun ranges."""
    return action % 10, action // 10


def make_dataset(
    root: Path,
    *,
    dims: dict[str, int],
    num_classes: int = 5,
    videos: int = 6,
    frames: int = 1500,
    seed: int = 0,
    num_labels: int | None = None,
) -> SyntheticData:
    """Segments every 150 frames; during the 4.3 s before a segment starts, every modality's
    feature vector has a bump at the segment's label, so the action is predictable."""
    rng = np.random.default_rng(seed)
    num_labels = num_labels or num_classes
    rows = {"train": [], "val": []}
    labels_per_video = {}
    for v in range(videos):
        video = f"P{v + 1:02d}_01"
        label_at = np.zeros(frames + 1, dtype=int)
        for i, start in enumerate(range(200, frames - 100, 150)):
            action = int(rng.integers(0, num_labels))
            label_at[start - 130 : start] = action
            split = "val" if v >= videos - 2 else "train"
            rows[split].append((f"{video}_{i}", video, start, start + 60, *pair(action), action))
        labels_per_video[video] = label_at
    # Every label must appear in training so the vocabulary built from it is complete.
    rows["train"] += [(f"extra_{a}", "P01_01", 300, 330, *pair(a), a) for a in range(num_classes)]
    paths = {}
    for split, split_rows in rows.items():
        paths[split] = root / f"{split}.csv"
        paths[split].write_text("".join(",".join(map(str, r)) + "\n" for r in split_rows))
    features = {}
    for modality, dim in dims.items():
        features[modality] = root / f"{modality}.h5"
        with FeatureFileWriter(features[modality], modality=modality, dim=dim, fps=30.0) as w:
            for video, label_at in labels_per_video.items():
                values = rng.normal(scale=0.1, size=(frames, dim)).astype(np.float32)
                values[np.arange(frames), label_at[1:] % dim] += 2.0
                w.write_video(video, np.arange(1, frames + 1), values)
    return SyntheticData(root, paths["train"], paths["val"], features, num_classes)


@pytest.fixture
def synthetic_data(tmp_path: Path):
    def make(**kwargs) -> SyntheticData:
        return make_dataset(tmp_path, **kwargs)

    return make
