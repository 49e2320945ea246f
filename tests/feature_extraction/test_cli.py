"""``rulstm-extract`` end to end on synthetic videos: layout, failures, reruns, sparse mode."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from epic_protocol.features import NUM_FRAMES, read_file_info
from epic_protocol.sampling import anticipation_frames
from feature_extraction.cli import main


@pytest.fixture
def videos(tmp_path: Path, make_video) -> Path:
    folder = tmp_path / "videos"
    make_video("videos/P01_01.mp4", num_frames=24, fps=30)
    make_video("videos/sub/P01_02.mkv", num_frames=40, fps=50)  # 0.8 s -> 24 frames at 30 fps
    (folder / "notes.txt").write_text("not a video")
    (folder / "thumb.jpg").write_bytes(b"\xff\xd8")
    return folder


def _extract(videos: Path, out: Path, *extra: str, config: Path, overrides: list[str]) -> int:
    return main(
        [
            "--videos",
            str(videos),
            "--out",
            str(out),
            "-c",
            str(config),
            "--progress",
            "false",
            *overrides,
            *extra,
        ]
    )


def _read(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with h5py.File(path, "r") as handle:
        return {
            video: (group["frames"][()], group["features"][()])
            for video, group in handle.items()
            if group.attrs["complete"]
        }


def test_extracts_every_modality_and_reports_a_corrupt_video(
    tmp_path: Path, videos: Path, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    out = tmp_path / "features"
    code = _extract(
        videos, out, "--obj.keep_detections", "true", config=tiny_config, overrides=tiny_overrides
    )
    printed = capsys.readouterr().out
    assert code == 1  # one video failed
    assert "2 done, 0 skipped, 1 failed" in printed and "broken" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "flow.h5",
        "obj.h5",
        "rgb.h5",
    ]  # staging cleaned
    for modality, dim in (("rgb", 512), ("flow", 512), ("obj", 8)):
        info = read_file_info(out / f"{modality}.h5")
        assert (info.modality, info.dim, info.fps) == (modality, dim, 30.0)
        stored = _read(out / f"{modality}.h5")
        assert sorted(stored) == ["P01_01", "P01_02"]
        for frames, features in stored.values():
            assert frames.tolist() == list(range(1, 25))
            assert features.shape == (24, dim) and np.isfinite(features).all()
        with h5py.File(out / f"{modality}.h5", "r") as handle:  # the decoded length
            assert [int(handle[v].attrs[NUM_FRAMES]) for v in sorted(stored)] == [24, 24]
    with h5py.File(out / "obj.h5", "r") as handle:
        detections = handle["P01_01/detections"]
        assert set(detections) == {"frame", "boxes", "labels", "scores"}
        assert "class_names" in read_file_info(out / "obj.h5").provenance


def test_rerun_skips_finished_videos_and_overwrite_redoes_them(
    tmp_path: Path, videos: Path, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    out = tmp_path / "features"
    both = ["--modalities", "rgb", "flow"]
    assert _extract(videos, out, *both, config=tiny_config, overrides=tiny_overrides) == 0
    first = {m: _read(out / f"{m}.h5") for m in ("rgb", "flow")}
    capsys.readouterr()
    assert _extract(videos, out, *both, config=tiny_config, overrides=tiny_overrides) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out
    assert (
        _extract(videos, out, *both, "--overwrite", config=tiny_config, overrides=tiny_overrides)
        == 0
    )
    assert "2 done, 0 skipped" in capsys.readouterr().out
    for modality, before in first.items():
        after = _read(out / f"{modality}.h5")
        for video in before:
            assert np.array_equal(before[video][0], after[video][0])
            np.testing.assert_allclose(before[video][1], after[video][1], rtol=1e-5, atol=1e-5)
    # Different settings in the same folder are refused rather than mixed.
    changed = ["--modalities", "rgb", "--rgb.seed", "7"]
    assert _extract(videos, out, *changed, config=tiny_config, overrides=tiny_overrides) == 1
    assert "different settings" in capsys.readouterr().err


def test_float16_storage_dtype(
    tmp_path: Path, videos: Path, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    from epic_protocol.features import FeatureStore

    rgb = ["--modalities", "rgb"]
    full, half = tmp_path / "fp32", tmp_path / "fp16"
    assert _extract(videos, full, *rgb, config=tiny_config, overrides=tiny_overrides) == 0
    assert (
        _extract(
            videos, half, *rgb, "--dtype", "float16", config=tiny_config, overrides=tiny_overrides
        )
        == 0
    )
    assert read_file_info(half / "rgb.h5").storage_dtype == "float16"
    reference, stored = _read(full / "rgb.h5"), _read(half / "rgb.h5")
    store = FeatureStore(half / "rgb.h5")
    for video, (frames, features) in reference.items():
        assert stored[video][1].dtype == np.float16
        rows = store.lookup(video, frames)
        assert rows.dtype == np.float32
        np.testing.assert_allclose(rows, features, rtol=2**-10, atol=1e-6)
    store.close()
    # A float32 rerun into the float16 folder is refused: the settings differ.
    capsys.readouterr()
    assert _extract(videos, half, *rgb, config=tiny_config, overrides=tiny_overrides) == 1
    assert "different settings" in capsys.readouterr().err


@pytest.mark.slow
def test_two_workers_interleave_videos_without_mixing_them(
    tmp_path: Path, videos: Path, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    both = ["--modalities", "rgb", "flow", "--batch_size", "4"]
    two_workers = [*tiny_overrides, "--num_workers", "2"]  # chunks of the 2 videos interleave
    assert _extract(videos, tmp_path / "two", *both, config=tiny_config, overrides=two_workers) == 0
    assert (
        _extract(videos, tmp_path / "none", *both, config=tiny_config, overrides=tiny_overrides)
        == 0
    )
    for modality in ("rgb", "flow"):
        interleaved, sequential = (_read(tmp_path / d / f"{modality}.h5") for d in ("two", "none"))
        assert sorted(interleaved) == sorted(sequential) == ["P01_01", "P01_02"]
        for video, (frames, features) in sequential.items():
            assert np.array_equal(interleaved[video][0], frames)
            np.testing.assert_array_equal(interleaved[video][1], features)


def test_sparse_mode_extracts_only_the_sampled_frames(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    folder = tmp_path / "videos"
    make_video("videos/P01_01.mp4", num_frames=150, fps=30)
    make_video("videos/P09_09.mp4", num_frames=10, fps=30)  # not annotated: skipped
    annotations = tmp_path / "training.csv"
    annotations.write_text("1,P01_01,120,140,0,0,0\n2,P01_01,60,70,1,1,1\n3,P99_01,50,60,0,0,0\n")
    sparse, dense = tmp_path / "sparse", tmp_path / "dense"
    arguments = ["--annotations", str(annotations), "--only-needed", "--modalities", "rgb", "flow"]
    assert _extract(folder, sparse, *arguments, config=tiny_config, overrides=tiny_overrides) == 0
    printed = capsys.readouterr().out
    assert "saved" in printed and "no annotated segments" in printed
    needed = sorted(set(anticipation_frames(120).tolist()) | set(anticipation_frames(60).tolist()))
    assert (
        _extract(
            folder,
            dense,
            "--modalities",
            "rgb",
            "flow",
            config=tiny_config,
            overrides=tiny_overrides,
        )
        == 0
    )
    for modality in ("rgb", "flow"):
        frames, features = _read(sparse / f"{modality}.h5")["P01_01"]
        assert frames.tolist() == needed
        dense_frames, dense_features = _read(dense / f"{modality}.h5")["P01_01"]
        # Same numbers as a dense run at those frames, bit for bit although the chunks differ
        # (fixed model batches): flow decoded its context frames.
        np.testing.assert_array_equal(features, dense_features[frames - 1])
        assert "P09_09" not in _read(sparse / f"{modality}.h5")
        with h5py.File(sparse / f"{modality}.h5", "r") as handle:
            # The video's length, not its last stored frame: frames in (max(needed), 150]
            # are a sparse gap, frames past 150 are past the end.
            assert int(handle["P01_01"].attrs[NUM_FRAMES]) == 150
    capsys.readouterr()
    # Reusing the folder: the same segments are skipped; new segments add their frames; a
    # dense run redoes the sparse video (a complete sparse video is not a complete video).
    assert _extract(folder, sparse, *arguments, config=tiny_config, overrides=tiny_overrides) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out
    annotations.write_text("4,P01_01,100,110,0,0,0\n")
    assert _extract(folder, sparse, *arguments, config=tiny_config, overrides=tiny_overrides) == 0
    assert "1 done" in capsys.readouterr().out
    frames, _ = _read(sparse / "rgb.h5")["P01_01"]
    assert frames.tolist() == sorted(set(needed) | set(anticipation_frames(100).tolist()))
    dense_again = ["--modalities", "rgb", "flow"]
    assert _extract(folder, sparse, *dense_again, config=tiny_config, overrides=tiny_overrides) == 0
    assert _read(sparse / "flow.h5")["P01_01"][0].tolist() == list(range(1, 151))


def test_only_needed_reads_several_annotation_files(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    folder = tmp_path / "videos"
    make_video("videos/P01_01.mp4", num_frames=150, fps=30)
    training, validation = tmp_path / "training.csv", tmp_path / "validation.csv"
    training.write_text("1,P01_01,120,140,0,0,0\n")
    validation.write_text("2,P01_01,60,70,1,1,1\n")
    out = tmp_path / "sparse"
    arguments = ["--annotations", str(training), str(validation), "--only-needed"]
    arguments += ["--modalities", "rgb"]
    assert _extract(folder, out, *arguments, config=tiny_config, overrides=tiny_overrides) == 0
    needed = sorted(set(anticipation_frames(120).tolist()) | set(anticipation_frames(60).tolist()))
    assert _read(out / "rgb.h5")["P01_01"][0].tolist() == needed
    # RGB only: the summary does not speak of flow frames.
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "sparse extraction" in x]
    assert "flow" not in line and "not extracted)" in line


def test_unwritable_output_is_a_clear_error(
    tmp_path: Path, videos: Path, tiny_config: Path, capsys
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = main(["--videos", str(videos), "--out", str(blocker / "out"), "-c", str(tiny_config)])
    assert code == 1  # an environment error, not a usage error (status 2)
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("rulstm-extract: error: cannot write to the")


def test_raft_flow_gives_the_same_stacks_sparse_and_dense(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    make_video("videos/clip.mp4", num_frames=16, fps=30, width=128, height=96, speed=2)
    annotations = tmp_path / "segments.csv"
    annotations.write_text("1,clip,14,16,0,0,0\n")  # anticipation frames are clamped to 1..13
    raft = [
        "--modalities", "flow", "--flow.method", "raft_small", "--flow.raft_weights", "null",
        "--flow.raft_iterations", "2", "--decode.width", "128", "--decode.height", "96",
        "--batch_size", "4",
    ]  # fmt: skip
    dense, sparse = tmp_path / "dense", tmp_path / "sparse"
    assert (
        _extract(tmp_path / "videos", dense, *raft, config=tiny_config, overrides=tiny_overrides)
        == 0
    )
    arguments = [*raft, "--annotations", str(annotations), "--only-needed"]
    assert (
        _extract(
            tmp_path / "videos", sparse, *arguments, config=tiny_config, overrides=tiny_overrides
        )
        == 0
    )
    frames, features = _read(sparse / "flow.h5")["clip"]
    dense_frames, dense_features = _read(dense / "flow.h5")["clip"]
    assert dense_frames.tolist() == list(range(1, 17))
    assert frames.tolist() == sorted(set(anticipation_frames(14).tolist()))
    assert not np.allclose(dense_features[1], dense_features[8])  # the stacks do differ
    np.testing.assert_allclose(features, dense_features[frames - 1], rtol=1e-4, atol=1e-5)


def test_two_runs_with_two_workers_give_bit_identical_features(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    folder = tmp_path / "videos"
    for index, frames in enumerate((9, 17, 25)):  # chunks of 8 with 1-frame remainders
        make_video(f"videos/P0{index}_01.mp4", num_frames=frames, fps=30, speed=index + 1)
    two_workers = [*tiny_overrides, "--num_workers", "2", "--threads", "2"]
    runs = []
    for run in ("first", "second"):
        assert _extract(folder, tmp_path / run, config=tiny_config, overrides=two_workers) == 0
        runs.append({m: _read(tmp_path / run / f"{m}.h5") for m in ("rgb", "flow", "obj")})
    for modality, first in runs[0].items():
        assert sorted(first) == ["P00_01", "P01_01", "P02_01"]
        for video, (frames, features) in first.items():
            np.testing.assert_array_equal(runs[1][modality][video][0], frames)
            np.testing.assert_array_equal(runs[1][modality][video][1], features)


def test_a_frame_gets_the_same_features_in_any_chunk(tiny_config: Path, tiny_overrides) -> None:
    import torch

    from feature_extraction.config import load_config
    from feature_extraction.loop import ExtractionModule
    from feature_extraction.models import FeatureComputer, build_models
    from feature_extraction.pipeline import Chunk

    config = load_config(tiny_config, [*tiny_overrides, "--modalities", "rgb"])
    computer = FeatureComputer.from_models(build_models(config, device=torch.device("cpu")))
    module = ExtractionModule(computer=computer, batch_size=config.batch_size)
    images = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)
    )

    def features(rows: slice) -> np.ndarray:
        frames = torch.arange(1, 10)[rows]
        chunk = Chunk(
            video="v",
            modalities=("rgb",),
            frames=frames,
            keep=torch.ones(len(frames), dtype=torch.bool),
            images=images[rows],
            flow=torch.zeros(0),
            last=False,
        )
        return module.predict_step(chunk, 0)["rgb"]

    # Frame 9 alone (the last chunk of a 25-frame video in batches of 8), with one other
    # frame, and in a full chunk: kernels for a batch of 1 differ in the last bits (measured
    # 1.5e-6 on this project's CI CPU) unless the model batch has a fixed size.
    whole = features(slice(0, 9))
    np.testing.assert_array_equal(features(slice(8, 9))[0], whole[8])
    np.testing.assert_array_equal(features(slice(7, 9)), whole[7:9])


def test_a_truncated_video_fails_unless_allowed(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    from tests.feature_extraction.conftest import cut_after_packets

    folder = tmp_path / "videos"
    make_video("videos/P01_01.mp4", num_frames=12, fps=30)
    full = make_video("P01_02.mp4", num_frames=60, fps=30, faststart=True)
    cut_after_packets(full, folder / "P01_02.mp4", packets=36)  # 2 s announced, 1.2 s there
    modalities = ["--modalities", "rgb", "flow"]
    out = tmp_path / "strict"
    assert _extract(folder, out, *modalities, config=tiny_config, overrides=tiny_overrides) == 1
    printed = capsys.readouterr().out
    assert "1 done, 0 skipped, 1 failed" in printed
    assert "P01_02.mp4: truncated: 36 frames decoded of 60 announced" in printed
    assert sorted(_read(out / "rgb.h5")) == ["P01_01"]  # never marked complete
    # --allow-truncated keeps what was decoded and says so in the video's attributes.
    allowed = tmp_path / "allowed"
    assert (
        _extract(
            folder,
            allowed,
            *modalities,
            "--allow-truncated",
            config=tiny_config,
            overrides=tiny_overrides,
        )
        == 0
    )
    for modality in ("rgb", "flow"):
        assert _read(allowed / f"{modality}.h5")["P01_02"][0].tolist() == list(range(1, 37))
        with h5py.File(allowed / f"{modality}.h5", "r") as handle:
            attrs = handle["P01_02"].attrs
            assert (attrs["truncated"], attrs["decoded_frames"], attrs["announced_frames"]) == (
                True,
                36,
                60,
            )
            assert "truncated" not in handle["P01_01"].attrs


def test_a_folder_without_videos_is_an_error_and_ignored_files_are_counted(
    tmp_path: Path, videos: Path, tiny_config: Path, tiny_overrides: list[str], capsys
) -> None:
    empty = tmp_path / "no_videos"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert _extract(empty, tmp_path / "out", config=tiny_config, overrides=tiny_overrides) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "holds no video file (1 other files ignored" in error[0]
    assert error[0].startswith("rulstm-extract: error:") and str(empty) in error[0]
    assert "ValueError" not in error[0] and not (tmp_path / "out").exists()  # nothing left
    modalities = ["--modalities", "rgb"]
    assert (
        _extract(
            videos, tmp_path / "out", *modalities, config=tiny_config, overrides=tiny_overrides
        )
        == 0
    )
    assert "ignored (not a video file): 2" in capsys.readouterr().out  # notes.txt, thumb.jpg


def test_a_non_finite_feature_fails_that_video_and_the_others_go_on(
    tmp_path: Path,
    videos: Path,
    tiny_config: Path,
    tiny_overrides: list[str],
    capsys,
    monkeypatch,
) -> None:
    """A model computing NaN (e.g. a float16 overflow) for one video: that video fails naming
    the frame, nothing of it is stored, and the next video is extracted as usual."""
    from feature_extraction.loop import ExtractionModule

    predict = ExtractionModule.predict_step

    def nan_in_p01_01(self, batch, batch_idx):
        out = predict(self, batch, batch_idx)
        frames = batch.frames[batch.keep].tolist()
        if batch.video == "P01_01" and 9 in frames:
            out["flow"][frames.index(9), :3] = np.nan
        return out

    monkeypatch.setattr(ExtractionModule, "predict_step", nan_in_p01_01)
    out = tmp_path / "features"
    code = _extract(videos, out, config=tiny_config, overrides=tiny_overrides)
    printed = capsys.readouterr().out
    assert code == 1
    assert "1 done, 0 skipped, 1 failed" in printed
    assert (
        "P01_01: frame 9: the flow feature vector is not finite (NaN in 3 of 512 values)" in printed
    )
    for modality in ("rgb", "flow", "obj"):
        assert sorted(_read(out / f"{modality}.h5")) == ["P01_02"]


def test_only_needed_reads_an_ego4d_lta_file(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    """fho_lta_*.json: clip videos (<clip_uid>.mp4) get the 4 step frames of every action,
    0-based clip frames stored 1-based."""
    import json

    make_video("videos/clipA.mp4", num_frames=60, fps=30)
    lta = tmp_path / "fho_lta_val.json"
    entries = [
        {
            "clip_uid": "clipA",
            "video_uid": "parent",
            "action_idx": i,
            "action_clip_start_frame": start,
            "action_clip_end_frame": end,
            "clip_parent_start_frame": 900,
            "verb_label": 0,
            "noun_label": 0,
        }
        for i, (start, end) in enumerate([(0, 19), (20, 39)])
    ]
    lta.write_text(json.dumps({"clips": entries}))
    out = tmp_path / "sparse"
    arguments = ["--annotations", str(lta), "--only-needed", "--modalities", "rgb"]
    code = _extract(
        tmp_path / "videos", out, *arguments, config=tiny_config, overrides=tiny_overrides
    )
    assert code == 0
    # action 0: 0 + 19 * s // 4 = 4, 9, 14, 19; action 1: 20 + 19 * s // 4 = 24, 29, 34, 39
    expected = [5, 10, 15, 20, 25, 30, 35, 40]
    assert _read(out / "rgb.h5")["clipA"][0].tolist() == expected
