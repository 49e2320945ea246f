"""The test_*.yaml and predict_*.yaml configs run `rulstm test` / `rulstm predict` end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from rulstm.cli import build_cli
from rulstm.models import RULSTMFusion
from rulstm.models.spec import NET_KEY, describe_net

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
DIMS = {"rgb": 1024, "flow": 1024, "obj": 352}
TEST_CONFIGS = sorted(CONFIGS.glob("ek*/test_*.yaml"))
PREDICT_CONFIGS = sorted(CONFIGS.glob("ek*/predict_*.yaml"))


def overrides(config: Path, data, tmp_path: Path) -> list[str]:
    modalities = list(yaml.safe_load(config.read_text())["data"]["features"])
    return [
        "--data.features",
        str({m: str(data.features[m]) for m in modalities}),
        "--data.actions",
        "null",
        "--data.train_annotations",
        str(data.train),
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "8",
        "--model.init_checkpoint",
        "null",
        "--model.net.init_args.hidden",
        "8",
        "--trainer.logger",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
    ]


@pytest.mark.parametrize("config", TEST_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_test_config_evaluates_and_writes_outputs(config, tmp_path, synthetic_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = synthetic_data(dims=DIMS, num_classes=4, videos=3, frames=600)
    args = [
        "test",
        "-c",
        str(config.parent / "base.yaml"),
        "-c",
        str(config),
        *overrides(config, data, tmp_path),
        "--data.test_annotations",
        str(data.val),
    ]
    args += ["--trainer.callbacks.init_args.class_lists", "false"]  # synthetic classes
    cli = build_cli(args)
    name = config.stem.removeprefix("test_")
    out = tmp_path / "evaluation" / config.parent.name
    report = json.loads((out / f"{name}.json").read_text())
    assert report and (out / f"{name}.csv").is_file() and (out / f"{name}.png").is_file()
    # One name per metric: every logged test metric is a row of the report, same value.
    logged = {
        key: float(value)
        for key, value in cli.trainer.callback_metrics.items()
        if key.startswith("test/") and key != "test/loss" and "/attention/" not in key
    }
    with (out / f"{name}.csv").open() as handle:
        rows = {
            row["key"]: float(row["value"])
            for row in csv.DictReader(handle)
            if row["value"] not in ("", "nan")
        }
    assert logged and logged.keys() == rows.keys()
    for key, value in rows.items():
        assert logged[key] == pytest.approx(value, rel=1e-6), key
    headline = report["headline"]["name"]
    assert headline in logged and logged[headline] == pytest.approx(report["headline"]["value"])


@pytest.mark.parametrize("config", PREDICT_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_predict_config_writes_a_valid_submission(config, tmp_path, synthetic_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = config.parent.name
    # Challenge files list the top 100 actions: the vocabulary needs at least 100.
    data = synthetic_data(dims=DIMS, num_classes=120, num_labels=4, videos=3, frames=600)
    test_split = tmp_path / "test_split.csv"
    test_split.write_text(
        "".join(",".join(line.split(",")[:4]) + "\n" for line in data.val.read_text().splitlines())
    )
    args = [
        "predict",
        "-c",
        str(CONFIGS / dataset / "base.yaml"),
        "-c",
        str(CONFIGS / dataset / "test_fusion.yaml"),
        "-c",
        str(config),
        *overrides(CONFIGS / dataset / "test_fusion.yaml", data, tmp_path),
        "--data.predict_annotations",
        str(test_split),
        "--trainer.callbacks.init_args.expected_ids",
        str(test_split),
        "--return_predictions",
        "false",
    ]
    build_cli(args)
    submission = json.loads(
        (
            tmp_path / "submission" / dataset / f"{config.stem.removeprefix('predict_')}.json"
        ).read_text()
    )
    assert submission["challenge"] == "action_anticipation"
    assert set(submission["results"]) == {
        line.split(",")[0] for line in test_split.read_text().splitlines()
    }


def test_test_without_a_root_dir_keeps_its_config_with_the_report(
    tmp_path, synthetic_data, monkeypatch
):
    """`rulstm test` without --trainer.default_root_dir wrote config.yaml into the current
    folder, replacing it on every run: it now lies next to the report it produced."""
    monkeypatch.chdir(tmp_path)
    data = synthetic_data(dims=DIMS, num_classes=4, videos=3, frames=600)
    config = CONFIGS / "ek55" / "test_rgb.yaml"
    args = overrides(config, data, tmp_path)[:-2]  # no --trainer.default_root_dir
    for name in ("rgb", "flow"):
        build_cli(
            ["test", "-c", str(config.parent / "base.yaml"), "-c", str(config), *args]
            + ["--data.test_annotations", str(data.val)]
            + ["--trainer.callbacks.init_args.class_lists", "false"]
            + ["--trainer.callbacks.init_args.name", name]
        )
    assert not (tmp_path / "config.yaml").exists()
    out = tmp_path / "evaluation" / "ek55"
    for name in ("rgb", "flow"):
        saved = yaml.safe_load((out / f"{name}.config.yaml").read_text())
        assert saved["trainer"]["callbacks"][0]["init_args"]["name"] == name


def test_foundation_fusion_override_evaluates_a_fusion_of_per_branch_sizes(
    tmp_path, synthetic_data, monkeypatch
):
    """The documented evaluation (docs/extraction.md, "Modern backbones"): test_fusion.yaml with
    configs/ek100/foundation/fusion/dinov2.yaml builds the checkpoint's per-branch sizes (RGB
    768 on 768-d features, flow/obj 1024) and evaluates it; no size option."""
    monkeypatch.chdir(tmp_path)
    dims = {**DIMS, "rgb": 768}
    data = synthetic_data(dims=dims, num_classes=4, videos=3, frames=600)
    hidden = {"rgb": 768, "flow": 1024, "obj": 1024}
    torch.manual_seed(0)
    net = RULSTMFusion(num_classes=data.num_classes, feat_dims=dims, hidden=hidden)
    checkpoint = tmp_path / "fusion.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({NET_KEY: describe_net(net), "state_dict": state}, checkpoint)
    config = CONFIGS / "ek100" / "test_fusion.yaml"
    args = overrides(config, data, tmp_path)
    index = args.index("--model.net.init_args.hidden")
    del args[index : index + 2]  # the override's sizes
    args[args.index("--model.init_checkpoint") + 1] = str(checkpoint)
    cli = build_cli([
        "test",
        "-c", str(CONFIGS / "ek100" / "base.yaml"),
        "-c", str(config),
        "-c", str(CONFIGS / "ek100" / "foundation" / "fusion" / "dinov2.yaml"),
        *args,
        "--data.features", str({m: str(data.features[m]) for m in dims}),
        "--data.test_annotations", str(data.val),
        "--trainer.callbacks.init_args.class_lists", "false",
    ])  # fmt: skip
    assert cli.model.net.hidden == hidden
    for key, value in net.state_dict().items():
        assert torch.equal(cli.model.net.state_dict()[key], value), key
    assert (tmp_path / "evaluation" / "ek100" / "fusion.json").is_file()
