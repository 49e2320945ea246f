"""Reference numbers of the quickstart: the spread over seeds, the comparison the quickstart
prints, scripts/quickstart_seeds.py and the shipped reference file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rulstm_apps.quickstart_reference import (
    REFERENCE_FILE,
    aggregate,
    at,
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


def test_quickstart_seeds_script_runs_auto_in_parallel_and_files_it_under_the_resolved_precision(
    tmp_path: Path, load_script, force_bf16_native, monkeypatch, capsys
) -> None:
    """--precision auto passes auto on to each quickstart (as a plain rulstm-quickstart runs),
    --jobs runs seeds side by side, and the entry is filed under what auto resolved to; a
    finished run is not reused for another precision."""
    script = load_script("quickstart_seeds")
    force_bf16_native(True)
    commands: list[list[str]] = []
    runs = {run["seed"]: run for run in _runs()}

    def fake_quickstart(command, stdout, stderr):
        commands.append(command)
        folder = Path(command[command.index("--out") + 1])
        run = runs[int(command[command.index("--seed") + 1])]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(run["metrics"]))
        (folder / "timings.json").write_text(json.dumps(run["seconds"]))
        stdout.write("precision auto -> bf16-mixed (CPU capability AVX512, bf16 native: yes)\n")
        return 0

    monkeypatch.setattr(script.subprocess, "call", fake_quickstart)
    out, reference = tmp_path / "seeds", tmp_path / "reference.json"
    args = ["--preset", "tiny", "--out", str(out), "--seeds", "0", "1", "2"]
    assert script.main([*args, "--precision", "auto", "--jobs", "3",
                        "--write-reference", str(reference)]) == 0  # fmt: skip
    assert "precision auto -> bf16-mixed" in capsys.readouterr().out
    assert len(commands) == 3
    assert all(c[c.index("--precision") + 1] == "auto" for c in commands)
    entry = read_references(reference)["tiny/bf16-mixed"]
    assert entry["seeds"] == [0, 1, 2] and entry["parallel_runs"] == 3
    assert entry["models"]["fusion"]["top5"]["mean"] == [92.0, 92.0, 92.0]
    assert json.loads((out / "seed1" / "seed_run.json").read_text())["precision"] == "bf16-mixed"
    # The same folders are not filed under 32-true.
    assert script.main([*args, "--precision", "32-true", "--aggregate-only"]) == 1
    printed = capsys.readouterr()
    assert "seed 0: the finished run trained at bf16-mixed, not 32-true" in printed.out
    assert "no finished runs to summarise" in printed.err
    # A run whose log shows that auto resolved otherwise is not counted.
    force_bf16_native(False)
    assert script.main([*args, "--precision", "auto", "--rerun", "--seeds", "0"]) == 1
    assert "did not resolve auto to 32-true" in capsys.readouterr().out


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "avx2-only"])
def test_a_plain_quickstart_finds_its_reference_on_either_cpu(native, force_bf16_native) -> None:
    """rulstm-quickstart with no arguments (default preset, --precision auto) ends by comparing
    with a shipped entry whatever auto resolves to: bf16-mixed on a CPU with native bf16 (this
    development machine), 32-true elsewhere."""
    from rulstm_apps.quickstart import training_precision

    force_bf16_native(native)
    precision = training_precision("auto")
    assert precision == ("bf16-mixed" if native else "32-true")
    entry = read_references(REFERENCE_FILE)[f"default/{precision}"]
    assert entry["validation_segments"] == 512 and len(entry["seeds"]) >= 3
    index = entry["times"].index(1.0)
    summary = {
        "times": entry["times"],
        "models": {
            name: {key: values[key]["mean"] for key in ("top5", "top1")}
            for name, values in entry["models"].items()
        },
    }
    lines = compare_lines(summary, {"total": 600.0}, preset="default", precision=precision)
    assert f"of --preset default at {precision} on AMD EPYC" in lines[0]
    fusion = at(entry["models"]["fusion"]["top5"], index)
    assert fusion["min"] <= fusion["mean"] <= fusion["max"]
    assert any(line.strip().startswith("fusion") and "within the seeds' range" in line
               for line in lines)  # fmt: skip
