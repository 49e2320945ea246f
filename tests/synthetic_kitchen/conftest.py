"""A tiny synthetic dataset, generated once per test session (about 2 s)."""

from __future__ import annotations

import pytest

from synthetic_kitchen import DatasetPaths, generate_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> DatasetPaths:
    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    return generate_dataset(out, preset="tiny", seed=0, workers=1, progress=False)
