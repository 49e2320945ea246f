"""rulstm-import ego4d-features: window counts, placement at each window's last frame,
the back-padded last window, steps before the first window, errors named."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from epic_protocol.features import FeatureStore, MissingFeaturesError
from rulstm.compat.cli import main as import_main
from rulstm.compat.ego4d_features import (
    Ego4DFeatureError,
    expected_windows,
    import_ego4d_features,
    window_end_frames,
)


@pytest.mark.parametrize(
    "num_frames, ends",
    [
        (32, [32]),  # exactly one window
        (48, [32, 48]),  # 48 - 32 = 16: a second regular window, no padding
        (50, [32, 48, 50]),  # (50 - 32) % 16 = 2: a back-padded last window ending at 50
        (20, [20]),  # shorter than a window: one window
        (80, [32, 48, 64, 80]),
    ],
)
def test_window_ends_by_hand(num_frames, ends):
    assert window_end_frames(num_frames).tolist() == ends
    assert expected_windows(num_frames) == len(ends)


def write_video(folder, uid, num_frames, dim=3):
    rows = expected_windows(num_frames)
    # row i holds i + 1 in every column, so a lookup shows which window it read
    values = torch.arange(1, rows + 1, dtype=torch.float32)[:, None].repeat(1, dim)
    torch.save(values, folder / f"{uid}.pt")


@pytest.fixture
def released(tmp_path):
    folder = tmp_path / "omnivore_video_swinl"
    folder.mkdir()
    write_video(folder, "vidA", 50)
    write_video(folder, "vidB", 64)
    metadata = tmp_path / "ego4d.json"
    metadata.write_text(
        json.dumps(
            {
                "videos": [
                    {"video_uid": "vidA", "video_metadata": {"num_frames": 50}},
                    {"video_uid": "vidB", "duration_sec": 64 / 30},
                ]
            }
        )
    )
    return folder, metadata


def test_import_places_each_window_at_its_last_frame(tmp_path, released):
    folder, metadata = released
    out = tmp_path / "ego4d.h5"
    assert (
        import_main(
            [
                "ego4d-features",
                "--features",
                str(folder),
                "--metadata",
                str(metadata),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    store = FeatureStore(out)
    assert sorted(store.videos()) == ["vidA", "vidB"]
    # vidA: windows end at 32, 48 and (back-padded) 50; a zero row at frame 1
    assert store.stored_frames("vidA").tolist() == [1, 32, 48, 50]
    read = store.lookup("vidA", np.array([1, 31, 32, 47, 48, 49, 50]))[:, 0]
    assert read.tolist() == [0, 0, 1, 1, 2, 2, 3]  # never a window ending after the frame
    assert store.stored_frames("vidB").tolist() == [1, 32, 48, 64]
    with pytest.raises(MissingFeaturesError):
        store.lookup("vidA", np.array([51]))  # past the video's 50 frames
    # resumable: a second run skips both
    assert (
        import_main(
            [
                "ego4d-features",
                "--features",
                str(folder),
                "--metadata",
                str(metadata),
                "--out",
                str(out),
            ]
        )
        == 0
    )


def test_before_first_error_leaves_early_frames_unreadable(tmp_path, released):
    folder, metadata = released
    out = tmp_path / "strict.h5"
    import_ego4d_features(folder, out, metadata=metadata, videos=["vidA"], before_first="error")
    store = FeatureStore(out)
    assert store.stored_frames("vidA").tolist() == [32, 48, 50]
    with pytest.raises(MissingFeaturesError, match="frame 31 of video 'vidA'"):
        store.lookup("vidA", np.array([31]))


def test_wrong_window_count_is_named(tmp_path, released, capsys):
    folder, _ = released
    out = tmp_path / "bad.h5"
    with pytest.raises(Ego4DFeatureError, match=r"vidA\.pt: video vidA: 3 windows, but a 80-frame"):
        import_ego4d_features(folder, out, metadata={"vidA": 80}, videos=["vidA"])
    with pytest.raises(Ego4DFeatureError, match="no length for video vidB"):
        import_ego4d_features(folder, out, metadata={"vidA": 50})
    metadata = tmp_path / "m.json"
    metadata.write_text(json.dumps({"videos": [{"video_uid": "vidA"}]}))
    code = import_main(
        [
            "ego4d-features",
            "--features",
            str(folder),
            "--metadata",
            str(metadata),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "video vidA: no video_metadata.num_frames" in err and "\n" not in err


def test_a_pickle_that_is_not_a_tensor_is_refused(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    torch.save({"x": 1}, folder / "vidC.pt")
    with pytest.raises(Ego4DFeatureError, match="vidC.pt: holds a dict, not a tensor"):
        import_ego4d_features(folder, tmp_path / "o.h5", metadata={"vidC": 40})


def test_annotations_import_only_the_parent_videos_of_the_lta_clips(tmp_path, released):
    """--annotations fho_lta_*.json: only the clips' parent videos (vidA), not every file."""
    from epic_protocol.ego4d_lta import LTAAction, write_lta_annotations

    folder, metadata = released
    lta = tmp_path / "fho_lta_val.json"
    write_lta_annotations(lta, [LTAAction("clip1", "vidA", 0, 0, 9, 5, 0, 0)])
    out = tmp_path / "lta.h5"
    argv = ["ego4d-features", "--features", str(folder), "--metadata", str(metadata)]
    assert import_main([*argv, "--annotations", str(lta), "--out", str(out)]) == 0
    assert sorted(FeatureStore(out).videos()) == ["vidA"]


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"hello", r"bad\.pt: not a saved tensor \(not a torch.save zip archive"),  # text
        (None, r"bad\.pt: not a saved tensor \(not a torch.save zip archive"),  # cut short
    ],
)
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, capsys, content, expected):
    folder = tmp_path / "feats"
    folder.mkdir()
    if content is None:
        torch.save(torch.zeros(3, 4), folder / "whole.pt")
        content = (folder / "whole.pt").read_bytes()[:100]
        (folder / "whole.pt").unlink()
    (folder / "bad.pt").write_bytes(content)
    argv = ["ego4d-features", "--features", str(folder), "--metadata", str(tmp_path / "m.json")]
    (tmp_path / "m.json").write_text(
        json.dumps({"videos": [{"video_uid": "bad", "duration_sec": 2}]})
    )
    assert import_main([*argv, "--out", str(tmp_path / "o.h5")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(expected, err), err


def test_a_nan_window_is_named_by_file_and_window(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    values = torch.zeros(expected_windows(64), 3)
    values[2, 1] = float("nan")
    torch.save(values, folder / "vidN.pt")
    with pytest.raises(Ego4DFeatureError, match=r"vidN\.pt: video vidN: window 2 is not finite"):
        import_ego4d_features(folder, tmp_path / "o.h5", metadata={"vidN": 64})


@pytest.mark.parametrize("shape", [(3,), (3, 2, 4)], ids=["1-d", "3-d"])
def test_a_tensor_of_another_shape_is_named(tmp_path, shape):
    folder = tmp_path / "feats"
    folder.mkdir()
    torch.save(torch.zeros(shape), folder / "vidS.pt")
    with pytest.raises(
        Ego4DFeatureError, match=r"vidS\.pt: video vidS: expected a \(windows, dim\)"
    ):
        import_ego4d_features(folder, tmp_path / "o.h5", metadata={"vidS": 64})
