"""rulstm-quickstart --task lta end to end on a small kitchen: the generator's Ego4D files,
LTA-only extraction, fit, predict (outputs.json), score, and the model / prior / oracle table."""

from __future__ import annotations

import json

import pytest

from rulstm_apps.quickstart import build_parser
from rulstm_apps.quickstart_lta import prior_sequences, run_lta
from rulstm_apps.quickstart_steps import QuickstartError
from synthetic_kitchen.generate import DatasetSize

SMALL = DatasetSize(
    participants=2,
    videos_per_participant=2,
    validation_videos_per_participant=1,
    actions_per_video=24,
    width=96,
    height=72,
)


@pytest.mark.slow
def test_small_lta_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "lta"
    summary = run_lta(out, preset=SMALL, epochs=1)
    printed = capsys.readouterr().out
    outputs = json.loads((out / "outputs.json").read_text())
    # 2 validation videos of 24 actions: windows i = 0..2, ids <video>_<last observed idx>
    assert sorted(outputs) == [f"{v}_{i}" for v in ("P01_02", "P02_02") for i in (1, 2, 3)]
    assert all(len(e["verb"]) == 5 and len(e["verb"][0]) == 20 for e in outputs.values())
    assert set(summary) == {
        "model (RU-LSTM forecaster, K=5)",
        "prior (most frequent, K=1)",
        "oracle reference (recipe, K=5)",
    }
    for scores in summary.values():
        assert scores["num_windows"] == 6
        assert 0.0 <= scores["verb"]["ED@20"] <= 1.0
    assert "oracle reference" in printed and "not a bound" in printed
    commands = (out / "commands.sh").read_text()
    for program in (
        "rulstm-extract --videos",
        "rulstm fit -c",
        "rulstm predict -c",
        "rulstm-score",
    ):
        assert program in commands
    assert "fho_lta_train.json" in commands and "--only-needed" in commands
    # the features hold only the LTA step frames (4 per action), not every frame
    import h5py

    with h5py.File(out / "features" / "rgb.h5") as handle:
        assert len(handle["P01_01"]["frames"]) <= 4 * 24
    with pytest.raises(QuickstartError, match="already holds a quickstart run"):
        run_lta(out, preset=SMALL, epochs=1)


def test_prior_is_the_most_frequent_action_per_position():
    class W:  # a window's future labels only
        def __init__(self, verbs, nouns):
            import numpy as np

            self.future = verbs
            self.future_verbs, self.future_nouns = np.array(verbs), np.array(nouns)

    windows = [W([1, 2], [0, 0]), W([1, 3], [0, 1]), W([2, 3], [5, 1])]
    verbs, nouns = prior_sequences(windows, 4)
    assert verbs.shape == (4, 1, 2)
    assert verbs[0, 0].tolist() == [1, 3] and nouns[0, 0].tolist() == [0, 1]


def test_the_task_option():
    assert build_parser().parse_args(["--task", "lta"]).task == "lta"
    assert build_parser().parse_args([]).task == "anticipation"
