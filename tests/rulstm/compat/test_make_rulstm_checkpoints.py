"""scripts/make_rulstm_checkpoints.py: the released file names and layout, imported by
``rulstm-import checkpoint`` into the right networks with exactly the written weights."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rulstm.compat.cli import main as import_main

TINY = ["--hidden", "8", "--num-classes", "7"]
BRANCH_DIMS = {"rgb": 1024, "flow": 1024, "obj": 352}


@pytest.fixture
def script(load_script):
    return load_script("make_rulstm_checkpoints")


def _reference_name(key: str) -> str:
    """An imported parameter's name (``net.`` prefixed) in the reference's layout, restated
    here from the importer's documented mapping."""
    key = key.removeprefix("net.")
    for index, modality in enumerate(BRANCH_DIMS):
        key = key.replace(f"branches.{modality}.", f"branches.{index}.")
    # The reference wraps its rolling LSTM as ".lstm" ("unrolling_lstm." must not match).
    key = re.sub(r"(^|\.)rolling_lstm\.", r"\1rolling_lstm.lstm.", key)
    return re.sub(r"^attention\.", "MATT.", key)


def _written(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.parametrize(
    ("dataset", "suffix"), [("ek55", ""), ("ek100", "_mt5r")], ids=["ek55", "ek100"]
)
def test_files_import_as_the_released_models(script, tmp_path, capsys, dataset, suffix):
    out = tmp_path / "models"
    assert script.main(["--out", str(out), "--dataset", dataset, *TINY]) == 0
    names = {
        m: f"RULSTM-anticipation_0.25_6_8_{m}{suffix}_best.pth.tar"
        for m in ("rgb", "flow", "obj", "fusion")
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(names.values())
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [str(out / n) for n in names.values()]

    for modality, name in names.items():
        written = _written(out / name)
        assert list(written) == ["state_dict", "epoch", "perf", "best_perf"]
        assert type(written["perf"]) is np.float64 and type(written["best_perf"]) is np.float64
        ckpt = tmp_path / f"{modality}.ckpt"
        assert import_main(["checkpoint", "--in", str(out / name), "--out", str(ckpt)]) == 0
        imported = torch.load(ckpt, map_location="cpu", weights_only=False)
        net = imported["rulstm_net"]
        if modality == "fusion":
            assert net["class_path"] == "rulstm.models.RULSTMFusion"
            assert net["init_args"]["feat_dims"] == BRANCH_DIMS  # order: rgb, flow, obj
            assert net["init_args"]["fusion"] == "matt"
        else:
            assert net["class_path"] == "rulstm.models.RULSTM"
            assert net["init_args"]["feat_dim"] == BRANCH_DIMS[modality]
        assert (net["init_args"]["hidden"], net["init_args"]["num_classes"]) == (8, 7)
        # Every imported weight is the written one, and nothing is left over.
        state = written["state_dict"]
        assert sorted(_reference_name(k) for k in imported["state_dict"]) == sorted(state)
        for key, value in imported["state_dict"].items():
            assert torch.equal(value, state[_reference_name(key)]), key

    # The fusion's branches are the branch files' weights.
    fusion = _written(out / names["fusion"])["state_dict"]
    for index, modality in enumerate(BRANCH_DIMS):
        for key, value in _written(out / names[modality])["state_dict"].items():
            assert torch.equal(fusion[f"branches.{index}.{key}"], value), (modality, key)


def test_seeded_and_existing_files_are_kept(script, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert script.main(["--out", str(first), "--seed", "3", *TINY]) == 0
    assert script.main(["--out", str(second), "--seed", "3", *TINY]) == 0
    name = "RULSTM-anticipation_0.25_6_8_fusion_best.pth.tar"
    one, two = _written(first / name)["state_dict"], _written(second / name)["state_dict"]
    assert all(torch.equal(one[k], two[k]) for k in one)
    capsys.readouterr()

    # The authors' files have these names: never replaced without --overwrite.
    before = (first / name).read_bytes()
    assert script.main(["--out", str(first), "--seed", "4", *TINY]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (first / name).read_bytes() == before
    assert script.main(["--out", str(first), "--seed", "4", "--overwrite", *TINY]) == 0
    other = _written(first / name)["state_dict"]
    assert not torch.equal(other["MATT.0.weight"], one["MATT.0.weight"])


def test_a_bad_out_is_one_line(script, tmp_path, capsys):
    not_a_folder = tmp_path / "models.txt"
    not_a_folder.write_text("")
    assert script.main(["--out", str(not_a_folder), *TINY]) == 1
    assert script.main(["--out", str(not_a_folder / "ek55"), *TINY]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"make_rulstm_checkpoints.py: error: --out {not_a_folder}: exists and is not a folder",
        f"make_rulstm_checkpoints.py: error: --out {not_a_folder / 'ek55'}: cannot create the "
        "folder (Not a directory)",
    ]
    assert script.main(["--out", str(tmp_path / "m"), "--hidden", "0"]) == 2
    assert not (tmp_path / "m").exists()
