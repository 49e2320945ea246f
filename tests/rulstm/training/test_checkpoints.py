"""best.ckpt / last.ckpt on resume and rerun: last is every epoch's end, resuming from it
continues the uninterrupted run exactly, and a rerun never mixes with an earlier run's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import pytest
import torch

from rulstm.cli import build_cli, main
from rulstm.run_folder import RunFolderError

from .test_stages import fit, fit_args


def _csv_logger(save_dir: Path) -> list[str]:
    return [
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(save_dir),
        "--trainer.log_every_n_steps",
        "1",
    ]


def _logged(save_dir: Path) -> list[tuple[int, str]]:
    """(step, train/loss) of every logged training step, over all logger versions in order."""
    rows = []
    versions = sorted(
        (save_dir / "lightning_logs").glob("version_*"), key=lambda p: int(p.name[8:])
    )
    for version in versions:
        with open(version / "metrics.csv") as handle:
            rows += [
                (int(row["step"]), row["train/loss"])
                for row in csv.DictReader(handle)
                if row.get("train/loss")
            ]
    return rows


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_last_is_every_epoch_and_resuming_equals_the_straight_run(tmp_path, synthetic_data):
    # 3 classes: top-5 accuracy is 100 % from the first epoch, so the monitored metric never
    # improves again and best.ckpt stays at epoch 0, while last.ckpt must follow every epoch.
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    straight, split = tmp_path / "straight", tmp_path / "split"
    fit("rgb_sc", data, straight, *_csv_logger(straight / "logs"), epochs=3)
    fit("rgb_sc", data, split, *_csv_logger(split / "logs"), epochs=2)
    first_last = _load(split / "rgb_sc" / "checkpoints" / "last.ckpt")
    assert first_last["epoch"] == 1  # the end of the second epoch, not the best (epoch 0)
    fit(
        "rgb_sc",
        data,
        split,
        *_csv_logger(split / "logs"),
        "--ckpt_path",
        str(split / "rgb_sc" / "checkpoints" / "last.ckpt"),
        epochs=3,
    )
    a_dir, b_dir = straight / "rgb_sc" / "checkpoints", split / "rgb_sc" / "checkpoints"
    assert sorted(p.name for p in a_dir.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in b_dir.iterdir()) == ["best.ckpt", "last.ckpt"]
    a, b = _load(a_dir / "last.ckpt"), _load(b_dir / "last.ckpt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["global_step"] == b["global_step"] > first_last["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert _load(a_dir / "best.ckpt")["epoch"] == _load(b_dir / "best.ckpt")["epoch"] == 0
    logged_a, logged_b = _logged(straight / "logs"), _logged(split / "logs")
    assert [step for step, _ in logged_a] == list(range(a["global_step"]))
    assert logged_a == logged_b


def test_rerun_into_a_used_folder_is_refused_or_replaced(tmp_path, synthetic_data, capsys):
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    folder = tmp_path / "rgb_sc" / "checkpoints"
    fit("rgb_sc", data, tmp_path, epochs=1)
    before = _load(folder / "last.ckpt")
    with pytest.raises(RunFolderError, match="already holds checkpoints of an earlier run"):
        fit("rgb_sc", data, tmp_path, epochs=1)
    # From the console: one line naming the folder and the ways out, exit status 1.
    assert main(fit_args("rgb_sc", data, tmp_path, epochs=1)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rulstm: error: {folder} already holds")
    assert "--overwrite true" in err[0] and "--ckpt_path" in err[0]
    untouched = _load(folder / "last.ckpt")  # the refused runs wrote nothing
    for key, value in before["state_dict"].items():
        assert torch.equal(value, untouched["state_dict"][key]), key
    cli = build_cli(fit_args("rgb_sc", data, tmp_path, "--overwrite", "true", epochs=2))
    assert cli.trainer.current_epoch == 2
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no -v1
    assert _load(folder / "last.ckpt")["epoch"] == 1


def _set_backbone(path: Path, record: dict) -> None:
    with h5py.File(path, "r+") as handle:
        provenance = json.loads(handle.attrs.get("provenance", "{}") or "{}")
        handle.attrs["provenance"] = json.dumps({**provenance, "backbone": record})


def _drop_backbone(path: Path) -> None:
    """As a feature file written before backbones were recorded."""
    with h5py.File(path, "r+") as handle:
        provenance = json.loads(handle.attrs["provenance"])
        provenance.pop("backbone")
        handle.attrs["provenance"] = json.dumps(provenance)


def test_checkpoints_record_the_feature_backbone_and_test_refuses_another(
    tmp_path, synthetic_data, capsys
):
    from epic_protocol.backbones import CHECKPOINT_KEY

    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    dino = {"backbone": "timm:vit_small_patch14_dinov2", "weights": "none (random, seeded)",
            "revision": None, "clip_length": 1, "clip_stride": 1, "dim": 12}  # fmt: skip
    _set_backbone(data.features["rgb"], dino)
    fit("rgb_sc", data, tmp_path, epochs=1)
    best = tmp_path / "rgb_sc" / "checkpoints" / "best.ckpt"
    assert _load(best)[CHECKPOINT_KEY] == {"rgb": dino}
    _set_backbone(data.features["rgb"], {**dino, "backbone": "open_clip:ViT-B-16"})
    arguments = fit_args("rgb_sc", data, tmp_path / "eval", epochs=1)
    arguments[0] = "test"
    arguments += ["--data.test_annotations", str(data.val), "--ckpt_path", str(best)]
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert "timm:vit_small_patch14_dinov2" in err and "open_clip:ViT-B-16" in err
    assert str(best) in err
    # A feature file that records no backbone (written before they were recorded): a warning.
    _drop_backbone(data.features["rgb"])
    assert main(arguments) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "records no" in line]
    assert len(warned) == 1 and warned[0].startswith("rulstm: warning: ")
    assert "records no rgb backbone" in warned[0] and str(best) in warned[0]


@pytest.mark.parametrize("subcommand", ["validate", "predict"])
def test_validate_and_predict_refuse_features_of_another_backbone(
    subcommand, tmp_path, synthetic_data, capsys
):
    """As ``rulstm test``: another backbone's features are refused naming both (exit 1,
    nothing evaluated); features recording none are a one-line warning."""
    data = synthetic_data(dims={"rgb": 12}, num_classes=3, videos=3, frames=600)
    clip = {"backbone": "open_clip:ViT-B-16", "weights": "laion2b_s34b_b88k", "revision": None,
            "clip_length": 1, "clip_stride": 1, "dim": 12}  # fmt: skip
    _set_backbone(data.features["rgb"], clip)
    fit("rgb_sc", data, tmp_path, epochs=1)
    best = tmp_path / "rgb_sc" / "checkpoints" / "best.ckpt"
    vjepa = {**clip, "backbone": "hf:vjepa2", "weights": "facebook/vjepa2-vitl-fpc64-256",
             "clip_length": 16, "clip_stride": 4}  # fmt: skip
    _set_backbone(data.features["rgb"], vjepa)
    arguments = fit_args("rgb_sc", data, tmp_path / "eval", epochs=1)
    arguments[0] = subcommand
    arguments += ["--ckpt_path", str(best)]
    if subcommand == "predict":
        arguments += ["--data.predict_annotations", str(data.val)]
    capsys.readouterr()
    assert main(arguments) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rulstm: error: ")
    assert "open_clip:ViT-B-16" in err[0] and "hf:vjepa2" in err[0] and str(best) in err[0]
    _drop_backbone(data.features["rgb"])
    assert main(arguments) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "records no" in line]
    assert len(warned) == 1 and warned[0].startswith("rulstm: warning: ")
    assert "records no rgb backbone" in warned[0] and str(best) in warned[0]


def test_init_checkpoint_and_branch_checkpoints_of_another_backbone_are_refused(
    tmp_path, synthetic_data, capsys
):
    """The docs evaluate a stage with --model.init_checkpoint (not --ckpt_path) and fuse with
    --model.branch_checkpoints: a checkpoint of another backbone's features is refused there
    too, naming both backbones, the checkpoint and the feature file."""
    data = synthetic_data(dims={"rgb": 12, "flow": 12, "obj": 6}, num_classes=3, videos=3,
                          frames=600)  # fmt: skip
    dino = {"backbone": "hf:dinov2", "weights": "models/dinov2", "revision": "sha256:aaaa",
            "clip_length": 1, "clip_stride": 1, "dim": 12}  # fmt: skip
    jepa = {**dino, "backbone": "hf:vjepa2", "weights": "models/vjepa2",
            "revision": "sha256:bbbb", "clip_length": 16, "clip_stride": 4}  # fmt: skip
    _set_backbone(data.features["rgb"], dino)
    fit("rgb_sc", data, tmp_path, epochs=1)
    best = tmp_path / "rgb_sc" / "checkpoints" / "best.ckpt"
    _set_backbone(data.features["rgb"], jepa)  # the same size, another backbone
    arguments = fit_args("rgb_sc", data, tmp_path / "eval", epochs=1)
    arguments[0] = "test"
    arguments += ["--data.test_annotations", str(data.val), "--model.init_checkpoint", str(best)]
    assert main(arguments) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rulstm: error: ")
    assert "hf:dinov2" in err[0] and "hf:vjepa2" in err[0]
    assert str(best) in err[0] and str(data.features["rgb"]) in err[0]
    # Fusion from a branch trained on another backbone's rgb features: refused before training.
    fusion = fit_args("fusion", data, tmp_path / "fusion", epochs=1)
    fusion += ["--model.branch_checkpoints", str({"rgb": str(best)})]
    assert main(fusion) == 1
    err = capsys.readouterr().err
    assert "hf:dinov2" in err and "hf:vjepa2" in err and str(best) in err
    assert not (tmp_path / "fusion" / "fusion" / "checkpoints").exists()
    # The features it was trained on: evaluated, no warning about the other modalities.
    _set_backbone(data.features["rgb"], dino)
    assert main(arguments) == 0
    assert "records no" not in capsys.readouterr().err


def test_init_checkpoint_with_branch_checkpoints_is_refused(tmp_path, synthetic_data, capsys):
    """`rulstm test` on fusion.yaml (which names the branch bests) with --model.init_checkpoint
    of a trained fusion would load the fusion, then overwrite its branches with the branch
    bests: refused in one line (status 2) before anything is loaded."""
    data = synthetic_data(dims={"rgb": 12, "flow": 12, "obj": 6}, num_classes=3, videos=3,
                          frames=600)  # fmt: skip
    fit("rgb_sc", data, tmp_path, epochs=1)
    best = tmp_path / "rgb_sc" / "checkpoints" / "best.ckpt"
    arguments = fit_args("fusion", data, tmp_path / "fusion", epochs=1)
    arguments += ["--model.branch_checkpoints", str({"rgb": str(best)})]
    arguments += ["--model.init_checkpoint", str(tmp_path / "no_such_fusion.ckpt")]
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rulstm: error: ")
    assert "model.init_checkpoint" in err[0] and "model.branch_checkpoints" in err[0]
    assert "no_such_fusion.ckpt" in err[0]
    assert not (tmp_path / "fusion" / "fusion" / "checkpoints").exists()
