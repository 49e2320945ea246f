from __future__ import annotations

import logging
import pickle
import warnings

import h5py
import numpy as np
import pytest

from epic_protocol.features import (
    COMPLETE,
    FeatureFileError,
    FeatureFileMismatchError,
    FeatureFileWriter,
    FeaturesReplacedWarning,
    feature_file_mismatches,
    read_file_info,
)


def test_round_trip_attributes_and_resume(tmp_path):
    path = tmp_path / "rgb.h5"
    with FeatureFileWriter(path, modality="rgb", dim=3, fps=30.0, provenance={"net": "r50"}) as w:
        w.write_video("P01_01", np.array([1, 2, 5]), np.ones((3, 3)))
        w.start_video("P01_02")
        w.append("P01_02", np.array([1, 2]), np.zeros((2, 3)))
        w.append("P01_02", np.array([3]), np.zeros((1, 3)))
        # P01_02 never finished: an interrupted write.
    info = read_file_info(path)
    assert (info.modality, info.dim, info.fps, info.provenance) == ("rgb", 3, 30.0, {"net": "r50"})
    with h5py.File(path) as handle:
        assert handle["P01_01/frames"][()].tolist() == [1, 2, 5]
        assert handle["P01_01"].attrs[COMPLETE] and not handle["P01_02"].attrs[COMPLETE]
        assert handle["P01_02/features"].shape == (3, 3)
    with FeatureFileWriter(path, modality="rgb", dim=3, fps=30.0) as w:
        assert w.completed_videos() == {"P01_01"}
        w.start_video("P01_02")  # discards the partial rows
        w.append("P01_02", np.array([7]), np.zeros((1, 3)))
        w.finish_video("P01_02")
        with pytest.raises(FeatureFileError, match="already complete"):
            w.start_video("P01_01")
        w.start_video("P01_01", overwrite=True)
    with h5py.File(path) as handle:
        assert handle["P01_02/frames"][()].tolist() == [7]


def test_writer_rejects_bad_input(tmp_path):
    path = tmp_path / "flow.h5"
    with FeatureFileWriter(path, modality="flow", dim=2, fps=30.0) as w:
        w.start_video("v")
        with pytest.raises(FeatureFileError, match=r"expected features of shape \(2, 2\)"):
            w.append("v", np.array([1, 2]), np.zeros((2, 3)))
        with pytest.raises(FeatureFileError, match="strictly increasing"):
            w.append("v", np.array([2, 2]), np.zeros((2, 2)))
        w.append("v", np.array([4]), np.zeros((1, 2)))
        with pytest.raises(FeatureFileError, match="last stored 4"):
            w.append("v", np.array([3]), np.zeros((1, 2)))
        with pytest.raises(FeatureFileError, match="invalid video id"):
            w.start_video("a/b")
        with pytest.raises(FeatureFileError, match="start_video"):
            w.append("other", np.array([1]), np.zeros((1, 2)))
    plain = tmp_path / "plain.h5"
    h5py.File(plain, "w").close()
    with pytest.raises(FeatureFileError, match="not a rulstm-features file"):
        read_file_info(plain)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeatureFileError, match="junk.h5: not a readable HDF5"):
        read_file_info(tmp_path / "junk.h5")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        read_file_info(tmp_path / "nothing.h5")


def test_other_attributes_recreate_a_file_without_complete_videos(tmp_path, caplog):
    """A file left by a run that failed before finishing any video (here: one interrupted
    video) does not block a rerun with another dim: it is recreated, with an INFO line."""
    path = tmp_path / "obj.h5"
    with FeatureFileWriter(path, modality="obj", dim=20, fps=30.0) as w:
        w.start_video("P01_01")
        w.append("P01_01", np.array([1]), np.zeros((1, 20)))
    assert feature_file_mismatches(path, modality="obj", dim=352, fps=30.0) == (
        ["dim is 20, not 352"],
        0,
    )
    with (
        caplog.at_level(logging.INFO, logger="epic_protocol.features"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")  # no warning: nothing of value is lost
        with FeatureFileWriter(path, modality="obj", dim=352, fps=30.0) as w:
            assert w.replaced == ["dim is 20, not 352"]
            assert w.completed_videos() == set() and "P01_01" not in w._file
            w.write_video("P01_01", np.array([1]), np.ones((1, 352)))
    assert f"{path}: holds no complete video; recreating it (dim is 20, not 352)" in caplog.text
    info = read_file_info(path)
    assert (info.dim, info.storage_dtype) == (352, "float32")
    # Agreeing attributes leave the file as it is.
    with FeatureFileWriter(path, modality="obj", dim=352, fps=30.0) as w:
        assert w.replaced == [] and w.completed_videos() == {"P01_01"}


def test_complete_videos_of_other_features_are_refused_or_replaced(tmp_path):
    path = tmp_path / "flow.h5"
    with FeatureFileWriter(path, modality="flow", dim=2, fps=30.0) as w:
        w.write_video("v", np.array([1, 2]), np.zeros((2, 2)))
    want = {"modality": "rgb", "dim": 5, "fps": 25.0, "dtype": "float16"}
    differences = [
        "modality is 'flow', not 'rgb'",
        "dim is 2, not 5",
        "fps is 30.0, not 25.0",
        "storage dtype is 'float32', not 'float16'",
    ]
    assert feature_file_mismatches(path, **want) == (differences, 1)
    assert feature_file_mismatches(tmp_path / "absent.h5", **want) == ([], 0)
    with pytest.raises(FeatureFileMismatchError) as caught:
        FeatureFileWriter(path, **want)
    error = caught.value
    assert (error.path, error.mismatches, error.videos) == (path, differences, 1)
    assert str(error) == (
        f"{path} already holds 1 complete video of different features: "
        f"{'; '.join(differences)}. Delete it, write to another file, or replace it "
        "(replace_mismatched=True)"
    )
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert read_file_info(path).dim == 2  # refused: untouched
    with (
        pytest.warns(FeaturesReplacedWarning) as caught_warnings,
        FeatureFileWriter(path, **want, replace_mismatched=True) as w,
    ):
        assert w.replaced == differences and w.completed_videos() == set()
    assert str(caught_warnings[0].message) == (
        f"{path}: replacing it and its 1 complete video: it holds different features "
        f"({'; '.join(differences)})"
    )
    info = read_file_info(path)
    assert (info.modality, info.dim, info.fps, info.storage_dtype) == ("rgb", 5, 25.0, "float16")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_writer_refuses_a_non_finite_vector_naming_video_and_frame(tmp_path, value):
    from epic_protocol.features import NonFiniteFeatureError

    path = tmp_path / "f.h5"
    features = np.ones((4, 3), np.float32)
    features[2, 1] = value
    with FeatureFileWriter(path, modality="rgb", dim=3, fps=30.0) as writer:
        writer.start_video("P01_01")
        with pytest.raises(NonFiniteFeatureError, match=r"video 'P01_01': frame 7: .*not finite"):
            writer.append("P01_01", [1, 4, 7, 9], features)
        writer.append("P01_01", [1, 4], features[:2])  # nothing of the refused rows was written
        writer.finish_video("P01_01")
    with h5py.File(path, "r") as handle:
        assert handle["P01_01"]["frames"][()].tolist() == [1, 4]
        assert handle["P01_01"].attrs["finite"]


def test_check_finite_reads_unchecked_videos_in_blocks(tmp_path):
    from epic_protocol.features import FeatureStore, NonFiniteFeatureError

    path = tmp_path / "f.h5"
    with FeatureFileWriter(path, modality="flow", dim=2, fps=30.0) as writer:
        writer.write_video("A", np.arange(1, 11), np.zeros((10, 2), np.float32))
    store = FeatureStore(path)
    store.check_finite("A")  # checked when written
    store.close()
    with h5py.File(path, "a") as handle:  # made elsewhere: no attribute, an inf at row 7
        del handle["A"].attrs["finite"]
        handle["A"]["features"][7, 0] = np.inf
    for rows_per_read in (1, 3, 7, 8, None):  # the bad row at every place of a block
        store = FeatureStore(path)
        with pytest.raises(NonFiniteFeatureError, match=r"video 'A': frame 8: the flow") as e:
            store.check_finite("A", rows_per_read=rows_per_read)
        assert (e.value.video, e.value.frame) == ("A", 8)
        store.close()
