"""Reference numbers of the quickstart: the spread over seeds, the comparison the quickstart
prints, scripts/quickstart_seeds.py and the shipped reference file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rulstm_apps.quickstart_reference import (
    REFERENCE_FILE,
    aggregate,
    compare_lines,
    cpu_name,
    read_references,
    spread,
    write_reference,
)

TIMES = [2.0, 1.0, 0.5]


def _metrics(rgb: float, fusion: float) -> dict:
    return {
        "times": TIMES,
        "models": {
            "rgb": {"top5": [rgb - 1, rgb, rgb + 1], "top1": [rgb / 2] * 3},
            "fusion": {"top5": [fusion] * 3, "top1": [fusion / 2] * 3},
        },
        "fusion_top5_at_1s_over_bound": fusion / 100,
        "validation_segments": 12,
    }


def _runs() -> list[dict]:
    return [
        {"seed": 0, "metrics": _metrics(80, 90), "seconds": {"train": 10.0, "total": 30.0}},
        {"seed": 1, "metrics": _metrics(84, 92), "seconds": {"train": 14.0, "total": 34.0}},
        {"seed": 2, "metrics": _metrics(82, 94), "seconds": {"train": 12.0, "total": 38.0}},
    ]


def test_spread_and_aggregate() -> None:
    assert spread([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([5.0])["std"] == 0.0
    entry = aggregate(_runs())
    assert entry["seeds"] == [0, 1, 2] and entry["times"] == TIMES
    assert entry["models"]["rgb"]["top5"] == {
        "mean": [81.0, 82.0, 83.0],
        "std": [2.0, 2.0, 2.0],
        "min": [79.0, 80.0, 81.0],
        "max": [83.0, 84.0, 85.0],
    }
    assert entry["fusion_over_bound"]["mean"] == 92.0
    assert entry["seconds"]["total"] == {"mean": 34.0, "std": 4.0, "min": 30.0, "max": 38.0, "n": 3}
    mixed = _runs()
    mixed[1]["metrics"]["times"] = [1.0]
    with pytest.raises(ValueError, match="seed 1"):
        aggregate(mixed)


def test_the_quickstart_compares_its_result_with_the_spread(tmp_path: Path) -> None:
    path = tmp_path / "reference.json"
    summary = _metrics(90, 92)  # rgb 90 at 1 s: above every seed; fusion 92: inside
    seconds = {"total": 41.0}
    lines = compare_lines(summary, seconds, preset="tiny", precision="32-true", path=path)
    assert lines == [
        "no reference numbers for --preset tiny at 32-true (scripts/quickstart_seeds.py "
        "--write-reference measures them)"
    ]
    entry = {**aggregate(_runs()), "cpu": "Test CPU (AVX2), 2 cores"}
    write_reference(entry, preset="tiny", precision="32-true", path=path)
    write_reference(entry, preset="default", precision="bf16-mixed", path=path)
    assert set(read_references(path)) == {"tiny/32-true", "default/bf16-mixed"}
    text = "\n".join(compare_lines(summary, seconds, preset="tiny", precision="32-true", path=path))
    assert "3 seeds (0, 1, 2) of --preset tiny at 32-true on Test CPU (AVX2), 2 cores" in text
    assert (
        "rgb              top-5 at 1 s  90.00   reference 82.00 ± 2.00 [80.00 - 84.00]: "
        "outside the seeds' range (+4.0 std)" in text
    )
    assert "fusion           top-5 at 1 s  92.00   reference 92.00 ± 2.00 [90.00 - 94.00]: " in text
    assert "within the seeds' range" in text
    assert "wall time              41 s   reference 34 ± 4 s" in text


def test_cpu_name_names_the_cores() -> None:
    assert cpu_name().endswith(" cores")


def test_quickstart_seeds_script_prints_seeds_side_by_side_and_writes_the_reference(
    tmp_path: Path, load_script, capsys
) -> None:
    script = load_script("quickstart_seeds")
    out = tmp_path / "seeds"
    for run in _runs()[:2]:
        folder = out / f"seed{run['seed']}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(run["metrics"]))
        (folder / "timings.json").write_text(json.dumps(run["seconds"]))
        (folder / "seed_run.json").write_text(json.dumps({"load": [1.0, 2.0], "cpu": "X, 2 cores"}))
    reference = tmp_path / "reference.json"
    args = ["--preset", "tiny", "--out", str(out), "--aggregate-only"]
    assert script.main([*args, "--seeds", "0", "1", "--write-reference", str(reference)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy (%) at 1.00 s over 2 seeds" in printed
    assert "rgb top5                  80.00    84.00   82.00 ± 2.83  [80.00 - 84.00]" in printed
    assert "total                        30       34   32 ± 3  [30 - 34]" in printed
    assert "CPU: X, 2 cores" in printed
    entry = read_references(reference)["tiny/32-true"]
    assert entry["cpu"] == "X, 2 cores" and entry["seeds"] == [0, 1]
    # A seed without a finished run is named, and the exit status says so.
    assert script.main([*args, "--seeds", "0", "5"]) == 1
    assert "seed 5: no finished run" in capsys.readouterr().out


def test_the_shipped_reference_numbers() -> None:
    references = read_references(REFERENCE_FILE)
    assert "tiny/32-true" in references
    for key, entry in references.items():
        preset, precision = key.split("/")
        assert precision in ("32-true", "bf16-mixed"), key
        assert entry["cpu"] and entry["seeds"] and "total" in entry["seconds"], key
        assert set(entry["models"]) >= {"rgb", "flow", "obj", "fusion"}, key
        for values in entry["models"].values():
            assert len(values["top5"]["mean"]) == len(entry["times"]), key
