"""Ego4D long-term anticipation: every configs/ego4d_lta file runs (fast_dev_run) through
`rulstm`, and predict writes outputs.json in the official layout that rulstm-score accepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from epic_protocol.ego4d_lta import (
    LTAAction,
    LTATaxonomy,
    write_lta_annotations,
    write_taxonomy,
)
from epic_protocol.features import FeatureFileWriter
from rulstm.cli import build_cli
from rulstm.evaluation.lta_protocol import Ego4DLTAProtocol
from rulstm.evaluation.score_cli import main as score_main
from rulstm.lta_cli import is_lta_command

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "ego4d_lta"
STAGES = sorted(p for p in CONFIGS.glob("*.yaml") if p.stem not in ("base", "test", "predict"))
TAXONOMY = LTATaxonomy(verbs=("take", "put", "cut"), nouns=("knife", "bowl", "pan", "lid"))
FRAMES_PER_ACTION = 30
DIM = 8


def make_lta_data(root: Path, *, keying: str = "clip", actions_per_clip: int = 24) -> dict:
    """Two train clips, one val clip, one test clip (parent videos vid0..vid3, each clip
    starting at parent frame 300); features bump at the current action's verb."""
    rng = np.random.default_rng(0)
    files = {}
    store_rows = {}
    for c, split in enumerate(["train", "train", "val", "test"]):
        clip, video, parent = f"clip{c}", f"vid{c}", 300
        actions = [
            LTAAction(
                clip,
                video,
                i,
                i * FRAMES_PER_ACTION,
                (i + 1) * FRAMES_PER_ACTION - 1,
                parent,
                (i + c) % 3,
                (i * 2 + c) % 4,
            )
            for i in range(actions_per_clip)
        ]
        files.setdefault(split, []).extend(actions)
        n = actions_per_clip * FRAMES_PER_ACTION
        values = rng.normal(scale=0.1, size=(n, DIM)).astype(np.float32)
        for a in actions:
            values[a.start_frame : a.end_frame + 1, a.verb] += 2.0
        if keying == "clip":
            store_rows[clip] = (np.arange(1, n + 1), values)
        else:  # parent video numbering: clip frame f is video frame parent + f + 1
            padded = np.concatenate([np.zeros((parent, DIM), np.float32), values])
            store_rows[video] = (np.arange(1, parent + n + 1), padded)
    paths = {"taxonomy": root / "fho_lta_taxonomy.json"}
    write_taxonomy(paths["taxonomy"], TAXONOMY)
    for split, actions in files.items():
        name = "fho_lta_test_unannotated.json" if split == "test" else f"fho_lta_{split}.json"
        paths[split] = root / name
        write_lta_annotations(paths[split], actions, taxonomy=TAXONOMY, labelled=split != "test")
    paths["features"] = root / "features.h5"
    with FeatureFileWriter(paths["features"], modality="rgb", dim=DIM, fps=30.0) as writer:
        for key, (frames, values) in store_rows.items():
            writer.write_video(key, frames, values)
    return paths


def data_args(paths: dict, root: Path, keying: str = "clip") -> list[str]:
    return [
        f"--data.features={paths['features']}",
        f"--data.taxonomy={paths['taxonomy']}",
        f"--data.train={paths['train']}",
        f"--data.val={paths['val']}",
        f"--data.test={paths['test']}",
        f"--data.keying={keying}",
        "--data.num_workers=0",
        "--data.batch_size=4",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
        "--model.net.init_args.hidden=16",
    ]


def test_lta_workers_follow_the_usable_cpus(tmp_path, monkeypatch):
    from rulstm.data import datamodule
    from rulstm.data.lta import LTADataModule

    write_taxonomy(tmp_path / "taxonomy.json", TAXONOMY)
    monkeypatch.setattr(datamodule.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def workers(value) -> int:
        module = LTADataModule(
            features="f.h5", taxonomy=str(tmp_path / "taxonomy.json"), num_workers=value
        )
        return module.num_workers

    assert workers("auto") == 2
    with pytest.warns(UserWarning, match=r"data.num_workers is 4 but this process may use 2"):
        assert workers(4) == 4
    base = yaml.safe_load((Path(__file__).parents[3] / "configs/ego4d_lta/base.yaml").read_text())
    assert base["data"]["num_workers"] == "auto"


def test_the_lta_configs_are_recognised():
    assert is_lta_command(["fit", "-c", str(CONFIGS / "base.yaml")])
    assert is_lta_command(["fit", "--task", "ego4d_lta"])
    assert not is_lta_command(["fit", "-c", str(CONFIGS.parent / "ek55" / "base.yaml")])


@pytest.mark.parametrize("stage", STAGES, ids=lambda p: p.stem)
def test_stage_runs_fast_dev_run(stage, tmp_path):
    paths = make_lta_data(tmp_path)
    cli = build_cli(
        [
            "fit",
            "-c",
            str(CONFIGS / "base.yaml"),
            "-c",
            str(stage),
            *data_args(paths, tmp_path / "run"),
            "--trainer.fast_dev_run=2",
        ]
    )
    assert cli.trainer.state.finished
    assert "train/loss" in cli.trainer.callback_metrics
    net = cli.model.net
    assert (net.num_verbs, net.num_nouns, net.feat_dim, net.num_future_actions) == (3, 4, DIM, 20)
    logged = sorted(k for k in cli.trainer.callback_metrics if k.startswith("val/"))
    assert logged == sorted(Ego4DLTAProtocol().logged_names("val"))
    if "gru" in stage.stem:
        assert isinstance(net.rolling_lstm, torch.nn.GRU)


@pytest.mark.parametrize("keying", ["clip", "video"])
def test_fit_test_predict_then_score(tmp_path, keying, monkeypatch):
    monkeypatch.chdir(tmp_path)  # predict.yaml writes submission/ego4d_lta/outputs.json
    paths = make_lta_data(tmp_path, keying=keying)
    root = tmp_path / "run"
    common = data_args(paths, root, keying)
    build_cli(
        [
            "fit",
            "-c",
            str(CONFIGS / "base.yaml"),
            "-c",
            str(CONFIGS / "forecaster.yaml"),
            *common,
            "--trainer.max_epochs=1",
        ]
    )
    checkpoint = root / "checkpoints" / "best.ckpt"  # whatever the logger
    assert checkpoint.is_file() and (root / "checkpoints" / "last.ckpt").is_file()
    test = build_cli(
        [
            "test",
            "-c",
            str(CONFIGS / "base.yaml"),
            "-c",
            str(CONFIGS / "test.yaml"),
            *common,
            f"--model.init_checkpoint={checkpoint}",
        ]
    )
    metrics = test.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/verb/ED@20"]) <= 1.0
    # test.yaml's evaluator wrote the report, named after the checkpoint's stage folder, with
    # the logged names and values (the same checkpoint tested twice replaces it).
    report = json.loads((tmp_path / "evaluation" / "ego4d_lta" / f"{root.name}.json").read_text())
    assert report["metrics"].keys() == {k for k in metrics if k.startswith("test/")}
    for key, value in report["metrics"].items():
        assert float(metrics[key]) == pytest.approx(value, rel=1e-6), key
    assert (tmp_path / "evaluation" / "ego4d_lta" / f"{root.name}.png").is_file()
    assert float(metrics["test/action/ED@20"]) >= float(metrics["test/verb/ED@20"]) - 1e-6
    out = tmp_path / "submission" / "ego4d_lta" / "outputs.json"
    for split in ("test", "val"):
        build_cli(
            [
                "predict",
                "-c",
                str(CONFIGS / "base.yaml"),
                "-c",
                str(CONFIGS / "predict.yaml"),
                *common,
                f"--model.init_checkpoint={checkpoint}",
                f"--data.predict_split={split}",
                "--return_predictions=false",
            ]
        )
        data = json.loads(out.read_text())
        # 24 actions, N=2, Z=20: windows i = 0..2, ids <clip>_<last observed action_idx>
        clip = "clip3" if split == "test" else "clip2"
        assert list(data) == [f"{clip}_1", f"{clip}_2", f"{clip}_3"]
        for entry in data.values():
            assert np.array(entry["verb"]).shape == (5, 20)
            assert np.array(entry["noun"]).shape == (5, 20)
            assert np.array(entry["verb"]).max() < 3 and np.array(entry["noun"]).max() < 4
    # the val outputs score with rulstm-score exactly as the test stage logged them
    metrics_file = tmp_path / "metrics.json"
    assert (
        score_main(
            [
                "ego4d-lta",
                "--annotations",
                str(paths["val"]),
                "--predictions",
                str(out),
                "--json",
                str(metrics_file),
            ]
        )
        == 0
    )
    scored = json.loads(metrics_file.read_text())
    assert scored["num_windows"] == 3
    assert scored["verb"]["ED@20"] == pytest.approx(float(metrics["test/verb/ED@20"]), abs=1e-6)
    assert scored["noun"]["AUED"] == pytest.approx(float(metrics["test/noun/AUED"]), abs=1e-6)


def test_base_config_selects_checkpoints_as_the_protocol_says():
    protocol = Ego4DLTAProtocol()
    base = yaml.safe_load((CONFIGS / "base.yaml").read_text())
    best = base["trainer"]["callbacks"][0]["init_args"]
    assert "monitor" not in best  # the protocol's val/verb/ED@20, min (test_selection.py)
    assert protocol.mode == "min" and protocol.is_better(0.5, 0.6)
    assert base["model"]["num_sequences"] == protocol.num_sequences == 5
    assert base["data"]["num_future_actions"] == protocol.num_future_actions == 20
