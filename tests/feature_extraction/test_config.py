"""The shipped extraction configs parse, and command-line overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_extraction.config import ExtractConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "extract").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_parse(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, ExtractConfig)
    assert config.fps == 30 and set(config.modalities) <= {"rgb", "flow", "obj"}


def test_quickstart_config_takes_the_palette_and_stays_offline(tmp_path: Path) -> None:
    palette = tmp_path / "objects.yaml"
    path = next(p for p in CONFIGS if p.stem == "quickstart")
    config = load_config(path, ["--obj.palette", str(palette), "--modalities", "rgb", "obj"])
    assert config.obj.palette == palette and config.obj.detector == "color_blob"
    assert config.modalities == ["rgb", "obj"]
    assert config.rgb.weights is None and config.flow.weights is None  # no downloads


def test_bad_values_are_rejected() -> None:
    with pytest.raises(Exception, match="modalities|sound"):
        load_config(None, ["--modalities", "sound"])
    with pytest.raises(ValueError, match="fps"):
        ExtractConfig(fps=0)
