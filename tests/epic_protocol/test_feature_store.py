from __future__ import annotations

import pickle
import warnings

import h5py
import numpy as np
import pytest

from epic_protocol.features import (
    NUM_FRAMES,
    BeyondEndWarning,
    FeatureFileAccessError,
    FeatureFileError,
    FeatureFileWriter,
    FeatureStore,
    MissingFeaturesError,
)


@pytest.mark.parametrize(("in_memory", "max_gap_rows"), [(False, 128), (False, 0), (True, 0)])
def test_sparse_lookup_returns_latest_stored_frame(feature_file, in_memory, max_gap_rows):
    path = feature_file(videos={"P01_01": 20, "P01_02": 5}, dim=4, every=5)  # 1, 6, 11, 16
    store = FeatureStore(path, in_memory=in_memory)
    store.max_gap_rows = max_gap_rows  # 0 reads every run of consecutive rows apart
    # 17..20 are a sparse gap inside the video (20 frames long): they read frame 16.
    rows = store.lookup("P01_01", np.array([1, 5, 6, 7, 16, 20, 6]))
    assert rows[:, 0].tolist() == [1, 1, 6, 6, 16, 16, 6]
    assert store.lookup("P01_02", np.array([3]))[0, 1] == 1
    assert rows.dtype == np.float32 and rows.shape == (7, 4)
    assert sorted(store.videos()) == ["P01_01", "P01_02"]


def test_clear_errors(feature_file, tmp_path):
    path = feature_file(videos={"P01_01": 20}, dim=4, every=5)
    store = FeatureStore(path)
    with pytest.raises(MissingFeaturesError, match=r"video 'P09_09' is not in .*rgb.h5"):
        store.lookup("P09_09", np.array([1]))
    sparse = feature_file(name="late.h5", videos={"P01_01": 0}, dim=4)
    with FeatureFileWriter(sparse, modality="rgb", dim=4, fps=30.0) as writer:
        writer.write_video("P02_01", np.array([10, 20]), np.zeros((2, 4)))
        writer.start_video("P03_01")  # interrupted
    with pytest.raises(
        MissingFeaturesError, match=r"frame 3 of video 'P02_01' .*first stored frame: 10"
    ):
        FeatureStore(sparse).lookup("P02_01", np.array([12, 3]))
    with pytest.raises(MissingFeaturesError, match="P03_01.*incomplete"):
        FeatureStore(sparse).lookup("P03_01", np.array([1]))
    with pytest.raises(FeatureFileError, match="4-d but the model expects 1024-d"):
        FeatureStore(path, expected_dim=1024)
    with pytest.raises(FeatureFileError, match="at 30.0 fps but sampling uses 50.0"):
        FeatureStore(path, expected_fps=50.0)


def test_store_pickles_without_handle(feature_file):
    store = FeatureStore(feature_file(videos={"v": 3}, dim=2))
    store.lookup("v", np.array([2]))
    clone = pickle.loads(pickle.dumps(store))
    assert clone._handle is None
    assert clone.lookup("v", np.array([3]))[0, 0] == 3


def test_a_file_locked_by_another_process_names_the_file_and_the_way_out(feature_file):
    import os
    import subprocess
    import sys

    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5_USE_FILE_LOCKING=FALSE in this environment: files are never locked")
    path = feature_file(videos={"P01_01": 5}, dim=2)
    store = FeatureStore(path)  # metadata read before the writer appears
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, h5py; f = h5py.File(sys.argv[1], 'a'); print('open', flush=True);"
            " time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"},
    )
    try:
        assert writer.stdout.readline().strip() == "open"
        message = rf"{path}: locked by another process.*HDF5_USE_FILE_LOCKING=FALSE"
        # The environment's error (exit 1 as a SetupError), not a bad file (a DataError).
        with pytest.raises(FeatureFileAccessError, match=message):
            FeatureStore(path)
        with pytest.raises(FeatureFileAccessError, match=message):
            store.lookup("P01_01", np.array([1]))
    finally:
        writer.kill()
        writer.wait()


def test_frame_past_the_recorded_end_is_an_error_even_in_a_sparse_file(feature_file):
    path = feature_file(videos={"P01_01": 20}, dim=4, every=5)  # stores 1, 6, 11, 16 of 20
    store = FeatureStore(path)
    assert store.video_end("P01_01") == (20, 16)
    assert store.lookup("P01_01", np.array([18, 20]))[:, 0].tolist() == [16, 16]
    with pytest.raises(MissingFeaturesError) as caught:
        store.lookup("P01_01", np.array([5, 21]))
    message = str(caught.value)
    assert str(path) in message and "frame 21 of video 'P01_01'" in message
    assert "last stored frame 16" in message and "20 frames" in message


def test_without_a_recorded_length_the_last_stored_frame_is_the_end(feature_file):
    path = feature_file(videos={"P01_01": 20}, dim=4, every=5, record_length=False)
    store = FeatureStore(path)
    assert store.video_end("P01_01") == (16, 16)
    assert store.lookup("P01_01", np.array([16]))[0, 0] == 16
    with pytest.raises(
        MissingFeaturesError, match=r"frame 17 of video 'P01_01'.*last stored frame 16"
    ):
        store.lookup("P01_01", np.array([17]))


def test_clamp_reads_the_last_stored_frame_and_warns_once_per_video(feature_file):
    path = feature_file(videos={"P01_01": 20, "P01_02": 10}, dim=4, every=5)
    store = FeatureStore(path, beyond_end="clamp")
    with pytest.warns(BeyondEndWarning, match=r"frame 30 of video 'P01_01'.*last stored frame 16"):
        assert store.lookup("P01_01", np.array([30, 2]))[:, 0].tolist() == [16, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second lookup of the same video stays silent
        assert store.lookup("P01_01", np.array([99]))[0, 0] == 16
    with pytest.warns(BeyondEndWarning, match="P01_02"):
        assert store.lookup("P01_02", np.array([11]))[0, 0] == 6
    with pytest.raises(ValueError, match="beyond_end must be one of"):
        FeatureStore(path, beyond_end="wrap")


def test_writer_records_the_decoded_length(tmp_path):
    path = tmp_path / "rgb.h5"
    with FeatureFileWriter(path, modality="rgb", dim=2, fps=30.0) as writer:
        writer.write_video("v", np.array([3, 9]), np.zeros((2, 2)), num_frames=12)
        writer.start_video("w")
        writer.append("w", np.array([5]), np.zeros((1, 2)))
        with pytest.raises(
            FeatureFileError, match=r"'w': num_frames=4 is below the last stored frame 5"
        ):
            writer.finish_video("w", num_frames=4)
    with h5py.File(path, "r") as handle:
        assert int(handle["v"].attrs[NUM_FRAMES]) == 12
        assert NUM_FRAMES not in handle["w"].attrs


@pytest.mark.parametrize("max_gap_rows", [128, 0, 3])
@pytest.mark.parametrize("in_memory", [False, True])
def test_batched_lookup_equals_one_lookup_per_request(tmp_path, in_memory, max_gap_rows):
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.h5"
    stored = {}
    with FeatureFileWriter(path, modality="rgb", dim=6, fps=30.0, chunk_rows=8) as writer:
        for video, count in (("P01_01", 300), ("P01_02", 40)):
            frames = np.sort(rng.choice(np.arange(1, 1000), count, replace=False))
            stored[video] = frames
            writer.write_video(video, frames, rng.standard_normal((count, 6)))
    store = FeatureStore(path, in_memory=in_memory)
    store.max_gap_rows = max_gap_rows
    requests = []
    for _ in range(25):
        video = str(rng.choice(list(stored)))
        # Within the stored range (frames past the last stored one are an error).
        start = int(rng.integers(stored[video][0], stored[video][-1] - 120))
        requests.append((video, np.sort(rng.integers(start, start + 120, 14))))
    batched = store.lookup_batch(requests)
    single = FeatureStore(path)  # a fresh store, one read per request
    for (video, frames), rows in zip(requests, batched, strict=True):
        assert rows.dtype == np.float32 and rows.shape == (14, 6)
        np.testing.assert_array_equal(rows, single.lookup(video, frames))


def test_float16_storage_halves_the_data_and_reads_back_float32(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((500, 64)).astype(np.float32)
    frames = np.arange(1, 501)
    paths = {}
    for dtype in ("float32", "float16"):
        paths[dtype] = tmp_path / f"{dtype}.h5"
        with FeatureFileWriter(
            paths[dtype], modality="rgb", dim=64, fps=30.0, dtype=dtype, chunk_rows=100
        ) as w:
            w.write_video("P01_01", frames, values)
    half = FeatureStore(paths["float16"])
    assert half.info.storage_dtype == "float16"
    assert FeatureStore(paths["float32"]).info.storage_dtype == "float32"
    for in_memory in (False, True):
        rows = FeatureStore(paths["float16"], in_memory=in_memory).lookup("P01_01", frames)
        assert rows.dtype == np.float32
        # float16 keeps 11 significant bits: relative error <= 2**-11.
        np.testing.assert_allclose(rows, values, rtol=2**-11, atol=1e-7)
    sizes = {}
    for dtype, path in paths.items():
        with h5py.File(path) as handle:
            assert handle["P01_01/features"].dtype == np.dtype(dtype)
            sizes[dtype] = handle["P01_01/features"].id.get_storage_size()
    assert sizes["float16"] * 2 == sizes["float32"] == 500 * 64 * 4
    # Reopening with another dtype, and values beyond float16's range, are refused.
    with pytest.raises(FeatureFileError, match="storage dtype"):
        FeatureFileWriter(paths["float16"], modality="rgb", dim=64, fps=30.0)
    writer = FeatureFileWriter(paths["float16"], modality="rgb", dim=64, fps=30.0, dtype="float16")
    with writer, pytest.raises(FeatureFileError, match="beyond float16's range"):
        writer.write_video("P01_02", [1], np.full((1, 64), 7e4))
    with pytest.raises(FeatureFileError, match="dtype must be"):
        FeatureFileWriter(tmp_path / "x.h5", modality="rgb", dim=4, fps=30.0, dtype="int8")
