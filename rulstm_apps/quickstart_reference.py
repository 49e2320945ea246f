"""Reference numbers of the quickstart: what spread to expect, and on which machine.

``rulstm_apps/resources/quickstart_reference.json`` holds, per ``"<preset>/<precision>"``
(e.g. ``"default/32-true"``), the mean, sample standard deviation, minimum and maximum over
several kitchen seeds of each model's top-5 and top-1 action accuracy at every anticipation
time, of the fusion / Bayes-bound ratio and of the wall time of each step, with the CPU, core
count and load average they were measured at. ``scripts/quickstart_seeds.py`` writes it; the
quickstart prints how its own result compares (:func:`compare_lines`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).resolve().parent / "resources" / "quickstart_reference.json"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`), its widest
    vector instructions that matter for training speed (AVX-512 BF16, AMX, AVX2) and the number
    of cores this process may use, e.g. ``"AMD EPYC (AVX-512 BF16), 2 cores"``."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "model name" and not name:
                name = value.strip()
            elif key.strip().lower() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    isa = next(
        (
            label
            for flag, label in (
                ("amx_bf16", "AMX"),
                ("avx512_bf16", "AVX-512 BF16"),
                ("avx512f", "AVX-512"),
                ("avx2", "AVX2"),
            )
            if flag in flags
        ),
        "",
    )
    if isa:
        name += f" ({isa})"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 0
    return f"{name}, {cores} cores"


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the system has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value), minimum, maximum and count."""
    if not values:
        raise ValueError("no values to summarise")
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def spreads(columns: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """:func:`spread` of each column, as lists: ``{"mean": [...], "std": [...], "min": [...],
    "max": [...]}`` (one entry per column, e.g. per anticipation time)."""
    each = [spread(values) for values in columns]
    return {key: [entry[key] for entry in each] for key in ("mean", "std", "min", "max")}


def at(values: Mapping[str, Sequence[float]], index: int) -> dict[str, float]:
    """One column of :func:`spreads`."""
    return {key: values[key][index] for key in ("mean", "std", "min", "max")}


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summarise several quickstart runs of one preset and precision.

    Each run is ``{"seed": int, "metrics": <metrics.json>, "seconds": <timings.json>,
    "load": [1-min load at start, at end]}``. Returns the reference entry: ``times``,
    ``models[name][top5|top1]`` (:func:`spreads` over the anticipation times),
    ``fusion_over_bound`` (percent), ``seconds[step]``, ``seeds`` and ``load``.
    Raises ``ValueError`` when the runs disagree on times or models."""
    if not runs:
        raise ValueError("no runs to aggregate")
    times = runs[0]["metrics"]["times"]
    names = list(runs[0]["metrics"]["models"])
    for run in runs:
        if run["metrics"]["times"] != times or list(run["metrics"]["models"]) != names:
            raise ValueError(f"seed {run['seed']}: other anticipation times or models")
    models = {
        name: {
            key: spreads(
                [
                    [run["metrics"]["models"][name][key][i] for run in runs]
                    for i in range(len(times))
                ]
            )
            for key in ("top5", "top1")
        }
        for name in names
    }
    steps = [step for step in runs[0]["seconds"] if all(step in run["seconds"] for run in runs)]
    return {
        "times": times,
        "seeds": [run["seed"] for run in runs],
        "validation_segments": runs[0]["metrics"]["validation_segments"],
        "models": models,
        "fusion_over_bound": spread(
            [100 * run["metrics"]["fusion_top5_at_1s_over_bound"] for run in runs]
        ),
        "seconds": {step: spread([run["seconds"][step] for run in runs]) for step in steps},
        "load": [run.get("load") for run in runs],
    }


def read_references(path: Path = REFERENCE_FILE) -> dict[str, Any]:
    """The whole reference file (``{}`` when it does not exist)."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def write_reference(
    entry: Mapping[str, Any], *, preset: str, precision: str, path: Path = REFERENCE_FILE
) -> None:
    """Store ``entry`` (from :func:`aggregate`, plus ``cpu``/``note``) under
    ``"<preset>/<precision>"``, keeping the other entries."""
    references = read_references(path)
    references[f"{preset}/{precision}"] = dict(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(references, indent=1, sort_keys=True) + "\n")  # diffable
    tmp.replace(path)


def reference_for(
    preset: str, precision: str, *, path: Path = REFERENCE_FILE
) -> dict[str, Any] | None:
    return read_references(path).get(f"{preset}/{precision}")


def _at_one_second(times: Sequence[float]) -> int:
    return times.index(1.0) if 1.0 in times else len(times) // 2


def compare_lines(
    summary: Mapping[str, Any],
    seconds: Mapping[str, float],
    *,
    preset: str,
    precision: str,
    path: Path = REFERENCE_FILE,
) -> list[str]:
    """Lines that set this run's top-5 at 1 s and wall time against the reference spread.

    ``summary`` is the quickstart's ``metrics.json``; ``precision`` the training precision the
    run used (resolved: ``32-true`` or ``bf16-mixed``)."""
    reference = reference_for(preset, precision, path=path)
    if reference is None:
        return [
            f"no reference numbers for --preset {preset} at {precision} "
            "(scripts/quickstart_seeds.py --write-reference measures them)"
        ]
    index = _at_one_second(reference["times"])
    seeds = len(reference["seeds"])
    lines = [
        f"compared with {seeds} seeds ({', '.join(map(str, reference['seeds']))}) of --preset "
        f"{preset} at {precision} on {reference.get('cpu', 'an unnamed CPU')} "
        f"(mean ± sample std [min - max]):"
    ]
    for name, values in summary["models"].items():
        if name not in reference["models"]:
            continue
        ref = at(reference["models"][name]["top5"], index)
        value = values["top5"][index]
        lines.append(f"  {name:<16} top-5 at 1 s {value:6.2f}   {_interval(ref, value)}")
    if "total" in seconds and "total" in reference["seconds"]:
        ref = reference["seconds"]["total"]
        lines.append(
            f"  {'wall time':<16} {seconds['total']:8.0f} s   reference {ref['mean']:.0f} ± "
            f"{ref['std']:.0f} s (timings depend on the CPU and its load)"
        )
    return lines


def _interval(ref: Mapping[str, float], value: float) -> str:
    inside = ref["min"] <= value <= ref["max"]
    deviations = (value - ref["mean"]) / ref["std"] if ref["std"] > 0 else math.inf
    where = (
        "within the seeds' range"
        if inside
        else f"outside the seeds' range ({deviations:+.1f} std)"
        if math.isfinite(deviations)
        else "outside the seeds' range"
    )
    return (
        f"reference {ref['mean']:.2f} ± {ref['std']:.2f} [{ref['min']:.2f} - {ref['max']:.2f}]: "
        f"{where}"
    )
