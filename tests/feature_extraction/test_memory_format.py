"""Channels-last memory format of the extraction backbones (``rgb.channels_last``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from epic_protocol.features import FeatureFileWriter, read_file_info, stored_videos
from feature_extraction.backbones import build_rgb_backbone
from feature_extraction.cli import main
from feature_extraction.config import load_config
from feature_extraction.foundation import build_foundation_backbone
from feature_extraction.memory_format import configure_channels_last, resolve_channels_last
from feature_extraction.models import build_models, provenance
from feature_extraction.output import StagingArea, merge_staging

CHANNELS_LAST = torch.channels_last


def _images(k: int = 2, h: int = 64, w: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (k, 3, h, w), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize(
    ("name", "preprocessing", "dim"),
    [
        ("resnet18", "torchvision", 512),
        ("bninception", "torchvision", 1024),
        ("bninception", "tsn", 1024),
    ],
)
def test_cnn_features_with_channels_last_equal_without_and_weights_are_channels_last(
    name: str, preprocessing: str, dim: int
) -> None:
    kwargs = {"name": name, "weights": None, "seed": 0, "preprocessing": preprocessing}
    off, on = build_rgb_backbone(**kwargs), build_rgb_backbone(**kwargs)
    assert configure_channels_last(off, False) is False
    assert configure_channels_last(on, True) is True
    conv = next(m for m in on.trunk.modules() if isinstance(m, torch.nn.Conv2d)).weight
    assert conv.is_contiguous(memory_format=CHANNELS_LAST) and not conv.is_contiguous()
    with torch.no_grad():
        expected, got = off(_images(h=96, w=96)), on(_images(h=96, w=96))
    assert got.shape == expected.shape == (2, dim)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_convnext_features_with_channels_last_equal_without() -> None:
    pytest.importorskip("timm")
    frames = _images(h=48, w=56).permute(0, 2, 3, 1).contiguous()  # (K, H, W, 3)
    off = build_foundation_backbone(name="timm:convnext_atto", weights="none", seed=0)
    on = build_foundation_backbone(name="timm:convnext_atto", weights="none", seed=0)
    assert configure_channels_last(off, False) is False
    assert configure_channels_last(on, "auto") is True  # a ConvNeXt is convolutional
    assert on.model.stem[0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        expected, got = off(frames), on(frames)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_auto_is_on_for_cnns_and_off_for_vits_video_and_bninception() -> None:
    pytest.importorskip("timm")
    resnet = build_rgb_backbone(name="resnet18", weights=None, seed=0)
    assert resolve_channels_last("auto", resnet) is True
    assert resolve_channels_last("auto", resnet, video=True) is False
    assert resolve_channels_last(False, resnet) is False
    vit = build_foundation_backbone(name="timm:vit_tiny_patch16_224", weights="none", seed=0)
    assert configure_channels_last(vit, "auto") is False
    assert vit.model.patch_embed.proj.weight.is_contiguous()
    tsn = build_rgb_backbone(name="bninception", weights=None, seed=0, preprocessing="tsn")
    assert configure_channels_last(tsn, "auto") is False  # bit-exact to the reference
    bninception = build_rgb_backbone(name="bninception", weights=None, seed=0)
    assert configure_channels_last(bninception, "auto") is True
    with pytest.raises(ValueError, match="channels_last"):
        resolve_channels_last("yes", resnet)  # type: ignore[arg-type]


def test_channels_last_is_recorded_but_not_hashed() -> None:
    base = ["--modalities", "rgb", "flow", "--device", "cpu", "--rgb.backbone", "resnet18"]
    base += ["--rgb.weights", "none", "--flow.backbone", "resnet18", "--flow.weights", "none"]
    base += ["--flow.method", "dis"]
    records = {}
    for value in ("true", "false", "auto"):
        config = load_config(None, [*base, "--rgb.channels_last", value])
        assert config.rgb.channels_last == {"true": True, "false": False}.get(value, value)
        models = build_models(config)
        records[value] = provenance(models, "rgb")
        assert provenance(models, "flow")["backbone"]["channels_last"] is True  # auto, a CNN
    assert records["true"]["backbone"]["channels_last"] is True
    assert records["false"]["backbone"]["channels_last"] is False
    assert records["auto"]["backbone"]["channels_last"] is True
    assert len({record["config_hash"] for record in records.values()}) == 1
    assert "channels_last" not in records["true"]["settings"]["rgb"]


def _extract_rgb(videos, out, tiny_config, tiny_overrides, *extra: str) -> int:
    args = ["--videos", str(videos), "--out", str(out), "-c", str(tiny_config)]
    args += ["--progress", "false", "--modalities", "rgb", *tiny_overrides, *extra]
    return main(args)


def test_a_resume_with_another_channels_last_records_both_settings(
    tmp_path, make_video, tiny_config, tiny_overrides
) -> None:
    """channels_last is not hashed, so a resumed run with the other setting adds its rows to
    the file: the record then says ``mixed`` and lists both values, not only one run's."""
    first = make_video("videos/P01_01.mp4", num_frames=6, fps=30)
    make_video("videos/P01_02.mp4", num_frames=6, fps=30)
    out = tmp_path / "out"
    assert (
        _extract_rgb(first, out, tiny_config, tiny_overrides, "--rgb.channels_last", "false") == 0
    )
    record = read_file_info(out / "rgb.h5").provenance["backbone"]
    assert record["channels_last"] is False and "mixed" not in record
    videos = first.parent
    assert (
        _extract_rgb(videos, out, tiny_config, tiny_overrides, "--rgb.channels_last", "true") == 0
    )
    info = read_file_info(out / "rgb.h5")
    assert stored_videos(out / "rgb.h5").keys() == {"P01_01", "P01_02"}
    record = info.provenance["backbone"]
    assert record["channels_last"] == "mixed"
    assert record["mixed"] == {"channels_last": [False, True]}
    # The same setting again adds nothing mixed; --overwrite redoes every video with one.
    assert (
        _extract_rgb(videos, out, tiny_config, tiny_overrides, "--rgb.channels_last", "true") == 0
    )
    assert read_file_info(out / "rgb.h5").provenance["backbone"]["channels_last"] == "mixed"
    overwrite = ["--rgb.channels_last", "true", "--overwrite"]
    assert _extract_rgb(videos, out, tiny_config, tiny_overrides, *overwrite) == 0
    record = read_file_info(out / "rgb.h5").provenance["backbone"]
    assert record["channels_last"] is True and "mixed" not in record


def test_a_resume_with_another_precision_setting_records_both(
    tmp_path, make_video, tiny_config, tiny_overrides, force_bf16_native
) -> None:
    """``--precision 32`` and ``auto`` (float32 on a CPU without native bf16) share a hash:
    the configured values of both runs are recorded."""
    force_bf16_native(False)
    first = make_video("videos/P01_01.mp4", num_frames=6, fps=30)
    make_video("videos/P01_02.mp4", num_frames=6, fps=30)
    out = tmp_path / "out"
    assert _extract_rgb(first, out, tiny_config, tiny_overrides, "--precision", "32") == 0
    assert _extract_rgb(first.parent, out, tiny_config, tiny_overrides, "--precision", "auto") == 0
    record = read_file_info(out / "rgb.h5").provenance["backbone"]
    assert record["precision"] == "32-true"  # hashed: one value
    assert record["precision_setting"] == "mixed"
    assert record["mixed"] == {"precision_setting": ["32", "auto"]}


def test_staging_files_of_an_interrupted_run_keep_their_setting_in_the_merged_record(
    tmp_path,
) -> None:
    """A run killed after finishing a video (its staging file kept) and resumed with the other
    channels_last: the merged file records both settings, oldest first."""
    out = tmp_path / "out"
    staging = StagingArea(out)

    def record(channels_last: bool) -> dict:
        backbone = {"backbone": "resnet18", "channels_last": channels_last, "library": {}}
        return {"config_hash": "abc", "backbone": backbone}

    for video, channels_last in (("P01_01", True), ("P01_02", False)):
        path = staging.path("rgb", video)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FeatureFileWriter(
            path, modality="rgb", dim=2, fps=30.0, provenance=record(channels_last)
        ) as writer:
            writer.start_video(video)
            writer.append(video, np.array([1, 2]), np.zeros((2, 2), np.float32))
            writer.finish_video(video)
        os.utime(path, (1000.0, 1000.0 + (video == "P01_02")))  # P01_01 first
    merged = merge_staging(out, "rgb", dim=2, fps=30.0, provenance=record(False))
    assert merged == ["P01_01", "P01_02"]
    backbone = read_file_info(out / "rgb.h5").provenance["backbone"]
    assert backbone["channels_last"] == "mixed"
    assert backbone["mixed"] == {"channels_last": [True, False]}


def test_a_resume_with_other_weights_in_the_same_file_is_refused(
    tmp_path, make_video, tiny_config, tiny_overrides, capsys
) -> None:
    """The weights' path is in the config hash, their content is not (its sha256 is the
    record's revision): a weights file replaced between two runs must not mix the rows of two
    models in one file. The run is refused naming both revisions; --overwrite redoes all."""
    import torchvision

    first = make_video("videos/P01_01.mp4", num_frames=6, fps=30)
    make_video("videos/P01_02.mp4", num_frames=6, fps=30)
    weights, out = tmp_path / "resnet18.pth", tmp_path / "out"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    assert _extract_rgb(first, out, tiny_config, tiny_overrides, "--rgb.weights", str(weights)) == 0
    revision = read_file_info(out / "rgb.h5").provenance["backbone"]["revision"]
    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    videos = first.parent
    capsys.readouterr()
    assert (
        _extract_rgb(videos, out, tiny_config, tiny_overrides, "--rgb.weights", str(weights)) == 1
    )
    err = capsys.readouterr().err
    assert "rgb.h5" in err and revision in err and "--overwrite" in err
    assert stored_videos(out / "rgb.h5").keys() == {"P01_01"}  # nothing added
    again = ["--rgb.weights", str(weights), "--overwrite", "true"]
    assert _extract_rgb(videos, out, tiny_config, tiny_overrides, *again) == 0
    info = read_file_info(out / "rgb.h5")
    assert stored_videos(out / "rgb.h5").keys() == {"P01_01", "P01_02"}
    assert info.provenance["backbone"]["revision"] not in (revision, "mixed")
