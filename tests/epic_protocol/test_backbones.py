"""A checkpoint is evaluated on features of the backbone it was trained on."""

from __future__ import annotations

import pytest

from epic_protocol.backbones import (
    MIXED,
    PER_RUN_KEYS,
    BackboneMismatchError,
    backbone_of,
    check_backbones,
    combine_records,
)

DINO = {
    "backbone": "timm:vit_base_patch14_dinov2",
    "weights": "/data/dinov2",
    "revision": "sha256:aaaa",
    "clip_length": 1,
    "clip_stride": 1,
    "dim": 768,
}
CLIP = {**DINO, "backbone": "open_clip:ViT-B-16", "revision": "sha256:bbbb", "dim": 512}


def test_a_different_backbone_is_refused_naming_both() -> None:
    with pytest.raises(BackboneMismatchError) as caught:
        check_backbones(
            {"rgb": CLIP}, {"rgb": DINO}, features_name="rgb.h5", checkpoint_name="best.ckpt"
        )
    message = str(caught.value)
    assert "timm:vit_base_patch14_dinov2" in message and "open_clip:ViT-B-16" in message
    assert "best.ckpt" in message and "rgb.h5" in message
    other_weights = {**DINO, "revision": "sha256:cccc"}  # same name, other file
    with pytest.raises(BackboneMismatchError, match="sha256:cccc"):
        check_backbones(
            {"rgb": other_weights}, {"rgb": DINO}, features_name="f", checkpoint_name="c"
        )


def test_the_same_backbone_passes_and_a_missing_record_warns() -> None:
    moved = {**DINO, "weights": "/elsewhere/dinov2"}  # same file hash, other folder
    assert (
        check_backbones({"rgb": moved}, {"rgb": DINO}, features_name="f", checkpoint_name="c") == []
    )
    with pytest.warns(UserWarning, match="records no feature backbone"):
        check_backbones({"rgb": DINO}, None, features_name="f", checkpoint_name="old.ckpt")
    with pytest.warns(UserWarning, match="records no rgb backbone"):
        check_backbones({"rgb": None}, {"rgb": DINO}, features_name="old.h5", checkpoint_name="c")
    assert backbone_of({"config_hash": "x"}) is None
    assert backbone_of({"backbone": DINO}) == DINO


def test_combined_records_mark_the_per_run_settings_that_differed() -> None:
    run = {**DINO, "channels_last": False, "precision_setting": "auto", "library": {"timm": "1"}}
    assert combine_records(run, [run, run]) == run  # nothing differed: unchanged
    later = {**run, "channels_last": True, "library": {"timm": "2"}}
    combined = combine_records(later, [run])
    assert combined["channels_last"] == combined["library"] == MIXED
    assert combined["precision_setting"] == "auto"
    assert combined["mixed"] == {
        "channels_last": [False, True],
        "library": [{"timm": "1"}, {"timm": "2"}],
    }
    assert {k: v for k, v in combined.items() if k not in PER_RUN_KEYS + ("mixed",)} == DINO
    # Combining again keeps every value once; a file without a record counts as None.
    again = combine_records(run, [combined, None])
    assert again["mixed"]["channels_last"] == [False, True, None]
    assert again["mixed"]["precision_setting"] == ["auto", None]
    assert again["mixed"]["library"] == [{"timm": "1"}, {"timm": "2"}, None]


def test_another_decode_size_or_flow_method_is_refused_where_both_record_it() -> None:
    """Features of frames decoded at another size (or flow of another method) are other
    features; records of older files, which lack these keys, are still accepted."""
    at_456 = {**DINO, "decode_size": [456, 256]}
    with pytest.raises(BackboneMismatchError) as caught:
        check_backbones(
            {"rgb": {**DINO, "decode_size": [228, 128]}}, {"rgb": at_456},
            features_name="f", checkpoint_name="c",
        )  # fmt: skip
    assert "frames decoded at 228x128" in str(caught.value)
    assert "frames decoded at 456x256" in str(caught.value)
    assert check_backbones({"rgb": DINO}, {"rgb": at_456}, features_name="f",
                           checkpoint_name="c") == []  # fmt: skip
    flow = {**DINO, "backbone": "resnet18", "flow_method": "dis", "decode_size": [228, 128]}
    with pytest.raises(BackboneMismatchError, match="raft flow"):
        check_backbones({"flow": {**flow, "flow_method": "raft"}}, {"flow": flow},
                        features_name="f", checkpoint_name="c")  # fmt: skip
