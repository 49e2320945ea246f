"""``rulstm-demo`` ends a run on bad input with one line ``rulstm-demo: error: ...`` and a
non-zero exit status, no traceback (``--debug`` shows it)."""

from __future__ import annotations

import pytest
import torch

from rulstm_apps.demo import main


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    return errors[0]


def test_missing_and_foreign_checkpoints_are_one_line(demo_args, tmp_path, capsys):
    missing = tmp_path / "absent.ckpt"
    assert main(demo_args(missing)) == 1
    assert _error_line(capsys.readouterr().err) == (
        f"rulstm-demo: error: checkpoint not found: {missing}"
    )
    foreign = tmp_path / "plain.ckpt"  # a checkpoint of another kind: weights only
    torch.save({"state_dict": {"net.x": torch.zeros(1)}}, foreign)
    assert main(demo_args(foreign)) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"rulstm-demo: error: {foreign} does not describe its network")


def test_unknown_option_is_one_line_and_debug_shows_the_traceback(demo_args, tmp_path, capsys):
    assert main(["--nosuch", "1", *demo_args(tmp_path / "x.ckpt")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("rulstm-demo: error: ") and "--nosuch" in line
    with pytest.raises(ValueError, match="checkpoint not found"):  # the traceback, unformatted
        main(["--debug", *demo_args(tmp_path / "absent.ckpt")])
