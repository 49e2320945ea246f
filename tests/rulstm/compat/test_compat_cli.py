"""``rulstm-import`` end to end on tiny files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from epic_protocol.features import read_file_info
from rulstm.compat.cli import main


def test_import_features(ref, tmp_path: Path, capsys):
    pytest.importorskip("lmdb")
    entries = {f"P01_01_frame_{f:010d}.jpg": np.full(352, f, np.float32) for f in (1, 2, 3)}
    database = ref.write_lmdb(tmp_path / "obj", entries)
    output = tmp_path / "features" / "obj.h5"
    argv = ["features", "--lmdb", str(database), "--modality", "obj", "--out", str(output)]
    assert main([*argv, "--no-progress"]) == 0
    assert "3 rows from 3 LMDB entries; 1 videos written" in capsys.readouterr().out
    assert main([*argv, "--no-progress"]) == 0  # resuming: nothing left to do
    assert "0 videos written, 1 already complete" in capsys.readouterr().out


def test_import_features_as_float16(ref, tmp_path: Path, capsys):
    pytest.importorskip("lmdb")
    from epic_protocol.features import FeatureStore

    rng = np.random.default_rng(0)
    values = {f: rng.standard_normal(352).astype(np.float32) for f in (1, 2, 3)}
    entries = {f"P01_01_frame_{f:010d}.jpg": v for f, v in values.items()}
    database = ref.write_lmdb(tmp_path / "obj", entries)
    output = tmp_path / "obj.h5"
    argv = ["features", "--lmdb", str(database), "--modality", "obj", "--out", str(output)]
    assert main([*argv, "--dtype", "float16", "--no-progress"]) == 0
    store = FeatureStore(output)
    assert store.info.storage_dtype == "float16"
    rows = store.lookup("P01_01", np.array([1, 2, 3]))
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, np.stack(list(values.values())), rtol=2**-11, atol=1e-7)
    store.close()
    # Completing the file as float32 is refused with a message naming it and what to do.
    assert main([*argv, "--no-progress"]) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"rulstm-import: error: {output} already holds 1 complete video of different "
        "features: storage dtype is 'float16', not 'float32'. Delete the file or choose "
        "another --out path"
    )


def test_a_failed_conversion_does_not_block_a_rerun_with_other_settings(
    ref, tmp_path: Path, capsys
):
    """A conversion that fails before finishing a video leaves a file with the layout's
    attributes; a rerun with another --dtype recreates it instead of refusing it."""
    pytest.importorskip("lmdb")
    entries = {f"P01_01_frame_{f:010d}.jpg": np.full(4, f, np.float32) for f in (1, 2)}
    bad = ref.write_lmdb(tmp_path / "bad", {**entries, "P01_01_thumbnail.png": np.zeros(4)})
    output = tmp_path / "feat.h5"
    argv = ["features", "--modality", "feat", "--out", str(output), "--no-progress"]
    assert main([*argv, "--lmdb", str(bad)]) == 1
    assert "'P01_01_thumbnail.png' does not match" in capsys.readouterr().err
    assert read_file_info(output).storage_dtype == "float32"  # left behind, no video
    good = ref.write_lmdb(tmp_path / "good", entries)
    assert main([*argv, "--lmdb", str(good), "--dtype", "float16"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "2 rows from 2 LMDB entries; 1 videos written" in captured.out
    assert read_file_info(output).storage_dtype == "float16"


def test_import_checkpoint(ref, tmp_path: Path, generator: torch.Generator, capsys):
    state = ref.reference_fusion_state_dict(generator)
    source = ref.save_reference_checkpoint(tmp_path / "fusion_best.pth.tar", state)
    output = tmp_path / "fusion.ckpt"
    assert main(["checkpoint", "--in", str(source), "--out", str(output)]) == 0
    assert "rulstm.models.RULSTMFusion" in capsys.readouterr().out
    assert torch.load(output, weights_only=True)["state_dict"]["net.attention.0.weight"].shape == (
        12,
        48,
    )


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no traceback, no usage block
    return lines[0]


def test_errors_exit_with_one_line(tmp_path: Path, capsys):
    missing = tmp_path / "none.pth.tar"
    assert main(["checkpoint", "--in", str(missing), "--out", "x.ckpt"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("rulstm-import: error: checkpoint not found") and str(missing) in line
    assert main(["features"]) == 2  # argparse: required arguments, named
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("rulstm-import: error: ") and "--lmdb" in line


def test_any_modality_with_an_explicit_dim(ref, tmp_path: Path, capsys):
    pytest.importorskip("lmdb")
    entries = {f"P01_01_frame_{f:010d}.jpg": np.full(6, f, np.float32) for f in (1, 2)}
    database = ref.write_lmdb(tmp_path / "depth", entries)
    argv = ["features", "--lmdb", str(database), "--out", str(tmp_path / "x.h5"), "--no-progress"]
    assert main([*argv, "--modality", "depth", "--dim", "6"]) == 0
    assert capsys.readouterr().err == ""
    # A released modality with another size converts, with a one-line warning.
    argv[4] = str(tmp_path / "rgb.h5")
    assert main([*argv, "--modality", "rgb", "--dim", "6"]) == 0
    assert _one_line(capsys.readouterr().err).startswith("rulstm-import: warning: " + str(database))
    # A --dim that does not match the data is an error naming the database.
    argv[4] = str(tmp_path / "y.h5")
    assert main([*argv, "--modality", "depth", "--dim", "5"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "rulstm-import: error: " in line and "dim=5 was asked" in line


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        main(["checkpoint", "--in", str(tmp_path / "none.pth.tar"), "--out", "x", "--debug"])
    monkeypatch.setenv("RULSTM_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["checkpoint", "--in", str(tmp_path / "none.pth.tar"), "--out", "x"])
