"""``rulstm-extract`` ends a run on bad input with one line ``rulstm-extract: error: ...``
naming the option, and a non-zero exit status, no traceback."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from feature_extraction.cli import main


@pytest.fixture
def base_args(tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]):
    make_video("videos/P01_01.mp4", num_frames=8)
    return [
        "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "out"),
        "-c", str(tiny_config), *tiny_overrides, "--progress", "false", "--modalities", "rgb",
    ]  # fmt: skip


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    return errors[0]


def test_unknown_backbone_and_detector(base_args, capsys):
    assert main([*base_args, "--rgb.backbone", "nosuchnet"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line == (
        "rulstm-extract: error: cannot build torchvision model 'nosuchnet': Unknown model nosuchnet"
    )
    assert main([*base_args, "--modalities", "obj", "--obj.detector", "nosuchdet"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("rulstm-extract: error: obj.detector 'nosuchdet'")


def test_weights_that_cannot_be_downloaded(base_args, capsys, monkeypatch, tmp_path):
    import torchvision.models._api as weights_api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))  # nothing cached
    calls = []

    def offline(url, *args, **kwargs):  # what the download meets without a network
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    assert main([*base_args, "--rgb.weights", "DEFAULT"]) == 1
    assert calls and calls[0].endswith(".pth")
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("rulstm-extract: error: cannot download the ")
    assert "weights of resnet18" in line and "weights: none" in line


def test_unknown_option_is_a_usage_error(base_args, capsys):
    assert main([*base_args, "--rgb.nosuch", "1"]) == 2
    assert _error_line(capsys.readouterr().err) == (
        "rulstm-extract: error: unrecognized arguments: --rgb.nosuch 1"
    )
    assert main([*base_args, "--only-needed"]) == 2
    assert _error_line(capsys.readouterr().err) == (
        "rulstm-extract: error: --only-needed needs --annotations"
    )


def test_devices_that_do_not_match_torchrun_are_refused(base_args, capsys, monkeypatch):
    """Under torchrun, --devices/--num_nodes must match its processes: otherwise every process
    would extract everything into the same folder (seen with torchrun --nproc_per_node 2 and
    the default --devices 1)."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main([*base_args, "--devices", "2"]) == 2
    assert _error_line(capsys.readouterr().err) == (
        "rulstm-extract: error: torchrun started 2 processes per node, 4 in all, but --devices 2 "
        "--num_nodes 1: give --devices 2 --num_nodes 2 (--devices = --nproc_per_node, "
        "--num_nodes = --nnodes)"
    )
    assert not Path(base_args[3]).exists()  # nothing written (base_args[3]: --out)
