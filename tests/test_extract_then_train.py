"""The route across both sides (docs/quickstart.md, "From the quickstart to EPIC-KITCHENS"):
extract with ``configs/extract/default.yaml`` (random weights, offline), then train the ``configs/ek55/`` stage configs on those very files with no
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


def _write_footage(tmp_path: Path) -> tuple[Path, Path]:
    """Two 150-frame clips under ``tmp_path/videos``, a three-segment RU-LSTM split and its
    ``actions.csv`` (3 actions): the paths of the split and of actions.csv."""
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
    return split, actions


@pytest.mark.slow
def test_default_extraction_trains_with_the_ek55_stage_configs(
    tmp_path, fast_dev_run_args, tiny_extraction_options
):
    split, actions = _write_footage(tmp_path)
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
            *tiny_extraction_options,
        ]  # fmt: skip
    )
    assert code == 0
    features = {m: out / f"{m}.h5" for m in ("rgb", "flow", "obj")}

    def fit(stage: str, features: dict[str, Path]):
        configs = ROOT / "configs" / "ek55"
        args = fast_dev_run_args(
            configs / "base.yaml",
            configs / f"{stage}.yaml",
            features=features,
            train=split,
            val=split,
            root=tmp_path / "runs" / stage,
            actions=actions,
            batch_size=2,
        )
        return build_cli(args)

    cli = fit("rgb_sc", {"rgb": features["rgb"]})
    assert isinstance(cli.model.net, RULSTM) and cli.trainer.state.finished
    assert (cli.model.net.feat_dim, cli.model.net.num_classes) == (2048, 3)
    cli = fit("obj_anticipation", {"obj": features["obj"]})
    assert cli.model.net.feat_dim == 90 and cli.trainer.state.finished
    cli = fit("fusion", features)
    assert isinstance(cli.model.net, RULSTMFusion) and cli.trainer.state.finished
    dims = {m: branch.feat_dim for m, branch in cli.model.net.branches.items()}
    assert dims == {"rgb": 2048, "flow": 2048, "obj": 90}


def test_foundation_extraction_trains_with_the_foundation_override(tmp_path, fast_dev_run_args):
    """The issue's "done when": ``rulstm-extract -c configs/extract/dinov2.yaml --rgb.weights
    <local folder>`` (a tiny random DINOv2 saved with save_pretrained), then ``rulstm fit``
    with the EK100 RGB stage and ``configs/ek100/foundation/dinov2.yaml`` on that very file:
    the 32-d size comes from the file, no size option."""
    transformers = pytest.importorskip("transformers")

    folder = tmp_path / "dinov2"
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )  # fmt: skip
    transformers.Dinov2Model(config).save_pretrained(folder)
    transformers.BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    split, actions = _write_footage(tmp_path)
    out = tmp_path / "features"
    arguments = [
        "--videos", str(tmp_path / "videos"), "--out", str(out),
        "-c", str(ROOT / "configs" / "extract" / "dinov2.yaml"),
        "--rgb.weights", str(folder), "--annotations", str(split), "--only-needed",
        "--device", "cpu", "--progress", "false", "--num_workers", "0", "--threads", "1",
    ]  # fmt: skip
    assert extract_main(arguments) == 0
    configs = ROOT / "configs" / "ek100"
    args = fast_dev_run_args(
        configs / "base.yaml",
        configs / "rgb_sc.yaml",
        configs / "foundation" / "dinov2.yaml",
        features={"rgb": out / "rgb.h5"},
        train=split,
        val=split,
        root=tmp_path / "runs",
        actions=actions,
        batch_size=2,
    )
    cli = build_cli(args)
    assert isinstance(cli.model.net, RULSTM) and cli.trainer.state.finished
    assert (cli.model.net.feat_dim, cli.model.net.num_classes) == (32, 3)
    assert cli.model.net.input_dropout.p == 0.5
