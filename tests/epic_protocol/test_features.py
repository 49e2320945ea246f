from __future__ import annotations

import h5py
import numpy as np
import pytest

from epic_protocol.features import (
    COMPLETE,
    FeatureFileError,
    FeatureFileWriter,
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
    with pytest.raises(FeatureFileError, match="dim is 2, not 5"):
        FeatureFileWriter(path, modality="flow", dim=5, fps=30.0)
    plain = tmp_path / "plain.h5"
    h5py.File(plain, "w").close()
    with pytest.raises(FeatureFileError, match="not a rulstm-features file"):
        read_file_info(plain)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeatureFileError, match="junk.h5: not a readable HDF5"):
        read_file_info(tmp_path / "junk.h5")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        read_file_info(tmp_path / "nothing.h5")
