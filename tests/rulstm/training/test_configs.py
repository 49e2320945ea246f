"""Every YAML under configs/ (training side) instantiates and runs one fast_dev_run batch.

No size is given on the command line: num_classes comes from the vocabulary and the feature
sizes from the files, at the reference sizes (1024 / 1024 / 352)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from rulstm.cli import build_cli
from rulstm.models import RULSTM

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
STAGES = sorted(
    path
    for dataset in ("ek55", "ek100")
    for path in (CONFIGS / dataset).glob("*.yaml")
    if path.name != "base.yaml" and not path.name.startswith(("test_", "predict_"))
)
REFERENCE_DIMS = {"rgb": 1024, "flow": 1024, "obj": 352}


def test_every_dataset_has_all_stages():
    for dataset in ("ek55", "ek100"):
        names = {p.stem for p in STAGES if p.parent.name == dataset}
        for modality in REFERENCE_DIMS:
            assert {f"{modality}_sc", f"{modality}_anticipation"} <= names
        assert {"fusion", "baseline_lstm_rgb", "baseline_tcn_rgb"} <= names
    ek55 = {p.stem for p in STAGES if p.parent.name == "ek55"}
    assert {"early_rgb", "early_flow", "early_obj", "early_fusion"} <= ek55
    assert {"baseline_rugru_rgb", "baseline_transformer_rgb"} <= ek55


@pytest.mark.parametrize("stage", STAGES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_runs_fast_dev_run(stage, tmp_path, synthetic_data, fast_dev_run_args):
    dataset = stage.parent.name
    stage_config = yaml.safe_load(stage.read_text())
    modalities = list(stage_config["data"]["features"])
    data = synthetic_data(
        dims={m: REFERENCE_DIMS[m] for m in modalities}, videos=3, frames=600, num_classes=4
    )
    args = fast_dev_run_args(
        CONFIGS / dataset / "base.yaml",
        stage,
        features={m: data.features[m] for m in modalities},
        train=data.train,
        val=data.val,
        root=tmp_path / "run",
    )
    if stage.stem in ("baseline_transformer_rgb", "baseline_probe_rgb"):
        args += ["--model.net.init_args.heads", "2"]  # hidden 8 above
    cli = build_cli(args)
    assert cli.trainer.state.finished
    assert "train/loss" in cli.trainer.callback_metrics
    net_args = stage_config["model"].get("net", {}).get("init_args", {})
    if net_args.get("cell") == "gru":
        assert isinstance(cli.model.net.rolling_lstm, torch.nn.GRU)


QUICKSTART_STAGES = sorted((CONFIGS / "quickstart").glob("*.yaml"))


@pytest.mark.parametrize(
    "stage",
    [p for p in QUICKSTART_STAGES if p.stem not in ("base", "test")],
    ids=lambda p: f"quickstart/{p.stem}",
)
def test_quickstart_config_runs_fast_dev_run(stage, tmp_path, synthetic_data):
    """The quickstart's stage and baseline configs, as rulstm-quickstart runs them (no sizes)."""
    modalities = ["rgb", "obj"] if stage.stem == "fusion" else ["rgb"]
    data = synthetic_data(dims={"rgb": 12, "obj": 6}, videos=3, frames=600, num_classes=4)
    args = [
        "fit",
        "-c", str(CONFIGS / "quickstart" / "base.yaml"),
        "-c", str(stage),
        "--data.features", str({m: str(data.features[m]) for m in modalities}),
        "--data.train_annotations", str(data.train),
        "--data.val_annotations", str(data.val),
        "--data.batch_size", "4",
        "--trainer.fast_dev_run", "true",
        "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    if stage.stem != "fusion":
        args += ["--model.modality", "rgb"]
    cli = build_cli(args)
    assert cli.trainer.state.finished and "train/loss" in cli.trainer.callback_metrics
    assert cli.model.net.num_classes == 4


FOUNDATION = sorted(CONFIGS.glob("*/foundation/*.yaml"))
FOUNDATION_FUSION = sorted(CONFIGS.glob("*/foundation/fusion/*.yaml"))
FOUNDATION_DIMS = {"dinov2": 768, "clip": 512, "videomae": 768, "vjepa2": 1024}


def _config_hidden(args: list[str]) -> list[str]:
    """``args`` without fast_dev_run_args' tiny hidden size: the configs' sizes apply."""
    index = args.index("--model.net.init_args.hidden")
    return args[:index] + args[index + 2 :]


@pytest.mark.parametrize("overlay", FOUNDATION, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_foundation_feature_overrides_run_on_their_dimension(
    overlay, tmp_path, synthetic_data, fast_dev_run_args
):
    """configs/<dataset>/foundation/<backbone>.yaml on top of the rgb_sc stage: the feature
    size comes from the file (no size option), the hidden size (= the feature dimension) and
    the dropout from the override."""
    dataset = overlay.parent.parent.name
    data = synthetic_data(
        dims={"rgb": FOUNDATION_DIMS[overlay.stem]}, videos=3, frames=600, num_classes=4
    )
    stage = CONFIGS / dataset / "rgb_sc.yaml"
    args = fast_dev_run_args(
        CONFIGS / dataset / "base.yaml",
        stage,
        features={"rgb": data.features["rgb"]},
        train=data.train,
        val=data.val,
        root=tmp_path / "run",
    )
    args[args.index(str(stage)) + 1 : args.index(str(stage)) + 1] = ["-c", str(overlay)]
    cli = build_cli(_config_hidden(args))
    assert cli.trainer.state.finished
    assert cli.model.net.feat_dim == FOUNDATION_DIMS[overlay.stem]
    assert cli.model.net.hidden == FOUNDATION_DIMS[overlay.stem]
    assert cli.model.net.input_dropout.p == 0.5


def test_every_foundation_override_has_a_fusion_override():
    assert [(p.parent.parent.name, p.stem) for p in FOUNDATION] == [
        (p.parent.parent.parent.name, p.stem) for p in FOUNDATION_FUSION
    ]


@pytest.mark.parametrize("dataset", ["ek55", "ek100", "egtea"])
@pytest.mark.parametrize("stage", ["rgb_anticipation", "fusion"])
def test_foundation_rgb_runs_in_the_later_stages_and_fuses_with_flow_and_obj(
    dataset, stage, tmp_path, synthetic_data, fast_dev_run_args
):
    """The documented commands (docs/extraction.md, "Modern backbones"): the foundation
    override on top of the anticipation stage (hidden 768 = the DINOv2 dimension), and MATT
    fusion (foundation/fusion/dinov2.yaml) of that RGB branch with the flow and obj branches
    at the reference sizes (hidden 1024), initialised from branch checkpoints of those sizes;
    no size option."""
    foundation = CONFIGS / dataset / "foundation"
    overlay = foundation / ("fusion/dinov2.yaml" if stage == "fusion" else "dinov2.yaml")
    modalities = ["rgb"] if stage != "fusion" else ["rgb", "flow"] + ["obj"] * (dataset != "egtea")
    dims = {**REFERENCE_DIMS, "rgb": FOUNDATION_DIMS["dinov2"]}
    data = synthetic_data(dims={m: dims[m] for m in modalities}, videos=3, frames=600,
                          num_classes=4)  # fmt: skip
    configs = [CONFIGS / dataset / "base.yaml"]
    if dataset == "egtea":
        configs.append(CONFIGS / "egtea" / "split1.yaml")
    args = fast_dev_run_args(
        *configs,
        CONFIGS / dataset / f"{stage}.yaml",
        overlay,
        features={m: data.features[m] for m in modalities},
        train=data.train,
        val=data.val,
        root=tmp_path / "run",
    )
    args = _config_hidden(args)
    hidden = {"rgb": 768, "flow": 1024, "obj": 1024}
    if stage == "fusion":
        # Trained branches as the earlier stages leave them: rgb at 768, flow/obj at 1024.
        branches = {}
        for m in modalities:
            torch.manual_seed(len(branches))
            branch = RULSTM(num_classes=data.num_classes, feat_dim=dims[m], hidden=hidden[m])
            branches[m] = tmp_path / f"{m}.pt"
            torch.save(branch.state_dict(), branches[m])
        index = args.index("--model.branch_checkpoints")
        args[index + 1] = json.dumps({m: str(path) for m, path in branches.items()})
    else:
        args += ["--model.modality", "rgb"]
    cli = build_cli(args)
    assert cli.trainer.state.finished and "train/loss" in cli.trainer.callback_metrics
    net = cli.model.net
    if stage == "fusion":
        assert {m: b.feat_dim for m, b in net.branches.items()} == {m: dims[m] for m in modalities}
        assert {m: b.hidden for m, b in net.branches.items()} == {m: hidden[m] for m in modalities}
        assert net.attention[0].in_features == 2 * sum(hidden[m] for m in modalities)
        assert net.branches["rgb"].input_dropout.p == 0.5  # the override's, every branch
    else:
        assert net.feat_dim == 768 and net.hidden == 768 and net.input_dropout.p == 0.5


@pytest.mark.parametrize(
    "stage", sorted(p.stem for p in (CONFIGS / "ek55").glob("baseline_*.yaml"))
)
def test_foundation_override_sizes_the_baselines(
    stage, tmp_path, synthetic_data, fast_dev_run_args
):
    """The single-branch override on top of every baseline: ``hidden`` (their width) becomes
    the feature dimension, which their 8 heads divide."""
    data = synthetic_data(dims={"rgb": 512}, videos=3, frames=600, num_classes=4)
    args = fast_dev_run_args(
        CONFIGS / "ek55" / "base.yaml",
        CONFIGS / "ek55" / f"{stage}.yaml",
        CONFIGS / "ek55" / "foundation" / "clip.yaml",
        features={"rgb": data.features["rgb"]},
        train=data.train,
        val=data.val,
        root=tmp_path / "run",
    )
    cli = build_cli(_config_hidden(args))
    assert cli.trainer.state.finished and "train/loss" in cli.trainer.callback_metrics
    assert cli.model.net.classifier[1].in_features == 512  # (B, S, hidden) -> (B, S, C)
