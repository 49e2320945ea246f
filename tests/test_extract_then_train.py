"""The README's route across both sides: extract with ``configs/extract/default.yaml`` (random
weights, offline), then train the ``configs/ek55/`` stage configs on those very files with no
size option: feature sizes come from the files (2048-d ResNet-50 RGB and Flow, 90 COCO
classes), the number of classes from ``actions.csv``."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from epic_protocol import ActionVocabulary, Segment, write_actions_csv, write_rulstm_split
from feature_extraction.cli import main as extract_main
from rulstm.cli import build_cli
from rulstm.models import RULSTM, RULSTMFusion

ROOT = Path(__file__).resolve().parents[1]


def _write_video(path: Path, *, frames: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _fit(stage: str, features: dict[str, Path], split: Path, actions: Path, root: Path):
    return build_cli(
        [
            "fit",
            "-c",
            str(ROOT / "configs" / "ek55" / "base.yaml"),
            "-c",
            str(ROOT / "configs" / "ek55" / f"{stage}.yaml"),
            "--data.features",
            str({m: str(p) for m, p in features.items()}),
            "--data.train_annotations",
            str(split),
            "--data.val_annotations",
            str(split),
            "--data.actions",
            str(actions),
            "--data.batch_size",
            "2",
            "--data.num_workers",
            "0",
            "--model.net.init_args.hidden",
            "8",
            "--model.init_checkpoint",
            "null",
            "--model.branch_checkpoints",
            "null",
            "--trainer.fast_dev_run",
            "true",
            "--trainer.logger",
            "false",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            "--trainer.default_root_dir",
            str(root / stage),
        ]  # fmt: skip
    )


@pytest.mark.slow
def test_default_extraction_trains_with_the_ek55_stage_configs(tmp_path):
    for index, video in enumerate(("P01_01", "P01_02")):
        _write_video(tmp_path / "videos" / f"{video}.mp4", frames=150, seed=index)
    segments = [
        Segment("1", "P01_01", 120, 140, 0, 0, 0),
        Segment("2", "P01_01", 135, 149, 1, 2, 1),
        Segment("3", "P01_02", 125, 145, 2, 1, 2),
    ]
    split = tmp_path / "split.csv"
    write_rulstm_split(split, segments)
    actions = tmp_path / "actions.csv"
    vocabulary = ActionVocabulary(
        verbs=np.array([0, 1, 2]),
        nouns=np.array([0, 2, 1]),
        names=("a_0", "b_2", "c_1"),
        num_verbs=3,
        num_nouns=3,
    )
    write_actions_csv(actions, vocabulary)
    out = tmp_path / "features"
    code = extract_main(
        [
            "--videos",
            str(tmp_path / "videos"),
            "--out",
            str(out),
            "-c",
            str(ROOT / "configs" / "extract" / "default.yaml"),
            "--annotations",
            str(split),
            "--only-needed",
            "--device",
            "cpu",
            "--progress",
            "false",
            "--num_workers",
            "0",
            "--threads",
            "1",
            "--decode.width",
            "64",
            "--decode.height",
            "48",
            "--rgb.weights",
            "none",
            "--flow.weights",
            "none",
            "--obj.weights",
            "none",
            "--flow.method",
            "dis",
            "--obj.min_size",
            "64",
            "--obj.max_size",
            "64",
        ]  # fmt: skip
    )
    assert code == 0
    features = {m: out / f"{m}.h5" for m in ("rgb", "flow", "obj")}
    cli = _fit("rgb_sc", {"rgb": features["rgb"]}, split, actions, tmp_path / "runs")
    assert isinstance(cli.model.net, RULSTM) and cli.trainer.state.finished
    assert (cli.model.net.feat_dim, cli.model.net.num_classes) == (2048, 3)
    cli = _fit("obj_anticipation", {"obj": features["obj"]}, split, actions, tmp_path / "runs")
    assert cli.model.net.feat_dim == 90 and cli.trainer.state.finished
    cli = _fit("fusion", features, split, actions, tmp_path / "runs")
    assert isinstance(cli.model.net, RULSTMFusion) and cli.trainer.state.finished
    dims = {m: branch.feat_dim for m, branch in cli.model.net.branches.items()}
    assert dims == {"rgb": 2048, "flow": 2048, "obj": 90}
