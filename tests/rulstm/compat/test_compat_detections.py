"""rulstm-import detections: the authors' per-frame detection arrays -> obj.h5, summed per class
in float32 in the listed order, resumable, with errors naming the file and the frame."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from epic_protocol.features import FeatureFileWriter, FeaturesReplacedWarning, read_file_info
from rulstm.compat.cli import main
from rulstm.compat.detections import (
    DetectionImportError,
    VideoIdWarning,
    detection_features,
    import_detections,
    load_detection_file,
)

BIG = float(2**24)  # float32 spacing is 2 above it: 2**24 + 1 rounds back to 2**24 (ties to even)


def _row(cls: int, score: float) -> list[float]:
    return [cls, 10.0, 20.0, 30.0, 40.0, score]


def _save(path: Path, frames: list[list[list[float]] | np.ndarray]) -> Path:
    """The authors' format: a 1-D object array of per-frame float64 [N, 6] arrays."""
    entries = np.empty(len(frames), dtype=object)
    for index, rows in enumerate(frames):
        entries[index] = np.asarray(rows, dtype=np.float64)
    np.save(path, entries, allow_pickle=True)
    return path


def _hand_case(tmp_path: Path) -> Path:
    return _save(
        tmp_path / "P01_01.npy",
        [
            [_row(1, 0.5), _row(3, 0.25), _row(1, 0.125)],  # frame 1
            np.zeros((0,)),  # frame 2: no detection, stored as an empty (0,) array
            [_row(2, BIG), _row(2, 1.0), _row(2, 1.0)],  # frame 3: big first
            [_row(2, 1.0), _row(2, 1.0), _row(2, BIG)],  # frame 4: big last
            [_row(0, 0.01)],  # frame 5: below a 0.05 threshold
        ],
    )


def test_hand_computed_sums_accumulate_in_float32_in_listed_order(tmp_path):
    frames = load_detection_file(_hand_case(tmp_path))
    features = detection_features(frames, num_classes=4)
    expected = np.zeros((5, 4), np.float32)
    expected[0, 1], expected[0, 3] = 0.625, 0.25
    # 2**24 + 1 + 1 added one at a time in float32 stays 2**24; the same scores in the other
    # order reach 2**24 + 2 (a float64 sum would give 2**24 + 2 for both).
    expected[2, 2] = BIG
    expected[3, 2] = BIG + 2
    expected[4, 0] = np.float32(0.01)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, expected)
    # A threshold drops the low-scoring detection only.
    thresholded = detection_features(frames, num_classes=4, threshold=0.05)
    expected[4, 0] = 0.0
    np.testing.assert_array_equal(thresholded, expected)


def test_each_addition_is_rounded_to_float32_like_the_sequential_loop(tmp_path):
    """Against an independent restatement of the authors' loop, on many random detections
    per class (double rounding: the float64 addition then the float32 store)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(30):
        count = int(rng.integers(0, 40))
        rows = np.zeros((count, 6))
        rows[:, 0] = rng.integers(0, 5, count)
        rows[:, 5] = rng.random(count) * 10.0 ** rng.integers(-8, 8, count)
        frames.append(rows)
    reference = np.zeros((len(frames), 5), np.float32)
    for index, rows in enumerate(frames):
        feature = np.zeros(5, np.float32)
        for row in rows:
            feature[int(row[0])] += row[5]
        reference[index] = feature
    np.testing.assert_array_equal(detection_features(frames, num_classes=5), reference)


def test_import_writes_obj_h5_and_resumes(tmp_path):
    source = _hand_case(tmp_path)
    out = tmp_path / "features" / "obj.h5"
    summary = import_detections(source, out, num_classes=4, progress=False)
    assert (summary.frames, summary.rows, summary.detections) == (5, 5, 10)
    assert summary.videos_written == ["P01_01"]
    info = read_file_info(out)
    assert (info.modality, info.dim, info.fps) == ("obj", 4, 30.0)
    with h5py.File(out, "r") as handle:
        assert handle["P01_01"].attrs["complete"]
        assert handle["P01_01/frames"][:].tolist() == [1, 2, 3, 4, 5]  # entry i = frame i + 1
        assert handle["P01_01/features"][2, 2] == BIG
    # A rerun skips the complete video and checks its rows.
    again = import_detections(source, out, num_classes=4, progress=False)
    assert again.videos_skipped == ["P01_01"] and again.videos_written == []
    assert again.rows == 5
    # An interrupted video (not marked complete) is redone.
    with h5py.File(out, "a") as handle:
        handle["P01_01"].attrs["complete"] = False
    redone = import_detections(source, out, num_classes=4, progress=False)
    assert redone.videos_written == ["P01_01"]


def test_folder_import_and_the_command_line(tmp_path, capsys):
    folder = tmp_path / "detections"
    (folder / "sub").mkdir(parents=True)
    _save(folder / "P01_01.npy", [[_row(0, 0.5)], [_row(1, 0.5)]])
    _save(folder / "sub" / "P02_03.npy", [[_row(2, 0.75)]])
    out = tmp_path / "obj.h5"
    code = main(
        ["detections", "--npy", str(folder), "--out", str(out), "--num-classes", "3",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "3 rows for 3 frame entries; 2 videos written" in capsys.readouterr().out
    with h5py.File(out, "r") as handle:
        assert sorted(handle) == ["P01_01", "P02_03"]
        np.testing.assert_array_equal(handle["P02_03/features"][:], [[0, 0, 0.75]])
    # --video names a single file's video.
    single = tmp_path / "single.h5"
    assert main(["detections", "--npy", str(folder / "P01_01.npy"), "--out", str(single),
                 "--num-classes", "3", "--video", "P09_09", "--no-progress"]) == 0  # fmt: skip
    with h5py.File(single, "r") as handle:
        assert list(handle) == ["P09_09"]


def test_malformed_files_name_the_file_and_frame(tmp_path, capsys):
    bad_shape = _save(tmp_path / "bad_shape.npy", [[_row(0, 0.5)], [[1.0, 2.0, 3.0]]])
    with pytest.raises(DetectionImportError, match=r"bad_shape.npy: frame 2: expected rows"):
        load_detection_file(bad_shape)
    bad_class = _save(tmp_path / "bad_class.npy", [[_row(0, 0.5)], [], [_row(7, 0.5)]])
    out = tmp_path / "obj.h5"
    assert main(["detections", "--npy", str(bad_class), "--out", str(out), "--num-classes",
                 "4", "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "bad_class.npy: frame 3: class 7 is not an integer in [0, 4)" in err
    assert not out.exists()  # checked before the output is created: nothing half-written
    fractional = _save(tmp_path / "frac.npy", [[_row(0, 0.5)]])
    frames = load_detection_file(fractional)
    frames[0][0, 0] = 1.5
    with pytest.raises(DetectionImportError, match="frame 1: class 1.5"):
        detection_features(frames, num_classes=4, source="frac.npy")
    not_npy = tmp_path / "text.npy"
    not_npy.write_text("hello")
    with pytest.raises(DetectionImportError, match="text.npy: not a readable .npy file"):
        load_detection_file(not_npy)
    two_d = tmp_path / "matrix.npy"
    np.save(two_d, np.zeros((3, 6)))
    with pytest.raises(DetectionImportError, match="matrix.npy: expected a 1-D array"):
        load_detection_file(two_d)
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        import_detections(tmp_path / "absent.npy", out, progress=False)
    with pytest.raises(DetectionImportError, match=r"is a folder; --out names the \.h5 file"):
        import_detections(fractional, tmp_path, progress=False)
    with pytest.raises(DetectionImportError, match=r"frac.npy: invalid video id 'a/b'"):
        import_detections(fractional, out, video="a/b", progress=False)
    with pytest.raises(ValueError, match="fps must be a positive number, got 0"):
        import_detections(fractional, out, fps=0.0, progress=False)
    assert not out.exists()


def _cli(npy: Path, out: Path, *extra: str) -> int:
    return main(["detections", "--npy", str(npy), "--out", str(out), *extra, "--no-progress"])


def test_a_wrong_num_classes_leaves_no_output_and_the_rerun_works(tmp_path, capsys):
    """The user's case: class 56 with --num-classes 20 fails; the corrected rerun succeeds."""
    frames: list = [[_row(1, 0.5)] for _ in range(60)]
    frames[49] = [_row(56, 0.75), _row(3, 0.25)]
    source = _save(tmp_path / "P01_11.npy", frames)
    out = tmp_path / "o.h5"
    assert _cli(source, out, "--num-classes", "20") == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"rulstm-import: error: {source}: frame 50: class 56 is not an integer in [0, 20) "
        "(--num-classes 20)"
    )
    assert not out.exists()
    assert _cli(source, out, "--num-classes", "352") == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.strip() == (
        f"{out}: obj 352-d, 60 rows for 60 frame entries; 1 video written (P01_11; 61 "
        "detections), 0 already complete"
    )
    with h5py.File(out, "r") as handle:
        assert handle["P01_11/features"][49, 56] == np.float32(0.75)


def test_an_output_without_complete_videos_is_recreated(tmp_path, capsys):
    """A file left behind by a failed run (attributes, an interrupted video, no complete
    one) is recreated with the new attributes, with or without --overwrite."""
    source = _save(tmp_path / "P01_01.npy", [[_row(3, 0.5)], [_row(1, 0.25)]])
    out = tmp_path / "o.h5"
    for extra in ((), ("--overwrite",)):
        out.unlink(missing_ok=True)
        with FeatureFileWriter(out, modality="obj", dim=20, fps=25.0) as w:
            w.start_video("P01_01")  # interrupted
        assert _cli(source, out, "--num-classes", "352", *extra) == 0
        captured = capsys.readouterr()
        assert captured.err == ""  # no warning: nothing of value was lost
        assert captured.out.strip().endswith(
            "1 video written (P01_01; 2 detections), 0 already complete; recreated the file, "
            "which held other features (dim is 20, not 352; fps is 25.0, not 30.0)"
        )
        info = read_file_info(out)
        assert (info.dim, info.fps) == (352, 30.0)
    summary = import_detections(source, out, progress=False)  # nothing to recreate now
    assert summary.replaced == [] and summary.videos_skipped == ["P01_01"]


def test_complete_videos_of_other_features_need_overwrite(tmp_path, capsys):
    source = _save(tmp_path / "P01_01.npy", [[_row(3, 0.5)], [_row(1, 0.25)]])
    out = tmp_path / "obj.h5"
    assert _cli(source, out, "--num-classes", "4") == 0
    capsys.readouterr()
    stamp = out.stat().st_mtime_ns
    assert _cli(source, out, "--num-classes", "352") == 1
    assert capsys.readouterr().err.strip() == (
        f"rulstm-import: error: {out} already holds 1 complete video of different features: "
        "dim is 4, not 352. Delete the file, choose another --out path, or pass --overwrite "
        "to replace it"
    )
    assert out.stat().st_mtime_ns == stamp and read_file_info(out).dim == 4  # untouched
    assert _cli(source, out, "--num-classes", "352", "--overwrite") == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"rulstm-import: warning: {out}: replacing it and its 1 complete video: it holds "
        "different features (dim is 4, not 352)"
    )
    assert "1 video written (P01_01; 2 detections)" in captured.out
    assert read_file_info(out).dim == 352
    # Likewise through the Python API, for another fps.
    with pytest.raises(DetectionImportError, match=r"fps is 30.0, not 25.0\. Delete the file"):
        import_detections(source, out, fps=25.0, progress=False)
    with pytest.warns(FeaturesReplacedWarning, match=r"obj.h5: replacing .* \(fps is 30.0"):
        summary = import_detections(source, out, fps=25.0, overwrite=True, progress=False)
    assert summary.replaced == ["fps is 30.0, not 25.0"] and summary.videos_written == ["P01_01"]


def test_a_file_name_that_is_not_an_epic_video_id_warns(tmp_path, capsys):
    sample = _save(tmp_path / "sample_obj.npy", [[_row(0, 0.5)]])
    out = tmp_path / "obj.h5"
    assert _cli(sample, out, "--num-classes", "3") == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"rulstm-import: warning: {sample}: storing its detections as video 'sample_obj' (the "
        "file name), which does not look like an EPIC-KITCHENS video id (P01_01, P01_101); "
        "pass --video ID to store them under the video's id"
    )
    assert "1 video written (sample_obj; 1 detections)" in captured.out
    with h5py.File(out, "r") as handle:
        assert list(handle) == ["sample_obj"]  # stored anyway: own footage may be named so
    # No warning with --video, for EPIC ids (EK55 and EK100), or for a folder.
    epic = [_save(tmp_path / f"{name}.npy", [[_row(0, 0.5)]]) for name in ("P01_01", "P01_101")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = import_detections(sample, out, num_classes=3, video="P30_05", progress=False)
        assert written.videos_written == ["P30_05"]
        for path in epic:
            written = import_detections(path, out, num_classes=3, progress=False)
            assert written.videos_written == [path.stem]
        summary = import_detections(tmp_path, tmp_path / "all.h5", progress=False)
    # More than three videos written: counted, not named.
    assert summary.videos_written == ["P01_01", "P01_101", "sample_obj"]
    assert "3 videos written (P01_01, P01_101, sample_obj; 3 detections)" in str(summary)
    _save(tmp_path / "P02_01.npy", [[_row(0, 0.5)]])
    summary = import_detections(tmp_path, tmp_path / "four.h5", progress=False)
    assert "; 4 videos written (4 detections), 0 already complete" in str(summary)
    with pytest.warns(VideoIdWarning, match="'sample_obj'"):
        import_detections(sample, tmp_path / "again.h5", progress=False)


def test_scores_summing_past_float32_are_refused_naming_file_and_frame(tmp_path, capsys):
    """Finite float64 scores whose float32 sum is infinite: no inf stored with exit 0."""
    folder = tmp_path / "detections"
    folder.mkdir()
    _save(folder / "P01_01.npy", [[_row(0, 0.5)]])
    _save(folder / "P01_02.npy", [[_row(0, 0.5)], [_row(1, 1e39)]])
    out = tmp_path / "obj.h5"
    assert _cli(folder, out, "--num-classes", "4") == 1
    err = capsys.readouterr().err
    assert "P01_02.npy: frame 2: the Obj feature vector is not finite (inf in 1 of 4" in err
    with h5py.File(out, "r") as handle:
        assert "P01_02" not in handle or not handle["P01_02"].attrs["complete"]


def test_a_full_disk_ends_with_one_line_naming_the_output(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: one error line and status 1, no h5py crash."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    folder = tmp_path / "detections"
    folder.mkdir()
    for video in ("P01_01", "P01_02"):  # 2 x 1500 frames x 352 float32: 4.2 MB
        _save(folder / f"{video}.npy", [[_row(1, 0.5)]] * 1500)
    out = tmp_path / "obj.h5"

    def set_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write returns EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    repo = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-m", "rulstm.compat.cli", "detections", "--npy", str(folder),
         "--out", str(out), "--no-progress"],
        env=dict(os.environ, PYTHONPATH=str(repo)), capture_output=True, text=True,
        timeout=300, preexec_fn=set_limit,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr == f"rulstm-import: error: {out}: cannot write: File too large\n"
