"""``rulstm-import`` end to end on tiny files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_errors_exit_with_a_message(tmp_path: Path, capsys):
    assert main(["checkpoint", "--in", str(tmp_path / "none.pth.tar"), "--out", "x.ckpt"]) == 1
    assert "rulstm-import: error: checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["features"])  # argparse: required arguments
