"""Ego4D LTA scoring: ED@Z / AUED as the official code computes them, and rulstm-score."""

from __future__ import annotations

import json

import editdistance
import numpy as np
import pytest

from epic_protocol.ego4d_lta import LTAAction, build_windows, write_lta_annotations
from rulstm.evaluation.lta import (
    LTAPredictionError,
    aued,
    edit_distance_curve,
    levenshtein,
    prefix_distances,
    read_predictions,
    score_lta,
    write_predictions,
)
from rulstm.evaluation.score_cli import main as score_main


def official_ed(preds, labels):
    """The official definition (re-stated here, not imported): preds [N, Z, K], labels [N, Z]."""
    n, z, k = preds.shape
    return np.mean(
        [min(editdistance.eval(preds[i, :, j], labels[i]) / z for j in range(k)) for i in range(n)]
    )


def official_aued(preds, labels):
    _, z, _ = preds.shape
    curve = np.array([official_ed(preds[:, :p], labels[:, :p]) for p in range(1, z + 1)])
    return curve, np.trapezoid(y=curve, axis=0) / (z - 1)


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ([1, 2, 3], [1, 2, 3], 0),
        ([1, 2, 3], [3, 2, 1], 2),  # two substitutions (a transposition is not one edit)
        ([1, 2, 3, 4], [2, 3, 4, 5], 2),  # delete 1, insert 5
        ([1, 1, 1], [2, 2, 2], 3),
        ([], [1, 2], 2),
    ],
)
def test_levenshtein_by_hand(a, b, distance):
    assert levenshtein(a, b) == distance
    if a:
        assert prefix_distances(np.array([a]), np.array([b]))[0, -1] == distance


def test_prefix_distances_by_hand():
    # preds 2 1 3 4 vs labels 1 2 3 4: prefixes z=1: 1, z=2: 2, z=3: 2, z=4: 2
    assert prefix_distances(np.array([[2, 1, 3, 4]]), np.array([[1, 2, 3, 4]])).tolist() == [
        [1, 2, 2, 2]
    ]


def test_min_over_k_and_mean_over_windows_by_hand():
    labels = np.array([[1, 2, 3, 4], [5, 5, 5, 5]])
    preds = np.array(
        [
            [[1, 2, 3, 4], [9, 9, 9, 9]],  # best k: 0 distance
            [[5, 6, 6, 5], [6, 5, 5, 5]],  # distances 2 and 1 -> 1
        ]
    )  # (W, K, Z)
    curve = edit_distance_curve(preds, labels)
    assert curve[-1] == pytest.approx((0 / 4 + 1 / 4) / 2)
    # z=1: window 1 best k=0 (5 vs 5): 0 -> mean 0
    assert curve[0] == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(5))
def test_equal_to_the_official_definition_on_random_fixtures(seed):
    rng = np.random.default_rng(seed)
    w, k, z = 17, 5, 20
    classes = 4 if seed % 2 else 30  # few classes: many ties between the K sequences
    verb_labels = rng.integers(0, classes, size=(w, z))
    noun_labels = rng.integers(0, classes, size=(w, z))
    verb_preds = rng.integers(0, classes, size=(w, k, z))
    noun_preds = rng.integers(0, classes, size=(w, k, z))
    verb_preds[0, 2] = verb_labels[0]  # an exact sequence
    verb_preds[1, :] = verb_preds[1, 0]  # K identical sequences
    scores = score_lta(verb_preds, noun_preds, verb_labels, noun_labels)
    for head, preds, labels in (
        ("verb", verb_preds, verb_labels),
        ("noun", noun_preds, noun_labels),
    ):
        official_curve, official = official_aued(preds.transpose(0, 2, 1), labels)
        assert scores.ed(head) == pytest.approx(
            official_ed(preds.transpose(0, 2, 1), labels), abs=1e-12
        )
        assert np.allclose(scores.curves[head], official_curve, atol=1e-12)
        assert scores.aued(head) == pytest.approx(float(official), abs=1e-12)
    # action: a pair is right only when both verb and noun are
    pairs = lambda v, n: v * 1000 + n  # noqa: E731
    official_action = official_ed(
        pairs(verb_preds, noun_preds).transpose(0, 2, 1), pairs(verb_labels, noun_labels)
    )
    assert scores.ed("action") == pytest.approx(official_action, abs=1e-12)
    assert scores.ed("action") >= max(scores.ed("verb"), scores.ed("noun")) - 1e-12


def test_aued_is_the_trapezoid_over_z_minus_one():
    curve = np.array([0.0, 0.5, 0.5, 1.0])
    assert aued(curve) == pytest.approx(np.trapezoid(curve) / 3)
    assert np.isnan(aued(np.array([0.3])))


def test_k1_scores_the_single_sequence():
    labels = np.array([[0, 1, 2]])
    scores = score_lta(np.array([[[0, 1, 1]]]), np.array([[[2, 2, 2]]]), labels, labels)
    assert scores.ed("verb") == pytest.approx(1 / 3)
    assert scores.ed("noun") == pytest.approx(2 / 3)
    # pairs (0,2) (1,2) (1,2) against (0,0) (1,1) (2,2): all three differ
    assert scores.ed("action") == pytest.approx(1.0)


# ------------------------------------------------------------------------------ files and CLI


@pytest.fixture
def annotated(tmp_path):
    """Two clips of 5 actions (N=2, Z=3: 1 window each... range(5-3-2+1) = 1) and a short one."""
    actions = []
    for clip in ("c1", "c2"):
        actions += [
            LTAAction(clip, "v", i, 10 * i, 10 * i + 9, 0, i % 3, (i + 1) % 4) for i in range(5)
        ]
    actions += [LTAAction("short", "v", i, i, i + 1, 0, 0, 0) for i in range(4)]
    path = tmp_path / "fho_lta_val.json"
    write_lta_annotations(path, actions)
    windows = build_windows(
        {c: [a for a in actions if a.clip_uid == c] for c in ("c1", "c2", "short")},
        num_input_actions=2,
        num_future_actions=3,
    )
    return path, windows


def test_outputs_json_layout_and_round_trip(tmp_path, annotated):
    _, windows = annotated
    verbs = np.arange(2 * 2 * 3).reshape(2, 2, 3) % 3
    nouns = np.zeros((2, 2, 3), dtype=int)
    out = tmp_path / "outputs.json"
    write_predictions(out, [w.id for w in windows], verbs, nouns)
    data = json.loads(out.read_text())
    assert list(data) == ["c1_1", "c2_1"]
    assert data["c1_1"] == {"verb": [[0, 1, 2], [0, 1, 2]], "noun": [[0, 0, 0], [0, 0, 0]]}
    read_verbs, read_nouns = read_predictions(out, windows)
    assert np.array_equal(read_verbs, verbs) and np.array_equal(read_nouns, nouns)


def test_rulstm_score_ego4d_lta(tmp_path, annotated, capsys):
    path, windows = annotated
    # c1_1: labels verbs 2,0,1 nouns 3,0,1; perfect. c2_1: one verb wrong in the only sequence.
    predictions = {
        "c1_1": {"verb": [[2, 0, 1]], "noun": [[3, 0, 1]]},
        "c2_1": {"verb": [[2, 0, 0]], "noun": [[3, 0, 1]]},
    }
    out = tmp_path / "outputs.json"
    out.write_text(json.dumps(predictions))
    metrics = tmp_path / "metrics.json"
    code = score_main(
        [
            "ego4d-lta",
            "--annotations",
            str(path),
            "--predictions",
            str(out),
            "--json",
            str(metrics),
            "--num-future-actions",
            "3",
        ]
    )
    assert code == 0
    result = json.loads(metrics.read_text())
    assert result["num_windows"] == 2
    assert result["verb"]["ED@3"] == pytest.approx((0 + 1 / 3) / 2)
    assert result["noun"]["ED@3"] == pytest.approx(0.0)
    assert result["action"]["ED@3"] == pytest.approx((0 + 1 / 3) / 2)
    # prefixes: z=1 0, z=2 0, z=3 1/6 -> trapezoid (0 + 0 + (0 + 1/6) / 2) / 2
    assert result["verb"]["AUED"] == pytest.approx(1 / 24)
    printed = capsys.readouterr().out
    assert "ED@3" in printed and "action*" in printed and "own" in printed


@pytest.mark.parametrize(
    "predictions, message",
    [
        ({"c1_1": {"verb": [[0, 0, 0]], "noun": [[0, 0, 0]]}}, "c2_1: missing"),
        (
            {
                "c1_1": {"verb": [[0, 0, 0]], "noun": [[0, 0, 0]]},
                "c2_1": {"verb": [[0, 0, 0]], "noun": [[0, 0, 0]]},
                "c3_9": {"verb": [[0, 0, 0]], "noun": [[0, 0, 0]]},
            },
            "c3_9: not a window",
        ),
        (
            {
                "c1_1": {"verb": [[0, 0]], "noun": [[0, 0, 0]]},
                "c2_1": {"verb": [[0, 0, 0]], "noun": [[0, 0, 0]]},
            },
            "c1_1: a 'verb' sequence has length 2, expected Z=3",
        ),
        (
            {
                "c1_1": {"verb": [[0, 0, 0]], "noun": [[0, 0, 0]]},
                "c2_1": {"verb": [[0, 0, 0], [1, 1, 1]], "noun": [[0, 0, 0], [1, 1, 1]]},
            },
            "c2_1: .*same K",
        ),
        (
            {
                "c1_1": {"verb": [[0, 0, 0]]},
                "c2_1": {"verb": [[0, 0, 0]], "noun": [[0, 0, 0]]},
            },
            "c1_1: expected",
        ),
    ],
)
def test_bad_predictions_are_named_by_id(tmp_path, annotated, capsys, predictions, message):
    path, windows = annotated
    out = tmp_path / "outputs.json"
    out.write_text(json.dumps(predictions))
    with pytest.raises(LTAPredictionError, match=message):
        read_predictions(out, windows)
    code = score_main(
        [
            "ego4d-lta",
            "--annotations",
            str(path),
            "--predictions",
            str(out),
            "--num-future-actions",
            "3",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rulstm-score: error:") and "\n" not in err and str(out) in err


def test_scoring_the_unannotated_file_is_refused(tmp_path, annotated, capsys):
    path, windows = annotated
    test_file = tmp_path / "fho_lta_test_unannotated.json"
    data = json.loads(path.read_text())
    for clip in data["clips"]:
        for key in ("verb", "noun", "verb_label", "noun_label"):
            clip.pop(key, None)
    test_file.write_text(json.dumps(data))
    out = tmp_path / "outputs.json"
    write_predictions(
        out, [w.id for w in windows], np.zeros((2, 1, 3), int), np.zeros((2, 1, 3), int)
    )
    code = score_main(
        [
            "ego4d-lta",
            "--annotations",
            str(test_file),
            "--predictions",
            str(out),
            "--num-future-actions",
            "3",
        ]
    )
    assert code == 1
    assert "has no labels" in capsys.readouterr().err
