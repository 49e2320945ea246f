"""The Ego4D LTA protocol is an EvaluationProtocol like the others: registered by name,
selecting on ED@20 with mode min, its names accepted by the monitor check and equal to those
LTAModule logs, its report scoring exactly as the LTA scorer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from epic_protocol.errors import UsageError
from rulstm.evaluation import PROTOCOLS, EvaluationProtocol, make_protocol
from rulstm.evaluation.lta import score_lta
from rulstm.evaluation.lta_protocol import Ego4DLTAProtocol, LTARecords, LTAReport
from rulstm.evaluation.names import METRICS, check_monitors, metric_mode
from rulstm.evaluation.records import gather_records
from rulstm.lightning_lta import LTAModule
from rulstm.models.lta import RULSTMForecaster

BASE = Path(__file__).resolve().parents[3] / "configs" / "ego4d_lta" / "base.yaml"


def test_make_protocol_builds_the_lta_protocol_selecting_with_mode_min():
    assert PROTOCOLS["ego4d_lta"] is Ego4DLTAProtocol
    protocol = make_protocol("ego4d_lta", num_sequences=3)
    assert isinstance(protocol, Ego4DLTAProtocol) and isinstance(protocol, EvaluationProtocol)
    assert protocol.num_sequences == 3
    assert protocol.selection.mode == protocol.mode == "min"
    assert protocol.selection.name("val") == protocol.headline_metric("val") == "val/verb/ED@20"
    assert METRICS["ED@20"].mode == METRICS["AUED"].mode == "min"
    assert metric_mode("val/noun/AUED") == metric_mode("val/verb/ED@20") == "min"
    with pytest.raises(ValueError, match="takes no actions"):
        make_protocol("ego4d_lta", actions="actions.csv")


def test_the_shipped_monitor_is_accepted_and_a_wrong_mode_refused():
    protocol = make_protocol("ego4d_lta")
    base = yaml.safe_load(BASE.read_text())
    best = base["trainer"]["callbacks"][0]["init_args"]
    callback = ModelCheckpoint(monitor=best["monitor"], mode=best["mode"])
    check_monitors([callback], protocol.logged_names("val"))
    with pytest.raises(UsageError, match="set mode: min"):
        check_monitors([ModelCheckpoint(monitor="val/verb/ED@20", mode="max")], ["val/verb/ED@20"])
    with pytest.raises(UsageError, match="names no logged metric"):
        check_monitors([ModelCheckpoint(monitor="val/verb/ED@5", mode="min")], ["val/verb/ED@20"])


def _module() -> LTAModule:
    net = RULSTMForecaster(num_verbs=3, num_nouns=4, feat_dim=5, hidden=8)
    return LTAModule(net=net)


def test_lta_module_logs_the_protocol_names_and_checks_its_monitor():
    module = _module()
    assert module.logged_metric_names("val") == make_protocol("ego4d_lta").logged_names("val")
    wrong = ModelCheckpoint(monitor="val/verb/ED@20", mode="max")
    module._trainer = SimpleNamespace(callbacks=[wrong])  # what Lightning sets before setup
    with pytest.raises(UsageError, match="set mode: min"):
        module.setup("fit")
    module._trainer = SimpleNamespace(callbacks=[ModelCheckpoint(monitor="val/verb/ED@20")])
    module.setup("fit")


def _records(rng, ids, k=5, z=20) -> LTARecords:
    w = len(ids)
    return make_protocol("ego4d_lta").records(
        {
            "ids": ids,
            "verb": torch.from_numpy(rng.integers(0, 3, (w, k, z))),
            "noun": rng.integers(0, 4, (w, k, z)),
            "verb_labels": rng.integers(0, 3, (w, z)),
            "noun_labels": rng.integers(0, 4, (w, z)),
        }
    )


def test_evaluate_scores_as_the_scorer_and_the_report_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    protocol = make_protocol("ego4d_lta")
    parts = [_records(rng, ["a_1", "a_2"]), _records(rng, ["b_3", "a_1"])]  # a repeat
    records = gather_records(parts)
    assert records.uids == ["a_1", "a_2", "b_3"]
    report = protocol.evaluate(records, name="val")
    expected = score_lta(records.verb, records.noun, records.verb_labels, records.noun_labels)
    metrics = report.metrics("test")
    assert sorted(metrics) == sorted(protocol.logged_names("test"))
    for head in ("verb", "noun", "action"):
        assert metrics[f"test/{head}/ED@20"] == expected.ed(head)
        assert metrics[f"test/{head}/AUED"] == expected.aued(head)
    assert report.num_samples == 3 and "ED@20" in report.table()
    loaded = protocol.load_report(report.to_json(tmp_path / "lta.json"))
    assert isinstance(loaded, LTAReport) and loaded.metrics("test") == pytest.approx(metrics)
    assert report.to_csv(tmp_path / "lta.csv").read_text().splitlines()[0] == "head,ED@20,AUED"
    (tmp_path / "other.json").write_text('{"kind": "something else"}')
    assert protocol.load_report(tmp_path / "other.json") is None
    with pytest.raises(KeyError, match="noun_labels"):
        protocol.records({"ids": [], "verb": [], "noun": [], "verb_labels": []})
