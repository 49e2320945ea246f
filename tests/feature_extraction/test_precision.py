"""Extraction precision: ``auto`` follows the precision rule (bf16 where the device computes
it natively, else float32), and any precision but float32 is part of the feature files' config
hash, so a rerun on a machine where ``auto`` means something else cannot mix float32 and bf16
rows. Both branches of the rule are forced, so the tests mean the same on every CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from epic_protocol.precision import EmulatedBf16Warning
from feature_extraction.cli import main
from feature_extraction.config import load_config
from feature_extraction.models import build_models, provenance, resolve_precision
from feature_extraction.streaming import StreamingExtractor

CPU = torch.device("cpu")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_follows_native_bf16(native, expected, force_bf16_native):
    force_bf16_native(native)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("32", CPU) == "32-true"
    assert resolve_precision("16-mixed", CPU) == "16-mixed"


def test_explicit_bf16_on_an_emulating_cpu_warns(force_bf16_native):
    force_bf16_native(False)
    with pytest.warns(EmulatedBf16Warning, match="extraction precision bf16-mixed"):
        assert resolve_precision("bf16-mixed", CPU) == "bf16-mixed"


def _hash(tiny_config: Path, overrides: list[str], modality: str = "rgb") -> dict:
    config = load_config(tiny_config, overrides)
    models = build_models(config, device=CPU)
    return provenance(models, modality)


def test_the_resolved_precision_is_part_of_the_config_hash(
    tiny_config, tiny_overrides, force_bf16_native
):
    auto = [*tiny_overrides, "--precision", "auto"]
    fp32 = [*tiny_overrides, "--precision", "32"]
    force_bf16_native(False)
    emulated = _hash(tiny_config, auto)
    float32 = _hash(tiny_config, fp32)
    # float32 files keep the hash they had before precision was hashed.
    assert emulated["config_hash"] == float32["config_hash"]
    assert "precision" not in float32["settings"]
    force_bf16_native(True)
    native = _hash(tiny_config, auto)
    assert native["settings"]["precision"] == "bf16-mixed"
    assert native["config_hash"] != float32["config_hash"]
    assert _hash(tiny_config, fp32)["config_hash"] == float32["config_hash"]
    bf16 = _hash(tiny_config, [*tiny_overrides, "--precision", "bf16-mixed"])
    assert bf16["config_hash"] == native["config_hash"]


def test_a_rerun_where_auto_means_bf16_does_not_mix_rows(
    tmp_path, make_video, tiny_config, tiny_overrides, force_bf16_native, capsys
):
    """float32 features, then the same command where ``auto`` resolves to bf16: the file is
    refused (different settings) instead of resumed with bf16 rows."""
    video = make_video("videos/clip.mp4", num_frames=6, fps=30, width=64, height=48)
    out = tmp_path / "out"
    args = [
        "--videos", str(video), "--out", str(out), "-c", str(tiny_config),
        "--progress", "false", "--modalities", "rgb", "--precision", "auto", *tiny_overrides,
    ]  # fmt: skip
    force_bf16_native(False)
    assert main(args) == 0
    force_bf16_native(True)
    assert main(args) == 1  # an output folder of other features: a data error
    err = capsys.readouterr().err
    assert "rgb.h5" in err and "different settings" in err


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_streaming_runs_at_the_resolved_precision(
    native, expected, tiny_config, tiny_overrides, force_bf16_native
):
    force_bf16_native(native)
    config = load_config(tiny_config, [*tiny_overrides, "--precision", "auto"])
    extractor = StreamingExtractor(config, device="cpu")
    assert extractor.precision == expected
    with extractor._autocast():
        assert torch.is_autocast_enabled("cpu") is native
