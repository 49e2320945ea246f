"""Evaluation protocols on hand-built scores, report files, plots and the Lightning callback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from epic_protocol.annotations import ActionVocabulary
from rulstm.evaluation import (
    AnticipationEvaluator,
    AnticipationReport,
    EK100Subsets,
    ManyShotClasses,
    RankedOutcomes,
    evaluate_ek55,
    evaluate_ek100,
    load_many_shot,
    load_reports,
    plot_accuracy,
    rank_outcomes,
)
from rulstm.metrics import NEVER_RANKED, marginalize, true_class_rank

# Eight actions over verbs 0..3 (verb 4 unused) and nouns 0..1.
VERBS = [0, 0, 1, 1, 2, 2, 3, 3]
NOUNS = [0, 1, 0, 1, 0, 1, 0, 1]
VOCABULARY = ActionVocabulary(
    verbs=np.array(VERBS),
    nouns=np.array(NOUNS),
    names=tuple(f"a{i}" for i in range(8)),
    num_verbs=5,
    num_nouns=2,
)
TIMES = (0.5, 0.25)
UIDS = ["P01_01_0", "P01_01_1", "P18_01_0", "P18_01_1"]
ACTIONS = np.array([0, 1, 2, 1])
# Desired rank of the true action per (sample, step).
RANKS = np.array([[1, 1], [3, 1], [6, 8], [2, 5]])


def scores_with_ranks(ranks: np.ndarray, labels: np.ndarray, num_classes: int = 8) -> np.ndarray:
    """Distinct logits 0..C-1 arranged so that the true class has the given rank."""
    scores = np.zeros((*ranks.shape, num_classes), dtype=np.float32)
    for i, j in np.ndindex(ranks.shape):
        true_value = num_classes - ranks[i, j]
        others = [v for v in range(num_classes) if v != true_value]
        row = np.empty(num_classes)
        row[labels[i]] = true_value
        row[[c for c in range(num_classes) if c != labels[i]]] = others
        scores[i, j] = row
    return scores


SCORES = scores_with_ranks(RANKS, ACTIONS)
NO_SUBSETS = EK100Subsets(
    unseen=frozenset(), tail={t: frozenset() for t in ("verb", "noun", "action")}
)


def outcomes(valid=(True, True, True, True)) -> RankedOutcomes:
    return rank_outcomes(
        SCORES,
        vocabulary=VOCABULARY,
        verb=np.array(VERBS)[ACTIONS],
        noun=np.array(NOUNS)[ACTIONS],
        action=ACTIONS,
        uids=UIDS,
        valid=np.array(valid),
    )


def test_scores_helper_gives_the_ranks():
    assert true_class_rank(SCORES, ACTIONS).tolist() == RANKS.tolist()


def test_rank_outcomes_marginalises_and_zeroes_discarded_samples():
    result = outcomes(valid=(True, True, True, False))
    assert result.ranks["action"].tolist() == [[1, 1], [3, 1], [6, 8], [8, 8]]
    verb_scores = marginalize(SCORES, VERBS, num_classes=5)
    expected_verb = true_class_rank(verb_scores, np.array(VERBS)[ACTIONS])
    assert result.ranks["verb"][:3].tolist() == expected_verb[:3].tolist()
    # A discarded sample scores zero everywhere: every class ties with the true one.
    assert result.ranks["verb"][3].tolist() == [5, 5]
    assert result.ranks["noun"][3].tolist() == [2, 2]


def test_unknown_labels_are_left_out_of_that_task():
    result = rank_outcomes(
        SCORES,
        vocabulary=VOCABULARY,
        verb=[0, 0, -1, 0],
        noun=[0, 1, -1, 1],
        action=[0, 1, -1, 1],
        uids=UIDS,
    )
    assert result.ranks["action"][2].tolist() == [0, 0]
    assert not result.outside_vocabulary.any()
    many_shot = ManyShotClasses(frozenset({0}), frozenset({0}), frozenset({1, 2}))
    report = evaluate_ek55(result, many_shot=many_shot, times=TIMES)
    # Top-1 over samples 0, 1, 3 only: ranks [1, 3, 2] at the first step.
    assert report.value("action", "top1", time=0.5) == pytest.approx(100 / 3)


def test_pairs_outside_the_vocabulary_are_action_misses_and_reported():
    # Sample 2 is labelled (verb 1, noun 1), a pair that is no action of the vocabulary.
    result = rank_outcomes(
        SCORES,
        vocabulary=VOCABULARY,
        verb=[0, 0, 1, 0],
        noun=[0, 1, 1, 1],
        action=[0, 1, -1, 1],
        uids=UIDS,
    )
    assert result.outside_vocabulary.tolist() == [False, False, True, False]
    assert result.ranks["action"][2].tolist() == [NEVER_RANKED] * 2
    many_shot = ManyShotClasses(frozenset({0}), frozenset({0}), frozenset({1, 2}))
    report = evaluate_ek55(result, many_shot=many_shot, times=TIMES)
    # Top-1 over all 4 samples: ranks [1, 3, miss, 2] at the first step.
    assert report.value("action", "top1", time=0.5) == pytest.approx(25.0)
    # Verb and noun still score sample 2 normally.
    assert result.ranks["verb"][2].min() >= 1
    assert report.num_outside_vocabulary == 1
    assert report.outside_vocabulary_uids == (UIDS[2],)
    assert "1 segments have a (verb, noun) pair outside the vocabulary" in report.table()
    data = report.to_dict()
    assert data["outside_vocabulary"] == {"count": 1, "first_uids": [UIDS[2]]}
    assert type(report).from_dict(data).outside_vocabulary_uids == (UIDS[2],)


def test_ek100_recall_counts_a_pair_outside_the_vocabulary_as_its_own_missed_class():
    # EK100 keys actions by (verb, noun): an unknown pair is a class whose recall is 0.
    unlabelled = rank_outcomes(
        SCORES,
        vocabulary=VOCABULARY,
        verb=[0, 0, -1, 0],
        noun=[0, 1, -1, 1],
        action=[0, 1, -1, 1],
        uids=UIDS,
    )
    outside = rank_outcomes(
        SCORES,
        vocabulary=VOCABULARY,
        verb=[0, 0, 1, 0],
        noun=[0, 1, 1, 1],
        action=[0, 1, -1, 1],
        uids=UIDS,
    )
    with_unlabelled = evaluate_ek100(unlabelled, subsets=NO_SUBSETS, times=TIMES)
    with_outside = evaluate_ek100(outside, subsets=NO_SUBSETS, times=TIMES)
    # Classes {0, 1}: both in the top 5 at 0.5 s -> 100 %; with the unknown pair as a third
    # class that is never predicted: (100 + 100 + 0) / 3.
    assert with_unlabelled.value("action", "recall5", time=1.0) == pytest.approx(100.0)
    assert with_outside.value("action", "recall5", time=1.0) == pytest.approx(200 / 3)


def test_ek55_report_by_hand():
    many_shot = ManyShotClasses(frozenset({0, 1}), frozenset({0}), frozenset({1, 2}))
    report = evaluate_ek55(outcomes(), many_shot=many_shot, times=TIMES, name="rgb")
    assert report.get("action", "top1").values == pytest.approx((25.0, 50.0))
    assert report.get("action", "top5").values == pytest.approx((75.0, 75.0))
    # Many-shot actions {1, 2}: class 1 always in the top 5, class 2 never.
    assert report.get("action", "recall5", "many_shot").values == pytest.approx((50.0, 50.0))
    # TtA(5): samples 0, 1, 3 hit at 0.5 s, sample 2 never.
    assert report.mean_tta["action"] == pytest.approx(0.375)
    assert report.num_evaluated == 4 and report.num_discarded == 0
    assert report.headline == report.value("action", "top5", time=1.0)
    assert [s.key for s in report.series][:3] == [
        "verb/top1",
        "verb/top5",
        "verb/recall5_many_shot",
    ]


def test_ek55_drops_discarded_samples_and_zeros_mode_counts_them():
    many_shot = ManyShotClasses(frozenset({0}), frozenset({0}), frozenset({0, 1, 2}))
    valid = (True, True, True, False)
    dropped = evaluate_ek55(outcomes(valid), many_shot=many_shot, times=TIMES)
    assert dropped.num_evaluated == 3 and dropped.num_discarded == 1
    assert dropped.get("action", "top1").values == pytest.approx((100 / 3, 200 / 3))
    zeros = evaluate_ek55(outcomes(valid), many_shot=many_shot, times=TIMES, discarded="zeros")
    assert zeros.get("action", "top1").values == pytest.approx((25.0, 50.0))


def test_ek100_report_by_hand():
    subsets = EK100Subsets(
        unseen=frozenset({"P18"}),  # a participant id: every P18 narration is unseen
        tail={
            "verb": frozenset(),
            "noun": frozenset({"P01_01_0"}),
            "action": frozenset({"P01_01_1", "P18_01_0"}),
        },
    )
    report = evaluate_ek100(outcomes(), subsets=subsets, times=TIMES)
    # Overall: class 0 hit, class 1 (samples 1, 3) hit, class 2 missed -> 2/3.
    assert report.get("action", "recall5").values == pytest.approx((200 / 3, 200 / 3))
    # Unseen (samples 2, 3): class 2 missed, class 1 hit.
    assert report.get("action", "recall5", "unseen").values == pytest.approx((50, 50))
    # Tail actions (samples 1, 2): class 1 hit, class 2 missed.
    assert report.get("action", "recall5", "tail").values == pytest.approx((50, 50))
    # No tail-verb sample: NaN, shown as such and left out of the logged metrics.
    assert all(math.isnan(v) for v in report.get("verb", "recall5", "tail").values)
    assert "test/verb/recall5_tail/0.50s" not in report.metrics()
    assert report.metrics()["test/action/recall5_unseen/0.25s"] == pytest.approx(50)
    assert report.headline == report.value("action", "recall5", time=1.0)


def test_unseen_by_narration_ids():
    subsets = EK100Subsets(unseen=frozenset({"P01_01_1"}), tail=NO_SUBSETS.tail)
    assert subsets.unseen_mask(UIDS).tolist() == [False, True, False, False]


def test_report_files_round_trip(tmp_path: Path):
    many_shot = ManyShotClasses(frozenset({0}), frozenset({0}), frozenset({1, 2}))
    report = evaluate_ek55(outcomes(), many_shot=many_shot, times=TIMES, name="rgb")
    table = report.table()
    assert "0.50s" in table and "Action Top-5 Accuracy" in table and "Mean TtA(5)" in table
    again = AnticipationReport.from_json(report.to_json(tmp_path / "rgb.json"))
    assert again.series == report.series and again.mean_tta == report.mean_tta
    rows = (tmp_path / "rgb.csv").read_text() if report.to_csv(tmp_path / "rgb.csv") else ""
    lines = rows.strip().splitlines()
    assert lines[0] == "name,protocol,task,metric,subset,anticipation_s,value,key"
    assert len(lines) == 1 + 9 * 2 + 3  # 9 series x 2 times + 3 TtA rows
    assert "rgb,ek55,action,top5,overall,0.5,75.0,test/action/top5/0.50s" in lines


def test_plot_accuracy_writes_a_png(tmp_path: Path):
    many_shot = ManyShotClasses(frozenset({0}), frozenset({0}), frozenset({1, 2}))
    rgb = evaluate_ek55(outcomes(), many_shot=many_shot, times=TIMES, name="rgb")
    fusion = evaluate_ek55(outcomes((True, False, True, True)), many_shot=many_shot, times=TIMES)
    path = plot_accuracy({"rgb": rgb, "fusion": fusion}, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ek100 = evaluate_ek100(outcomes(), subsets=NO_SUBSETS, times=TIMES)
    with pytest.raises(ValueError, match="different protocols"):
        plot_accuracy({"a": rgb, "b": ek100}, tmp_path / "mixed.png")


def test_many_shot_loading(tmp_path: Path):
    (tmp_path / "verbs.csv").write_text("verb_class,verb\n1,put\n")
    (tmp_path / "nouns.csv").write_text("noun_class,noun\n0,tap\n")
    (tmp_path / "actions.csv").write_text(
        'action_class,noun,noun_class,verb,verb_class\n"(3, 1)",x,1,y,3\n"(9, 9)",x,9,y,9\n'
    )
    files = {
        "verbs_csv": tmp_path / "verbs.csv",
        "nouns_csv": tmp_path / "nouns.csv",
        "actions_csv": tmp_path / "actions.csv",
    }
    reference = load_many_shot(VOCABULARY, **files)
    # Verb 1 (actions 2, 3) or noun 0 (actions 0, 2, 4, 6).
    assert reference.actions == {0, 2, 3, 4, 6}
    official = load_many_shot(VOCABULARY, **files, official_actions=True)
    assert official.actions == {7}  # (3, 1) is action 7; (9, 9) is not in the vocabulary


def test_builtin_many_shot_lists_have_the_published_sizes():
    from epic_protocol.annotations import read_actions_csv
    from rulstm.resources import resolve_path

    vocabulary = read_actions_csv(
        resolve_path("builtin:ek55/actions.csv"), num_verbs=125, num_nouns=352
    )
    many_shot = load_many_shot(vocabulary)
    assert (len(many_shot.verbs), len(many_shot.nouns)) == (26, 71)
    official = load_many_shot(vocabulary, official_actions=True)
    assert 0 < len(official.actions) <= 819


# --------------------------------------------------------------------------- callback


class _Replay(L.LightningModule):
    """Returns the stored outputs as its test_step result, like AnticipationModule."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        return dict(batch)


def _rows(scores: np.ndarray, valid=None) -> list[dict]:
    valid = valid if valid is not None else [True] * len(UIDS)
    return [
        {
            "scores": torch.from_numpy(scores[i]),
            "valid": torch.tensor(valid[i]),
            "verb": torch.tensor(VERBS[ACTIONS[i]]),
            "noun": torch.tensor(NOUNS[ACTIONS[i]]),
            "action": torch.tensor(int(ACTIONS[i])),
            "uid": UIDS[i],
        }
        for i in range(len(UIDS))
    ]


def _write_ek55_files(tmp_path: Path) -> dict[str, str]:
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "id,action,verb,noun\n"
        + "".join(f"{i}, a{i},{v},{n}\n" for i, (v, n) in enumerate(zip(VERBS, NOUNS)))
    )
    (tmp_path / "msv.csv").write_text("verb_class,verb\n0,take\n")
    (tmp_path / "msn.csv").write_text("noun_class,noun\n1,pan\n")
    return {
        "actions": str(actions),
        "many_shot_verbs": str(tmp_path / "msv.csv"),
        "many_shot_nouns": str(tmp_path / "msn.csv"),
    }


def _trainer(tmp_path: Path, callback: L.Callback) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path / "logs"),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def test_callback_evaluates_logs_and_writes(tmp_path: Path, capsys):
    # 8 anticipation steps (2.0 ... 0.25 s); step -4 is 1.0 s.
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(len(UIDS), 8, 8)).astype(np.float32)
    files = _write_ek55_files(tmp_path)
    out = tmp_path / "evaluation"
    evaluator = AnticipationEvaluator(
        protocol="ek55", out_dir=str(out), name="rgb", num_verbs=5, num_nouns=2, **files
    )
    trainer = _trainer(tmp_path, evaluator)
    loader = DataLoader(_rows(scores), batch_size=3)
    results = trainer.test(_Replay(), dataloaders=loader, verbose=False)

    direct = evaluate_ek55(
        outcomes=rank_outcomes(
            scores,
            vocabulary=VOCABULARY,
            verb=np.array(VERBS)[ACTIONS],
            noun=np.array(NOUNS)[ACTIONS],
            action=ACTIONS,
            uids=UIDS,
        ),
        many_shot=ManyShotClasses(
            frozenset({0}),
            frozenset({1}),
            frozenset(a for a in range(8) if VERBS[a] == 0 or NOUNS[a] == 1),
        ),
    )
    assert evaluator.report is not None
    assert evaluator.report.series == direct.series
    logged = results[0]
    assert logged["test/action/top5/1.00s"] == pytest.approx(
        direct.value("action", "top5", time=1.0)
    )
    assert "test/verb/mean_tta5" in logged
    assert "EPIC-KITCHENS-55 action anticipation: rgb" in capsys.readouterr().out
    for name in ("rgb.json", "rgb.csv", "rgb.png", "accuracy_ek55.png"):
        assert (out / name).is_file(), name
    metrics_csv = next((tmp_path / "logs").rglob("metrics.csv")).read_text()
    assert "test/action/top5/1.00s" in metrics_csv

    # A second model in the same folder joins the combined plot.
    flow = AnticipationEvaluator(
        protocol="ek55", out_dir=str(out), name="flow", num_verbs=5, num_nouns=2, **files
    )
    _trainer(tmp_path, flow).test(_Replay(), dataloaders=loader, verbose=False)
    assert set(load_reports(out.glob("*.json"))) == {"rgb", "flow"}


def test_callback_ek100_challenge_json(tmp_path: Path):
    # The challenge format needs >= 100 actions, 97 verbs and 300 nouns.
    num_actions = 120
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "id,verb,noun,action\n" + "".join(f"{a},{a % 97},{a},x\n" for a in range(num_actions))
    )
    ids = tmp_path / "ids.csv"
    ids.write_text("P18_01_0\n")
    out = tmp_path / "out"
    evaluator = AnticipationEvaluator(
        protocol="ek100",
        actions=str(actions),
        out_dir=str(out),
        name="fusion",
        unseen_ids=str(ids),
        tail_verb_ids=str(ids),
        tail_noun_ids=str(ids),
        tail_action_ids=str(ids),
        write_json=True,
    )
    rng = np.random.default_rng(1)
    labels = torch.tensor([0, 5, 99, 110])
    rows = [
        {
            "scores": torch.from_numpy(rng.normal(size=(8, num_actions)).astype(np.float32)),
            "valid": torch.tensor(i != 3),
            "verb": labels[i] % 97,
            "noun": labels[i],
            "action": labels[i],
            "uid": UIDS[i],
        }
        for i in range(4)
    ]
    _trainer(tmp_path, evaluator).test(
        _Replay(), dataloaders=DataLoader(rows, batch_size=2), verbose=False
    )
    assert evaluator.report is not None and evaluator.report.num_discarded == 1
    submission = json.loads((out / "fusion_challenge.json").read_text())
    assert submission["version"] == "0.2" and submission["sls_pt"] == 1
    assert sorted(submission["results"]) == sorted(UIDS)
    discarded = submission["results"]["P18_01_1"]
    assert set(discarded["verb"].values()) == {0.0} and len(discarded["action"]) == 100
    assert len(submission["results"]["P01_01_0"]["noun"]) == 300


def test_callback_rejects_outputs_without_scores():
    evaluator = AnticipationEvaluator(protocol="ek55")
    with pytest.raises(TypeError, match="test_step to return a dict"):
        evaluator.add(None)


def test_report_json_is_strict(tmp_path: Path):
    report = evaluate_ek100(
        outcomes(),
        subsets=NO_SUBSETS,
        times=TIMES,
    )
    data = json.loads(report.to_json(tmp_path / "r.json").read_text())
    assert data["series"][3]["values"] == [None, None]  # unseen verb recall: no samples
    assert AnticipationReport.from_json(tmp_path / "r.json").num_samples == 4


def _trainer_with(tmp_path: Path, callback: L.Callback, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )


def test_partial_run_is_marked_and_never_replaces_a_full_report(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(len(UIDS), 8, 8)).astype(np.float32)
    files = _write_ek55_files(tmp_path)
    out = tmp_path / "evaluation"
    loader = DataLoader(_rows(scores), batch_size=3)  # 4 segments in 2 batches

    def evaluator(**kwargs) -> AnticipationEvaluator:
        return AnticipationEvaluator(
            protocol="ek55",
            out_dir=str(out),
            name="rgb",
            num_verbs=5,
            num_nouns=2,
            write_json=False,
            **files,
            **kwargs,
        )

    full = evaluator()
    _trainer_with(tmp_path, full).test(_Replay(), dataloaders=loader, verbose=False)
    assert full.report.partial is False and full.report.split_size == 4
    full_json = (out / "rgb.json").read_text()
    assert json.loads(full_json)["partial"] is False
    capsys.readouterr()

    # fast_dev_run sees one batch: 3 of 4 segments.
    partial = evaluator()
    _trainer_with(tmp_path, partial, fast_dev_run=True).test(
        _Replay(), dataloaders=loader, verbose=False
    )
    table = capsys.readouterr().out
    assert "EPIC-KITCHENS-55 action anticipation: rgb (PARTIAL run)" in table
    assert "3 of 4 segments of the split" in table
    assert (out / "rgb.json").read_text() == full_json  # the full report is kept
    written = json.loads((out / "rgb.partial.json").read_text())
    assert written["partial"] is True and written["num_samples"] == 3
    assert written["split_size"] == 4
    # The combined plot reads full reports only.
    assert load_reports(out.glob("*.json"), include_partial=False)["rgb"].partial is False

    # limit_test_batches, asked to overwrite: replaces the full report.
    forced = evaluator(overwrite=True)
    _trainer_with(tmp_path, forced, limit_test_batches=1).test(
        _Replay(), dataloaders=loader, verbose=False
    )
    assert json.loads((out / "rgb.json").read_text())["partial"] is True


def test_partial_run_writes_no_challenge_json(tmp_path: Path):
    num_actions = 120
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "id,verb,noun,action\n" + "".join(f"{a},{a % 97},{a},x\n" for a in range(num_actions))
    )
    out = tmp_path / "out"
    evaluator = AnticipationEvaluator(
        protocol="ek100",
        actions=str(actions),
        out_dir=str(out),
        name="fusion",
        class_lists=False,
        write_json=True,
    )
    rng = np.random.default_rng(1)
    rows = [
        {
            "scores": torch.from_numpy(rng.normal(size=(8, num_actions)).astype(np.float32)),
            "valid": torch.tensor(True),
            "verb": torch.tensor(a % 97),
            "noun": torch.tensor(a),
            "action": torch.tensor(a),
            "uid": UIDS[i],
        }
        for i, a in enumerate([0, 5, 99, 110])
    ]
    _trainer_with(tmp_path, evaluator, limit_test_batches=1).test(
        _Replay(), dataloaders=DataLoader(rows, batch_size=2), verbose=False
    )
    assert evaluator.report.partial and evaluator.report.num_samples == 2
    assert (out / "fusion.json").is_file()
    assert not (out / "fusion_challenge.json").exists()


class _ReplayAt(_Replay):
    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_evaluator_times_and_challenge_json_follow_the_models_alpha(tmp_path: Path):
    # alpha 0.5 with 4 steps: 2.0, 1.5, 1.0, 0.5 s; the challenge JSON takes step -2.
    num_actions = 120
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "id,verb,noun,action\n" + "".join(f"{a},{a % 97},{a},x\n" for a in range(num_actions))
    )
    out = tmp_path / "out"
    evaluator = AnticipationEvaluator(
        protocol="ek100",
        actions=str(actions),
        out_dir=str(out),
        name="m",
        class_lists=False,
        write_json=True,
    )
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(4, 4, num_actions)).astype(np.float32)
    rows = [
        {
            "scores": torch.from_numpy(scores[i]),
            "valid": torch.tensor(True),
            "verb": torch.tensor(a % 97),
            "noun": torch.tensor(a),
            "action": torch.tensor(a),
            "uid": UIDS[i],
        }
        for i, a in enumerate([0, 5, 99, 110])
    ]
    _trainer_with(tmp_path, evaluator).test(
        _ReplayAt(alpha=0.5), dataloaders=DataLoader(rows, batch_size=2), verbose=False
    )
    assert evaluator.report.times == (2.0, 1.5, 1.0, 0.5)
    submission = json.loads((out / "m_challenge.json").read_text())
    for i, uid in enumerate(UIDS):
        best = int(np.argmax(scores[i, -2]))
        assert next(iter(submission["results"][uid]["action"])) == f"{best % 97},{best}"


def test_ek55_evaluator_counts_a_many_shot_pair_outside_the_vocabulary(tmp_path: Path):
    # (verb 4, noun 1) is no action of VOCABULARY; noun 1 is many-shot, so by the reference's
    # rule (verb or noun many-shot) it is a many-shot action class, never predicted.
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(len(UIDS), 8, 8)).astype(np.float32)
    rows = _rows(scores)
    rows[2].update(verb=torch.tensor(4), noun=torch.tensor(1), action=torch.tensor(-1))
    files = _write_ek55_files(tmp_path)
    evaluator = AnticipationEvaluator(
        protocol="ek55", out_dir=str(tmp_path / "out"), name="m", num_verbs=5, num_nouns=2, **files
    )
    _trainer_with(tmp_path, evaluator).test(
        _Replay(), dataloaders=DataLoader(rows, batch_size=2), verbose=False
    )
    verbs, nouns, actions = (
        np.array(VERBS)[ACTIONS],
        np.array(NOUNS)[ACTIONS],
        ACTIONS.copy(),
    )
    verbs[2], nouns[2], actions[2] = 4, 1, -1
    outcomes = rank_outcomes(
        scores, vocabulary=VOCABULARY, verb=verbs, noun=nouns, action=actions, uids=UIDS
    )
    reference_actions = frozenset(a for a in range(8) if VERBS[a] == 0 or NOUNS[a] == 1)
    outside_label = int(outcomes.labels["action"][2])
    direct = evaluate_ek55(
        outcomes,
        many_shot=ManyShotClasses(
            frozenset({0}), frozenset({1}), reference_actions | {outside_label}
        ),
    )
    report = evaluator.report
    assert report.num_outside_vocabulary == 1 and report.outside_vocabulary_uids == (UIDS[2],)
    assert report.get("action", "recall5", "many_shot").values == pytest.approx(
        direct.get("action", "recall5", "many_shot").values, nan_ok=True
    )
    without = evaluate_ek55(
        outcomes, many_shot=ManyShotClasses(frozenset({0}), frozenset({1}), reference_actions)
    )
    # The extra class (recall 0) lowers the class mean.
    assert report.value("action", "recall5", "many_shot") < without.value(
        "action", "recall5", "many_shot"
    )


def test_report_title_names_the_dataset_and_survives_json(tmp_path) -> None:
    from rulstm.evaluation import AnticipationReport, MetricSeries

    report = AnticipationReport(
        protocol="ek55",
        name="rgb",
        times=(1.0,),
        series=(MetricSeries("action", "top5", "overall", (50.0,)),),
        mean_tta={"action": 1.0},
        num_samples=2,
        num_evaluated=2,
        num_discarded=0,
        discarded="drop",
    )
    assert report.table().splitlines()[0] == "EPIC-KITCHENS-55 action anticipation: rgb"
    report.dataset = "EGTEA Gaze+"
    assert report.table().splitlines()[0] == "EGTEA Gaze+ action anticipation: rgb"
    loaded = AnticipationReport.from_json(report.to_json(tmp_path / "rgb.json"))
    assert loaded.dataset == "EGTEA Gaze+" and loaded.title == "EGTEA Gaze+ action anticipation"
