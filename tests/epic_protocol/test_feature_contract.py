"""The parts of the HDF5 contract the extraction's output folder relies on: compatibility of an
existing file, its stored videos, merging files, and the detections subgroup of obj.h5."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from epic_protocol.features import (
    DETECTIONS,
    DetectionsWriter,
    FeatureFileAccessError,
    FeatureFileError,
    FeatureFileWriter,
    FeatureStore,
    compatibility_problems,
    is_lock_error,
    merge_feature_files,
    provenance_of,
    stored_videos,
)


def _write(path, videos, *, dim=3, provenance=None, sparse=False):
    with FeatureFileWriter(
        path, modality="obj", dim=dim, fps=30.0, provenance=provenance or {"config_hash": "a"}
    ) as writer:
        for video, frames in videos.items():
            frames = np.asarray(frames)
            writer.write_video(
                video, frames, np.full((len(frames), dim), len(video), np.float32),
                attrs={"sparse": sparse},
            )  # fmt: skip


def test_compatibility_problems_name_what_differs(tmp_path):
    path = tmp_path / "obj.h5"
    assert compatibility_problems(path, dim=3, fps=30.0) == []  # absent: nothing to check
    _write(path, {"P01_01": [1, 2]})
    assert compatibility_problems(path, dim=3, fps=30.0, config_hash="a") == []
    assert compatibility_problems(path, dim=4, fps=25.0, config_hash="b") == [
        "its features are 3-d, not 4-d",
        "it is at 30.0 fps, not 25.0",
        "it was extracted with different settings (provenance config_hash)",
    ]
    other = tmp_path / "other.h5"
    h5py.File(other, "w").close()
    assert compatibility_problems(other, dim=3, fps=30.0) == ["it is not a rulstm-features file"]
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(FeatureFileError, match="junk.h5: not a readable HDF5 file"):
        compatibility_problems(junk, dim=3, fps=30.0)
    assert provenance_of(path) == {"config_hash": "a"}


def test_stored_videos_lists_complete_videos_with_their_frames(tmp_path):
    path = tmp_path / "obj.h5"
    assert stored_videos(path) == {}
    _write(path, {"P01_01": [1, 5, 9]}, sparse=True)
    with FeatureFileWriter(path, modality="obj", dim=3, fps=30.0) as writer:
        writer.start_video("P01_02")  # interrupted: not listed
    stored = stored_videos(path)
    assert list(stored) == ["P01_01"]
    assert stored["P01_01"].frames.tolist() == [1, 5, 9] and stored["P01_01"].sparse
    assert stored["P01_01"].covers(np.array([5, 9])) and not stored["P01_01"].covers(None)


def test_merge_keeps_old_videos_replaces_staged_ones_and_adds_detections(tmp_path):
    old, first, second = tmp_path / "obj.h5", tmp_path / "P01_02.h5", tmp_path / "P01_03.h5"
    _write(old, {"P01_01": [1, 2], "P01_02": [1]})
    _write(first, {"P01_02": [1, 2, 3]})
    _write(second, {"P01_03": [4]})
    found = tmp_path / "P01_03.detections.h5"
    detections = DetectionsWriter(found, class_names=["pan", "cup"])
    detections.append(4, np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), np.array([1, 0]), np.ones(2))
    detections.finish()
    merged = tmp_path / "obj.h5.tmp"
    merge_feature_files(
        merged, modality="obj", dim=3, fps=30.0, provenance={"config_hash": "a"},
        videos={"P01_02": first, "P01_03": second}, old=old,
        detections={"P01_02": tmp_path / "absent.h5", "P01_03": found},
    )  # fmt: skip
    store = FeatureStore(merged)
    assert sorted(store.videos()) == ["P01_01", "P01_02", "P01_03"]
    assert store.stored_frames("P01_02").tolist() == [1, 2, 3]  # the staged one wins
    store.close()
    with h5py.File(merged, "r") as handle:
        group = handle[f"P01_03/{DETECTIONS}"]
        assert group["frame"][()].tolist() == [4, 4]
        assert group["boxes"][()].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
        assert group["labels"][()].tolist() == [1, 0] and group["scores"].dtype == np.float32
        assert DETECTIONS not in handle["P01_02"]
    # Without the old file (an --overwrite with other settings) its videos are dropped.
    merge_feature_files(
        merged, modality="obj", dim=3, fps=30.0, provenance={}, videos={"P01_03": second}
    )
    assert sorted(stored_videos(merged)) == ["P01_03"]


def test_incomplete_detections_are_not_merged(tmp_path):
    staged = tmp_path / "P01_01.h5"
    _write(staged, {"P01_01": [1]})
    partial = DetectionsWriter(tmp_path / "P01_01.detections.h5", class_names=["pan"])
    partial.append(1, np.zeros((1, 4)), np.array([0]), np.ones(1))
    partial.close()  # never finished
    merge_feature_files(
        tmp_path / "obj.h5", modality="obj", dim=3, fps=30.0, provenance={},
        videos={"P01_01": staged}, detections={"P01_01": partial.path},
    )  # fmt: skip
    with h5py.File(tmp_path / "obj.h5", "r") as handle:
        assert DETECTIONS not in handle["P01_01"]


def test_lock_errors_are_told_by_the_message_not_the_path(tmp_path):
    assert is_lock_error(OSError("unable to lock file, errno = 11, error message = 'x'"))
    assert not is_lock_error(OSError(f"[Errno 17] File exists: '{tmp_path}/locked_videos'"))
    blocker = tmp_path / "locked_videos"
    blocker.write_text("x")
    with pytest.raises(FeatureFileAccessError, match="cannot open .* for writing"):
        FeatureFileWriter(blocker / "rgb.h5", modality="rgb", dim=3, fps=30.0)
