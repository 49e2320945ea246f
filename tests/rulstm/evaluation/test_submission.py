"""Challenge files: scores, building, every validation rule broken once, writing, callback."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from epic_protocol.annotations import ActionVocabulary
from rulstm.evaluation import (
    SubmissionError,
    SubmissionWriter,
    SupervisionLevels,
    build_submission,
    read_split_ids,
    submission_scores,
    validate_submission,
    write_submission,
)

NUM_ACTIONS = 120
# EK100 label spaces: 97 verbs, 300 nouns; action a is (a % 97, a).
EK100_VOCABULARY = ActionVocabulary(
    verbs=np.arange(NUM_ACTIONS) % 97,
    nouns=np.arange(NUM_ACTIONS),
    names=tuple(str(a) for a in range(NUM_ACTIONS)),
    num_verbs=97,
    num_nouns=300,
)
EK55_VOCABULARY = ActionVocabulary(
    verbs=np.arange(NUM_ACTIONS) % 125,
    nouns=np.arange(NUM_ACTIONS),
    names=tuple(str(a) for a in range(NUM_ACTIONS)),
    num_verbs=125,
    num_nouns=352,
)
UIDS = ["P01_101_0", "P01_101_1", "P01_101_2"]
SLS = SupervisionLevels(1, 4, 3)


def _scores(valid=(True, True, False)):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(UIDS), NUM_ACTIONS)).astype(np.float32)
    return logits, submission_scores(
        logits, vocabulary=EK100_VOCABULARY, uids=UIDS, valid=np.array(valid)
    )


def test_submission_scores():
    logits, scores = _scores()
    probabilities = np.exp(logits[0]) / np.exp(logits[0]).sum()
    # Verb 3 is used by actions 3 and 100.
    assert scores.verb[0, 3] == pytest.approx(probabilities[3] + probabilities[100], rel=1e-5)
    assert scores.noun[0, 250] == 0.0  # no action uses noun 250
    assert scores.top_actions.shape == (3, 100)
    assert scores.top_actions[0].tolist() == np.argsort(-logits[0])[:100].tolist()
    assert scores.top_action_scores[0, 0] == pytest.approx(logits[0].max())
    # The discarded sample: zeros everywhere, "top" actions in id order.
    assert not scores.verb[2].any() and not scores.top_action_scores[2].any()
    assert scores.top_actions[2].tolist() == list(range(100))


def test_ek100_submission_is_complete():
    _, scores = _scores()
    submission = build_submission(
        scores, vocabulary=EK100_VOCABULARY, protocol="ek100", sls=SLS, expected_ids=UIDS
    )
    assert submission["version"] == "0.2" and submission["challenge"] == "action_anticipation"
    assert (submission["sls_pt"], submission["sls_tl"], submission["sls_td"]) == (1, 4, 3)
    entry = submission["results"]["P01_101_0"]
    assert list(entry["verb"]) == [str(v) for v in range(97)]
    assert len(entry["noun"]) == 300 and len(entry["action"]) == 100
    best = int(scores.top_actions[0, 0])
    assert f"{best % 97},{best}" in entry["action"]


def test_ek55_submission_has_no_sls_and_its_own_class_counts(tmp_path: Path):
    logits = np.random.default_rng(1).normal(size=(2, NUM_ACTIONS))
    scores = submission_scores(logits, vocabulary=EK55_VOCABULARY, uids=["1924", "1925"])
    path = write_submission(
        tmp_path / "seen.json", scores, vocabulary=EK55_VOCABULARY, protocol="ek55"
    )
    submission = json.loads(path.read_text())
    assert submission["version"] == "0.1" and "sls_pt" not in submission
    assert len(submission["results"]["1924"]["verb"]) == 125
    assert len(submission["results"]["1924"]["noun"]) == 352
    validate_submission(submission, protocol="ek55", expected_ids=["1924", "1925"])


def test_written_file_reads_back_valid(tmp_path: Path):
    _, scores = _scores()
    path = write_submission(
        tmp_path / "test.json",
        scores,
        vocabulary=EK100_VOCABULARY,
        protocol="ek100",
        sls=SLS,
        expected_ids=UIDS,
    )
    submission = json.loads(path.read_text())
    validate_submission(submission, protocol="ek100", expected_ids=UIDS)
    assert submission["results"]["P01_101_1"]["verb"]["5"] == pytest.approx(
        float(scores.verb[1, 5])
    )
    assert not list(tmp_path.glob("*.partial"))


def _valid_submission() -> dict:
    _, scores = _scores()
    return build_submission(scores, vocabulary=EK100_VOCABULARY, protocol="ek100", sls=SLS)


def _break(submission: dict, rule: str) -> None:
    entry = submission["results"]["P01_101_1"]
    if rule == "version":
        submission["version"] = "0.1"
    elif rule == "challenge":
        submission["challenge"] = "action_recognition"
    elif rule == "sls-missing":
        del submission["sls_td"]
    elif rule == "sls-range":
        submission["sls_pt"] = 6
    elif rule == "missing-id":
        del submission["results"]["P01_101_2"]
    elif rule == "unexpected-id":
        submission["results"]["P99_1_1"] = copy.deepcopy(entry)
    elif rule == "entry":
        del entry["noun"]
    elif rule == "class-id":
        entry["verb"]["take"] = entry["verb"].pop("0")
    elif rule == "unexpected-class":
        entry["verb"]["97"] = 0.5
    elif rule == "missing-class":
        del entry["noun"]["5"]
    elif rule == "action-count":
        entry["action"].pop(next(iter(entry["action"])))
    elif rule == "action-key-format":
        entry["action"]["3-3"] = entry["action"].pop(next(iter(entry["action"])))
    elif rule == "action-key-range":
        entry["action"]["97,0"] = entry["action"].pop(next(iter(entry["action"])))
    elif rule == "score-string":
        entry["noun"]["7"] = "0.5"
    elif rule == "score-nan":
        entry["action"][next(iter(entry["action"]))] = math.nan
    elif rule == "score-bool":
        entry["verb"]["1"] = True


@pytest.mark.parametrize(
    ("broken", "rule", "names"),
    [
        ("version", "version", "0.2"),
        ("challenge", "challenge", "action_recognition"),
        ("sls-missing", "sls", "sls_td"),
        ("sls-range", "sls", "sls_pt"),
        ("missing-id", "ids", "P01_101_2"),
        ("unexpected-id", "ids", "P99_1_1"),
        ("entry", "entry", "P01_101_1"),
        ("class-id", "class-id", "P01_101_1"),
        ("unexpected-class", "unexpected-class", "P01_101_1"),
        ("missing-class", "missing-class", "P01_101_1"),
        ("action-count", "action-count", "P01_101_1"),
        ("action-key-format", "action-key", "3-3"),
        ("action-key-range", "action-key", "97,0"),
        ("score-string", "score", "P01_101_1"),
        ("score-nan", "score", "P01_101_1"),
        ("score-bool", "score", "P01_101_1"),
    ],
)
def test_each_rule_broken_once(broken: str, rule: str, names: str):
    submission = _valid_submission()
    validate_submission(submission, protocol="ek100", expected_ids=UIDS)
    _break(submission, broken)
    with pytest.raises(SubmissionError, match=rf"^\[{rule}\] .*{names}") as error:
        validate_submission(submission, protocol="ek100", expected_ids=UIDS)
    assert error.value.rule == rule


def test_write_fails_before_writing(tmp_path: Path):
    _, scores = _scores()
    target = tmp_path / "test.json"
    with pytest.raises(SubmissionError, match=r"\[ids\] .*P01_101_9"):
        write_submission(
            target,
            scores,
            vocabulary=EK100_VOCABULARY,
            protocol="ek100",
            sls=SLS,
            expected_ids=[*UIDS, "P01_101_9"],
        )
    scores.noun[1, 3] = np.inf
    with pytest.raises(SubmissionError, match=r"\[score\] segment P01_101_1"):
        write_submission(target, scores, vocabulary=EK100_VOCABULARY, protocol="ek100", sls=SLS)
    with pytest.raises(SubmissionError, match=r"\[sls\]"):
        write_submission(target, scores, vocabulary=EK100_VOCABULARY, protocol="ek100")
    assert list(tmp_path.iterdir()) == []


def test_supervision_levels_range():
    with pytest.raises(SubmissionError, match="sls_td must be an integer in 0..5, got -1"):
        SupervisionLevels(0, 5, -1)
    with pytest.raises(SubmissionError, match="sls_pt"):
        SupervisionLevels(1.5, 0, 0)


def test_read_split_ids(tmp_path: Path):
    (tmp_path / "ek55.csv").write_text(
        "01924, P01_11, 0000000001, 0000000056\n00000, P01_01, 1, 2\n"
    )
    assert read_split_ids(tmp_path / "ek55.csv") == ["1924", "0"]
    (tmp_path / "ek100.csv").write_text("P01_101_0,P01_101,85,116\n")
    assert read_split_ids(tmp_path / "ek100.csv") == ["P01_101_0"]
    (tmp_path / "epic.csv").write_text("narration_id,participant_id\nP01_101_0,P01\n")
    assert read_split_ids(tmp_path / "epic.csv") == ["P01_101_0"]


def test_read_split_ids_with_byte_order_mark(tmp_path: Path):
    """Spreadsheets' "CSV UTF-8" starts with a BOM: the same ids as without it."""
    (tmp_path / "ek55.csv").write_text("00000, P01_01, 1, 2\n", encoding="utf-8-sig")
    assert read_split_ids(tmp_path / "ek55.csv") == ["0"]
    (tmp_path / "epic.csv").write_text("narration_id,x\nP01_101_0,P01\n", encoding="utf-8-sig")
    assert read_split_ids(tmp_path / "epic.csv") == ["P01_101_0"]


class _Replay(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def predict_step(self, batch, batch_idx):
        return dict(batch)


def test_submission_writer_callback(tmp_path: Path):
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "id,verb,noun,action\n" + "".join(f"{a},{a % 97},{a},x\n" for a in range(NUM_ACTIONS))
    )
    split = tmp_path / "test_timestamps.csv"
    split.write_text("".join(f"{uid},P01_101,{10 + i},{20 + i}\n" for i, uid in enumerate(UIDS)))
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(len(UIDS), 8, NUM_ACTIONS)).astype(np.float32)
    rows = [
        {"scores": torch.from_numpy(scores[i]), "valid": torch.tensor(i != 0), "uid": uid}
        for i, uid in enumerate(UIDS)
    ]
    writer = SubmissionWriter(
        protocol="ek100",
        path=str(tmp_path / "out" / "test.json"),
        actions=str(actions),
        expected_ids=str(split),
        sls_pt=2,
        sls_tl=4,
        sls_td=3,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(_Replay(), dataloaders=DataLoader(rows, batch_size=2), return_predictions=False)
    submission = json.loads((tmp_path / "out" / "test.json").read_text())
    assert submission["sls_pt"] == 2 and sorted(submission["results"]) == sorted(UIDS)
    # Scores at 1 s (step -4): the best action of sample 1 at that step is first.
    best = int(np.argmax(scores[1, -4]))
    assert next(iter(submission["results"]["P01_101_1"]["action"])) == f"{best % 97},{best}"
    assert set(submission["results"]["P01_101_0"]["noun"].values()) == {0.0}


def test_submission_writer_needs_sls_for_ek100():
    with pytest.raises(SubmissionError, match=r"\[sls\]"):
        SubmissionWriter(protocol="ek100", path="x.json")


class _ReplayAt(_Replay):
    """A model trained with ``alpha`` (read by the writer from its hyper-parameters)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.save_hyperparameters()


def _predict(tmp_path: Path, model: L.LightningModule, steps: int, **trainer_kwargs):
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "id,verb,noun,action\n" + "".join(f"{a},{a % 97},{a},x\n" for a in range(NUM_ACTIONS))
    )
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(len(UIDS), steps, NUM_ACTIONS)).astype(np.float32)
    rows = [
        {"scores": torch.from_numpy(scores[i]), "valid": torch.tensor(True), "uid": uid}
        for i, uid in enumerate(UIDS)
    ]
    path = tmp_path / "out" / "test.json"
    writer = SubmissionWriter(
        protocol="ek100", path=str(path), actions=str(actions), sls_pt=1, sls_tl=4, sls_td=3
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.predict(model, dataloaders=DataLoader(rows, batch_size=2), return_predictions=False)
    return path, scores


def test_submission_writer_finds_1s_from_the_models_alpha(tmp_path: Path):
    # alpha 0.5, 4 steps: outputs at 2.0, 1.5, 1.0, 0.5 s -> 1.0 s is step -2 (not -4).
    path, scores = _predict(tmp_path, _ReplayAt(alpha=0.5), steps=4)
    submission = json.loads(path.read_text())
    for row, uid in enumerate(UIDS):
        best = int(np.argmax(scores[row, -2]))
        assert next(iter(submission["results"][uid]["action"])) == f"{best % 97},{best}"
    with pytest.raises(ValueError, match="alpha=0.25 but the model was trained with"):
        SubmissionWriter(
            protocol="ek100",
            path="x.json",
            actions=str(tmp_path / "actions.csv"),
            sls_pt=1,
            sls_tl=4,
            sls_td=3,
            alpha=0.25,
        ).setup(None, _ReplayAt(alpha=0.5), "predict")


def test_submission_writer_never_writes_a_partial_run(tmp_path: Path):
    path, _ = _predict(tmp_path, _Replay(), steps=8, limit_predict_batches=1)
    assert not path.exists()
    assert not path.parent.exists() or list(path.parent.iterdir()) == []
