"""The Ego4D LTA protocol is an EvaluationProtocol like the others: registered by name,
selecting on ED@20 with mode min, its names accepted by the monitor check and equal to those
LTAModule logs, its report scoring exactly as the LTA scorer, and AnticipationEvaluator writing
its report files (json, csv, png) with the logged names and values."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from epic_protocol.errors import UsageError
from rulstm.evaluation import PROTOCOLS, AnticipationEvaluator, EvaluationProtocol, make_protocol
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


def test_the_selected_monitor_is_accepted_and_a_wrong_mode_refused():
    protocol = make_protocol("ego4d_lta")
    base = yaml.safe_load(BASE.read_text())
    best = base["trainer"]["callbacks"][0]["init_args"]
    assert "monitor" not in best  # the protocol selects (rulstm.selection)
    callback = ModelCheckpoint(monitor=protocol.headline_metric("val"), mode=protocol.mode)
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
    header = report.to_csv(tmp_path / "lta.csv").read_text().splitlines()[0]
    assert header == "name,protocol,head,metric,value,key"
    (tmp_path / "other.json").write_text('{"kind": "something else"}')
    assert protocol.load_report(tmp_path / "other.json") is None
    with pytest.raises(KeyError, match="noun_labels"):
        protocol.records({"ids": [], "verb": [], "noun": [], "verb_labels": []})


class _ReplayLTA(L.LightningModule):
    """Returns each test batch as it is: K sequences and labels per window."""

    def __init__(self, init_checkpoint: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        return batch


def _windows(seed: int = 0, w: int = 6, k: int = 5, z: int = 20) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "ids": f"clip_{i}",
            "verb": torch.from_numpy(rng.integers(0, 3, (k, z))),
            "noun": torch.from_numpy(rng.integers(0, 4, (k, z))),
            "verb_labels": torch.from_numpy(rng.integers(0, 3, z)),
            "noun_labels": torch.from_numpy(rng.integers(0, 4, z)),
        }
        for i in range(w)
    ]


def _lta_test(tmp_path: Path, evaluator, checkpoint: Path) -> dict:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[evaluator],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loader = DataLoader(_windows(), batch_size=4)
    module = _ReplayLTA(init_checkpoint=str(checkpoint))
    return trainer.test(module, dataloaders=loader, verbose=False)[0]


def test_the_evaluator_writes_lta_reports_that_agree_with_the_logged_metrics(tmp_path):
    out = tmp_path / "evaluation"
    stage = tmp_path / "runs" / "forecaster" / "checkpoints"
    logged = _lta_test(
        tmp_path, AnticipationEvaluator(protocol="ego4d_lta", out_dir=str(out)), stage / "best.ckpt"
    )
    # Named after the checkpoint's stage folder, as the next-action reports are.
    report = json.loads((out / "forecaster.json").read_text())
    with (out / "forecaster.csv").open() as handle:
        rows = {row["key"]: float(row["value"]) for row in csv.DictReader(handle)}
    names = set(make_protocol("ego4d_lta").logged_names("test"))
    assert set(logged) == set(rows) == set(report["metrics"]) == names
    windows = _windows()
    expected = score_lta(
        *(
            np.stack([w[key].numpy() for w in windows])
            for key in ("verb", "noun", "verb_labels", "noun_labels")
        )
    )
    for head in ("verb", "noun", "action"):
        for metric, value in (("ED@20", expected.ed(head)), ("AUED", expected.aued(head))):
            key = f"test/{head}/{metric}"
            # The files hold the exact values; the logged ones went through float32.
            assert rows[key] == report["metrics"][key] == report[head][metric] == value
            assert logged[key] == pytest.approx(value, rel=1e-6), key
    assert report["headline"] == {
        "head": "verb",
        "metric": "ED@20",
        "mode": "min",
        "name": "test/verb/ED@20",
        "value": expected.ed("verb"),
    }
    assert report["checkpoint"] == str(stage / "best.ckpt") and report["num_windows"] == 6
    assert len(report["curves"]["verb"]) == 20
    # ED against z: this report's plot and the folder's combined plot.
    assert (out / "forecaster.png").stat().st_size > 0
    assert (out / "ed_ego4d_lta.png").stat().st_size > 0
    # The same checkpoint again replaces its report; another checkpoint of the same stage
    # folder (same name) stops before testing instead of replacing it silently.
    _lta_test(
        tmp_path, AnticipationEvaluator(protocol="ego4d_lta", out_dir=str(out)), stage / "best.ckpt"
    )
    with pytest.raises(UsageError, match=r"forecaster\.json is the report of another checkpoint"):
        _lta_test(
            tmp_path,
            AnticipationEvaluator(protocol="ego4d_lta", out_dir=str(out)),
            stage / "last.ckpt",
        )
    assert json.loads((out / "forecaster.json").read_text())["checkpoint"] == str(
        stage / "best.ckpt"
    )
