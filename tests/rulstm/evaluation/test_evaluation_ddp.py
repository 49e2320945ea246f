"""The evaluator under DDP (2 CPU processes, gloo): outcomes gathered, padding removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VERBS = [0, 0, 1, 1, 2, 2, 3, 3]
NOUNS = [0, 1, 0, 1, 0, 1, 0, 1]

# Run as a script: the "ddp" strategy re-launches sys.argv in every process.
SCRIPT = """
import json, os, sys
import numpy as np, torch, lightning as L
from torch.utils.data import DataLoader
from epic_protocol import read_actions_csv
from rulstm.evaluation import AnticipationEvaluator, evaluate_ek55, load_many_shot, rank_outcomes

folder = sys.argv[1]
VERBS, NOUNS = np.array(VERBS_LIST), np.array(NOUNS_LIST)
rng = np.random.default_rng(0)
n = 7  # two processes: the distributed sampler pads to 8 with a repeat
scores = rng.normal(size=(n, 8, 8)).astype(np.float32)
actions = rng.integers(0, 8, n)
valid = np.arange(n) != 2
rows = [
    {
        "scores": torch.from_numpy(scores[i]),
        "valid": torch.tensor(bool(valid[i])),
        "verb": torch.tensor(int(VERBS[actions[i]])),
        "noun": torch.tensor(int(NOUNS[actions[i]])),
        "action": torch.tensor(int(actions[i])),
        "uid": f"u{i}",
    }
    for i in range(n)
]


class Replay(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        return dict(batch)


files = dict(
    actions=f"{folder}/actions.csv",
    many_shot_verbs=f"{folder}/msv.csv",
    many_shot_nouns=f"{folder}/msn.csv",
)
evaluator = AnticipationEvaluator(
    protocol="ek55", out_dir=f"{folder}/out", name="ddp", num_verbs=5, num_nouns=2, **files
)
trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", logger=False, callbacks=[evaluator],
    enable_progress_bar=False, enable_model_summary=False,
)
trainer.test(Replay(), dataloaders=DataLoader(rows, batch_size=2), verbose=False)
if trainer.is_global_zero:
    vocabulary = read_actions_csv(files["actions"], num_verbs=5, num_nouns=2)
    direct = evaluate_ek55(
        rank_outcomes(
            scores, vocabulary=vocabulary, verb=VERBS[actions], noun=NOUNS[actions],
            action=actions, uids=[f"u{i}" for i in range(n)], valid=valid,
        ),
        many_shot=load_many_shot(
            vocabulary, verbs_csv=files["many_shot_verbs"], nouns_csv=files["many_shot_nouns"]
        ),
    )
    report = evaluator.report
    print(json.dumps({
        "world": trainer.world_size,
        "samples": report.num_samples,
        "evaluated": report.num_evaluated,
        "equal": report.series == direct.series and report.mean_tta == direct.mean_tta,
        "files": sorted(os.listdir(f"{folder}/out")),
    }))
"""


@pytest.mark.slow
def test_evaluator_gathers_across_processes(tmp_path: Path):
    (tmp_path / "actions.csv").write_text(
        "id,action,verb,noun\n"
        + "".join(f"{i}, a{i},{v},{n}\n" for i, (v, n) in enumerate(zip(VERBS, NOUNS)))
    )
    (tmp_path / "msv.csv").write_text("verb_class,verb\n0,take\n")
    (tmp_path / "msn.csv").write_text("noun_class,noun\n1,pan\n")
    script = tmp_path / "ddp_evaluation.py"
    script.write_text(SCRIPT.replace("VERBS_LIST", repr(VERBS)).replace("NOUNS_LIST", repr(NOUNS)))
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {
        "world": 2,
        "samples": 7,  # the sampler's repeated sample was removed
        "evaluated": 6,  # EK55 leaves the discarded sample out
        "equal": True,
        "files": ["accuracy_ek55.png", "ddp.csv", "ddp.json", "ddp.png"],
    }
