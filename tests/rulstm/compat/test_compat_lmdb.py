"""LMDB -> HDF5 conversion: round trip, ordering, resuming, and errors that name the key."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from epic_protocol.features import NUM_FRAMES, FeatureFileWriter, read_file_info
from rulstm.compat import LMDBConversionError, convert_lmdb
from rulstm.compat.lmdb_features import ReleasedSizeWarning

pytest.importorskip("lmdb")

DIM = 4


def _features(videos: dict[str, list[int]], *, padded: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        (f"{video}_frame_{frame:010d}.jpg" if padded else f"{video}_frame_{frame}.jpg"): rng.normal(
            size=DIM
        ).astype(np.float32)
        for video, frames in videos.items()
        for frame in frames
    }


# P01_1 and P01_10 share a prefix: their keys must still not interleave.
VIDEOS = {"P01_1": [1, 2, 3, 7], "P01_10": [5, 6], "P02_03": list(range(1, 11))}


def _check_round_trip(output: Path, entries: dict[str, np.ndarray]) -> None:
    with h5py.File(output, "r") as handle:
        assert sorted(handle) == sorted(VIDEOS)
        for video, frames in VIDEOS.items():
            group = handle[video]
            assert group.attrs["complete"]
            assert group["frames"][:].tolist() == frames
            for row, frame in enumerate(frames):
                np.testing.assert_array_equal(
                    group["features"][row], entries[f"{video}_frame_{frame:010d}.jpg"]
                )


def test_round_trip(ref, tmp_path: Path):
    entries = _features(VIDEOS)
    database = ref.write_lmdb(tmp_path / "rgb_lmdb", entries)
    summary = convert_lmdb(
        database, tmp_path / "feat.h5", modality="feat", chunk_rows=3, progress=False
    )
    assert (summary.entries, summary.rows, summary.dim) == (16, 16, DIM)
    assert sorted(summary.videos_written) == sorted(VIDEOS)
    _check_round_trip(tmp_path / "feat.h5", entries)
    info = read_file_info(tmp_path / "feat.h5")
    assert (info.modality, info.dim, info.fps) == ("feat", DIM, 30.0)
    assert info.provenance["source"] == "rulstm-lmdb"


def test_unpadded_keys_are_sorted_numerically(ref, tmp_path: Path):
    entries = _features(VIDEOS, padded=False)  # frame_10 sorts before frame_2 as text
    database = ref.write_lmdb(tmp_path / "db", entries)
    convert_lmdb(database, tmp_path / "feat.h5", modality="feat", progress=False)
    with h5py.File(tmp_path / "feat.h5", "r") as handle:
        assert handle["P02_03/frames"][:].tolist() == list(range(1, 11))
        np.testing.assert_array_equal(handle["P02_03/features"][9], entries["P02_03_frame_10.jpg"])


def test_resumes_after_an_interruption(ref, tmp_path: Path, monkeypatch):
    entries = _features(VIDEOS)
    database = ref.write_lmdb(tmp_path / "db", entries)
    output = tmp_path / "feat.h5"
    finish = FeatureFileWriter.finish_video
    finished: list[str] = []

    def crash_on_second_video(self, video, **kwargs):
        if finished:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a video
        finished.append(video)
        finish(self, video, **kwargs)

    monkeypatch.setattr(FeatureFileWriter, "finish_video", crash_on_second_video)
    with pytest.raises(KeyboardInterrupt):
        convert_lmdb(database, output, modality="feat", progress=False)
    monkeypatch.setattr(FeatureFileWriter, "finish_video", finish)

    summary = convert_lmdb(database, output, modality="feat", progress=False)
    assert summary.videos_skipped == finished  # the complete video is not rewritten
    assert len(summary.videos_written) == 2 and summary.rows == 16
    _check_round_trip(output, entries)


def test_bad_key_is_named(ref, tmp_path: Path):
    entries = _features({"P01_01": [1, 2]})
    entries["P01_01_frame_0000000003.jpg"] = np.zeros(DIM, np.float32)
    entries["P01_01_thumbnail.png"] = np.zeros(DIM, np.float32)
    database = ref.write_lmdb(tmp_path / "db", entries)
    with pytest.raises(LMDBConversionError, match="'P01_01_thumbnail.png' does not match"):
        convert_lmdb(database, tmp_path / "feat.h5", modality="feat", progress=False)


def test_wrong_value_size_is_named(ref, tmp_path: Path):
    entries = _features({"P01_01": [1, 2, 3]})
    entries["P01_01_frame_0000000002.jpg"] = np.zeros(DIM + 1, np.float32)
    database = ref.write_lmdb(tmp_path / "db", entries)
    with pytest.raises(
        LMDBConversionError, match=r"'P01_01_frame_0000000002.jpg': value has 20 bytes"
    ):
        convert_lmdb(database, tmp_path / "feat.h5", modality="feat", progress=False)


def test_other_sizes_than_the_released_ones_only_warn(ref, tmp_path: Path):
    database = ref.write_lmdb(tmp_path / "db", _features({"P01_01": [1, 4]}))
    with pytest.warns(ReleasedSizeWarning, match="rgb features are 1024-d .* holds 4-d"):
        summary = convert_lmdb(database, tmp_path / "rgb.h5", modality="rgb", progress=False)
    assert (summary.dim, summary.rows) == (4, 2)
    assert read_file_info(tmp_path / "rgb.h5").dim == 4
    with h5py.File(tmp_path / "rgb.h5", "r") as handle:
        assert int(handle["P01_01"].attrs[NUM_FRAMES]) == 4  # the last key is the video's end
    with pytest.raises(LMDBConversionError, match="dim=8 was asked"):
        convert_lmdb(database, tmp_path / "x.h5", modality="feat", dim=8, progress=False)


def test_duplicate_frames_and_frame_zero(ref, tmp_path: Path):
    entries = _features({"P01_01": [1, 2]})
    entries["P01_01_frame_1.jpg"] = np.zeros(DIM, np.float32)
    database = ref.write_lmdb(tmp_path / "db", entries)
    with pytest.raises(LMDBConversionError, match="are the same frame of video 'P01_01'"):
        convert_lmdb(database, tmp_path / "a.h5", modality="feat", progress=False)
    database = ref.write_lmdb(tmp_path / "db0", _features({"P01_01": [0, 1]}))
    with pytest.raises(LMDBConversionError, match="1-based"):
        convert_lmdb(database, tmp_path / "b.h5", modality="feat", progress=False)


def test_row_count_mismatch_is_reported(ref, tmp_path: Path):
    database = ref.write_lmdb(tmp_path / "db", _features({"P01_01": [1, 2, 3]}))
    output = tmp_path / "feat.h5"
    with FeatureFileWriter(output, modality="feat", dim=DIM, fps=30.0) as writer:
        # A different database's P01_01, already complete: it would be skipped.
        writer.write_video("P01_01", np.array([1, 2]), np.zeros((2, DIM)))
    with pytest.raises(LMDBConversionError, match="2 rows written for 3 LMDB entries"):
        convert_lmdb(database, output, modality="feat", progress=False)


def test_missing_lmdb_package_has_a_clear_message(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` fail
    (tmp_path / "db").mkdir()
    with pytest.raises(ImportError, match=r'pip install "rulstm-lightning\[lmdb\]"'):
        convert_lmdb(tmp_path / "db", tmp_path / "x.h5", modality="rgb")


def test_missing_database(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        convert_lmdb(tmp_path / "nowhere", tmp_path / "x.h5", modality="rgb")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_vector_is_refused_naming_its_key(ref, tmp_path: Path, value: float):
    """It was stored with exit 0; training then stopped on NaN scores naming no file."""
    entries = _features({"P01_01": [1, 2], "P01_02": [1, 2, 3]})
    entries["P01_02_frame_0000000002.jpg"][1] = value
    database = ref.write_lmdb(tmp_path / "db", entries)
    output = tmp_path / "feat.h5"
    with pytest.raises(
        LMDBConversionError,
        match=r"LMDB key 'P01_02_frame_0000000002.jpg': the feature vector is not finite "
        r"\((NaN|inf) in 1 of 4 values\)",
    ):
        convert_lmdb(database, output, modality="feat", progress=False)
    with h5py.File(output, "r") as handle:  # the video before it is kept, this one is not
        complete = {video for video in handle if handle[video].attrs["complete"]}
    assert complete == {"P01_01"}
