"""EvaluationProtocol objects, the registry, the metric names and the evaluator's report files."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from epic_protocol.errors import UsageError
from rulstm.evaluation import (
    PROTOCOLS,
    AnticipationEvaluator,
    AnticipationReport,
    EvaluationProtocol,
    SegmentRecords,
    Selection,
    make_protocol,
    register_protocol,
)
from rulstm.evaluation.callbacks import default_report_name
from rulstm.evaluation.names import METRICS, module_metric_names, time_key

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
VERBS = [0, 0, 1, 1, 2, 2, 3, 3]
NOUNS = [0, 1, 0, 1, 0, 1, 0, 1]
UIDS = ["P01_01_0", "P01_01_1", "P18_01_0", "P18_01_1"]
ACTIONS = [0, 1, 2, 1]


class _Replay(L.LightningModule):
    def __init__(self, init_checkpoint: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        return dict(batch)


def _rows(seed: int = 0) -> list[dict]:
    scores = np.random.default_rng(seed).normal(size=(len(UIDS), 8, 8)).astype(np.float32)
    return [
        {
            "scores": torch.from_numpy(scores[i]),
            "valid": torch.tensor(True),
            "verb": torch.tensor(VERBS[ACTIONS[i]]),
            "noun": torch.tensor(NOUNS[ACTIONS[i]]),
            "action": torch.tensor(ACTIONS[i]),
            "uid": UIDS[i],
        }
        for i in range(len(UIDS))
    ]


def _actions(tmp_path: Path) -> str:
    path = tmp_path / "actions.csv"
    path.write_text(
        "id,action,verb,noun\n"
        + "".join(f"{i},a{i},{v},{n}\n" for i, (v, n) in enumerate(zip(VERBS, NOUNS)))
    )
    return str(path)


def _test(tmp_path: Path, evaluator: L.Callback, module=None, **kwargs) -> dict:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path / "logs"),
        callbacks=[evaluator],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )
    loader = DataLoader(_rows(), batch_size=3)
    return trainer.test(module or _Replay(), dataloaders=loader, verbose=False)[0]


def test_every_benchmark_is_a_registered_protocol():
    assert {"ek55", "ek100", "egtea", "custom"} <= set(PROTOCOLS)
    egtea = make_protocol("egtea")
    assert (egtea.num_verbs, egtea.num_nouns) == (19, 51) and egtea.submission is None
    assert make_protocol("ek100").selection == Selection("action", "recall5")
    assert make_protocol("ek55").discarded == "drop"
    assert make_protocol("ek100").discarded == "zeros"
    with pytest.raises(ValueError, match=r"unknown evaluation protocol 'nope'.*'custom'"):
        make_protocol("nope")
    with pytest.raises(ValueError, match="the ek55 evaluation protocol takes no unseen_ids"):
        make_protocol("ek55", unseen_ids="x.csv")
    with pytest.raises(ValueError, match="egtea protocol has no challenge file format"):
        AnticipationEvaluator(protocol="egtea", write_json=True)


def test_logged_metrics_and_report_files_agree_by_name_and_value(tmp_path: Path):
    out = tmp_path / "evaluation"
    evaluator = AnticipationEvaluator(
        protocol="custom", actions=_actions(tmp_path), out_dir=str(out), name="rgb"
    )
    logged = _test(tmp_path, evaluator)
    report = json.loads((out / "rgb.json").read_text())
    with (out / "rgb.csv").open() as handle:
        rows = {row["key"]: float(row["value"]) for row in csv.DictReader(handle)}
    assert logged.keys() == rows.keys()
    for key, value in rows.items():
        assert logged[key] == pytest.approx(value), key
    # The JSON series carry the same values under the same (task, metric, subset) names.
    times = report["times"]
    for series in report["series"]:
        for time, value in zip(times, series["values"]):
            key = f"test/{series['task']}/{series['metric']}/{time_key(time)}"
            assert logged[key] == pytest.approx(value), key
    assert report["headline"]["name"] == "test/action/top5/1.00s"
    assert logged["test/action/top5/1.00s"] == pytest.approx(report["headline"]["value"])
    assert {s["metric"] for s in report["series"]} <= set(METRICS)
    assert report["protocol"] == "custom"


def test_custom_and_egtea_give_the_numbers_of_ek55_without_class_lists(tmp_path: Path):
    actions = _actions(tmp_path)
    reports = {}
    for protocol, options in (
        ("ek55", {"class_lists": False, "num_verbs": 5, "num_nouns": 2}),
        ("custom", {"dataset": "My kitchen"}),
    ):
        out = tmp_path / protocol
        evaluator = AnticipationEvaluator(
            protocol=protocol, actions=actions, out_dir=str(out), name="m", **options
        )
        _test(tmp_path, evaluator)
        reports[protocol] = evaluator.report
    assert reports["custom"].series == reports["ek55"].series
    assert reports["custom"].title == "My kitchen action anticipation"
    # The custom data set's combined plot is named after it, not after EK55.
    assert (tmp_path / "custom" / "accuracy_my_kitchen.png").is_file()
    assert not (tmp_path / "custom" / "accuracy_ek55.png").exists()


def test_configs_name_their_own_protocol():
    egtea = yaml.safe_load((CONFIGS / "egtea" / "test.yaml").read_text())
    quickstart = yaml.safe_load((CONFIGS / "quickstart" / "test.yaml").read_text())
    for config, protocol in ((egtea, "egtea"), (quickstart, "custom")):
        init = config["trainer"]["callbacks"][0]["init_args"]
        assert init["protocol"] == protocol and "class_lists" not in init


def test_a_new_protocol_plugs_in_without_touching_the_others(tmp_path: Path):
    """The shape a benchmark scored by a distance (mode min) takes, e.g. Ego4D LTA."""

    @dataclass
    class Distances(SegmentRecords):
        uids: list[str]
        distance: np.ndarray

    @dataclass
    class DistanceReport:
        name: str
        distance: float
        num_samples: int
        protocol: str = "toy_distance"
        partial: bool = False
        split_size: int | None = None
        checkpoint: str | None = None

        def table(self) -> str:
            return f"toy: {self.name} {self.distance:.2f}"

        def metrics(self, prefix: str = "test") -> dict[str, float]:
            return {f"{prefix}/action/mean_tta5": self.distance}

        def to_json(self, path):
            Path(path).write_text(json.dumps({"distance": self.distance}))
            return Path(path)

        def to_csv(self, path):
            Path(path).write_text(f"distance\n{self.distance}\n")
            return Path(path)

    class ToyDistance(EvaluationProtocol):
        name = "toy_distance"
        title = "Toy"
        selection = Selection("action", "mean_tta5", mode="min", time=None)

        def records(self, outputs):
            return Distances(uids=list(outputs["uid"]), distance=outputs["action"].float().numpy())

        def evaluate(self, records, *, name):
            return DistanceReport(name, float(records.distance.mean()), len(records))

        def load_report(self, path):
            return None

    register_protocol(ToyDistance)
    try:
        evaluator = AnticipationEvaluator(protocol="toy_distance", out_dir=str(tmp_path / "o"))
        logged = _test(tmp_path, evaluator)
        assert logged["test/action/mean_tta5"] == pytest.approx(np.mean(ACTIONS))
        assert (tmp_path / "o" / "model.json").is_file()
        assert ToyDistance.selection.name("val") == "val/action/mean_tta5"
    finally:
        PROTOCOLS.pop("toy_distance")


def test_reports_are_named_after_the_checkpoint_and_never_replace_another_silently(
    tmp_path: Path,
):
    module = SimpleNamespace(is_fusion=False, modality="rgb")
    assert default_report_name(module, "runs/my/fusion/checkpoints/best.ckpt") == "fusion"
    assert default_report_name(module, "imported/ek55/flow.ckpt") == "flow"
    assert default_report_name(module, None) == "rgb"
    out = tmp_path / "evaluation"
    actions = _actions(tmp_path)

    def evaluate(checkpoint: str, **options) -> AnticipationEvaluator:
        evaluator = AnticipationEvaluator(
            protocol="custom", actions=actions, out_dir=str(out), **options
        )
        _test(tmp_path, evaluator, module=_Replay(init_checkpoint=checkpoint))
        return evaluator

    fusion = tmp_path / "runs" / "fusion" / "checkpoints" / "best.ckpt"
    rgb = tmp_path / "runs" / "rgb_anticipation" / "checkpoints" / "best.ckpt"
    assert evaluate(str(fusion)).name == "fusion"
    assert evaluate(str(rgb)).name == "rgb_anticipation"
    assert {"fusion.json", "rgb_anticipation.json"} <= {p.name for p in out.iterdir()}
    # The same name for another checkpoint: refused before testing, the report kept.
    before = (out / "fusion.json").read_text()
    with pytest.raises(UsageError, match=r"fusion.json is the report of another checkpoint"):
        evaluate(str(rgb), name="fusion")
    assert (out / "fusion.json").read_text() == before
    # The same checkpoint again, or overwrite: replaced.
    evaluate(str(fusion))
    evaluate(str(rgb), name="fusion", overwrite=True)
    assert json.loads((out / "fusion.json").read_text())["checkpoint"] == str(rgb)


def test_a_partial_run_says_its_size_in_one_line(tmp_path: Path, capsys):
    evaluator = AnticipationEvaluator(
        protocol="custom", actions=_actions(tmp_path), out_dir=str(tmp_path / "o"), name="m"
    )
    _test(tmp_path, evaluator, limit_test_batches=1)
    table = capsys.readouterr().out
    assert "3 of 4 segments of the split, 3 evaluated (0 discarded samples left out)" in table
    assert "samples evaluated of" not in table
    report = AnticipationReport.from_json(tmp_path / "o" / "m.json")
    assert report.partial and report.split_size == 4


def test_a_monitor_naming_no_logged_metric_fails_at_start():
    from rulstm.lightning import AnticipationModule
    from rulstm.models import RULSTM

    module = AnticipationModule(
        net=RULSTM(feat_dim=4, num_classes=3, hidden=4), anticipation_steps=4
    )
    module._trainer = SimpleNamespace(
        callbacks=[ModelCheckpoint(monitor="val/action/top5/1.00s", mode="max")]
    )
    module.check_monitors()  # a logged name
    module._trainer = SimpleNamespace(
        callbacks=[ModelCheckpoint(monitor="val/action/top5_acc/1.00s")]
    )
    with pytest.raises(
        UsageError, match=r"names no logged metric; valid names: .*val/action/top5/1\.00s"
    ):
        module.check_monitors()
    # A mode against the metric's would keep the worst checkpoint.
    module._trainer = SimpleNamespace(
        callbacks=[ModelCheckpoint(monitor="val/action/top5/1.00s", mode="min")]
    )
    with pytest.raises(UsageError, match="set mode: max"):
        module.check_monitors()


@pytest.mark.parametrize("folder", ["ek55", "ek100", "egtea", "quickstart"])
def test_every_config_monitors_a_logged_name(folder):
    for path in sorted((CONFIGS / folder).glob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        for callback in (config.get("trainer") or {}).get("callbacks") or []:
            monitor = (callback.get("init_args") or {}).get("monitor")
            if not monitor:
                continue
            early = path.stem.startswith("early")
            whens = ["100.0%", "50.0%"] if early else [time_key(1.0), time_key(2.0)]
            assert monitor in module_metric_names("val", whens=whens), (path, monitor)


def test_logged_table_spells_each_logged_name_once():
    from rulstm.evaluation.names import logged_table

    logged = {
        "val/loss": 1.5,
        "val/action/top1/100.0%": 60.0,
        "val/action/top1/12.5%": 10.0,
        "val/action/top1": 60.0,
        "val/verb/ED@20": 0.875,
        "train/loss": 2.0,  # another stage: left out
    }
    lines = logged_table(logged, stage="val").splitlines()
    assert lines[0] == "val metrics (a name is its row and column: val/action/top1/100.0%)"
    assert lines[1].split() == ["12.5%", "100.0%"]  # the observed fraction grows
    assert lines[2].split() == ["val/action/top1/", "10.00", "60.00"]
    assert lines[3].split() == [
        "val/loss", "1.5000", "val/action/top1", "60.00", "val/verb/ED@20", "0.8750"
    ]  # fmt: skip
    assert len(lines) == 4 and "train/loss" not in "\n".join(lines)
    assert logged_table({"train/loss": 1.0}, stage="val") == ""
