"""Killed runs resume to the same result; distributed extraction with 2 CPU processes."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from feature_extraction.cli import main

REPO = Path(__file__).resolve().parents[2]


def _read(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with h5py.File(path, "r") as handle:
        return {
            video: (group["frames"][()], group["features"][()])
            for video, group in handle.items()
            if group.attrs["complete"]
        }


def _command(videos: Path, out: Path, config: Path, overrides: list[str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "feature_extraction.cli", "--videos", str(videos), "--out", str(out),
        "-c", str(config), "--progress", "false", *overrides, *extra,
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    environment = dict(os.environ, WANDB_MODE="disabled")
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), environment.get("PYTHONPATH", "")])
    return environment


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def _descendants(pid: int) -> set[int]:
    table, found, frontier = _process_table(), set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _process_table()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def _assert_same(left: dict, right: dict) -> None:
    assert sorted(left) == sorted(right)
    for video in left:
        assert np.array_equal(left[video][0], right[video][0])
        np.testing.assert_allclose(left[video][1], right[video][1], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_run_killed_mid_video_resumes_to_the_same_result(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    videos = tmp_path / "videos"
    make_video("videos/A.mp4", num_frames=20)
    overrides = [
        *tiny_overrides,
        "--modalities",
        "rgb",
        "flow",
        "--batch_size",
        "2",
        "--threads",
        "1",
    ]
    out = tmp_path / "out"
    assert (
        main(
            [
                "--videos",
                str(videos),
                "--out",
                str(out),
                "-c",
                str(tiny_config),
                "--progress",
                "false",
                *overrides,
            ]
        )
        == 0
    )
    for name in ("B", "C", "D"):
        make_video(f"videos/{name}.mp4", num_frames=90)
    # One DataLoader worker: it must not outlive the killed process.
    killed_run = [*overrides, "--num_workers", "1"]
    process = subprocess.Popen(
        _command(videos, out, tiny_config, killed_run), env=_environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    staging = out / ".rulstm-extract" / "staging" / "rgb"
    deadline = time.monotonic() + 240
    try:
        # Kill once one new video is finished and another one is half-written.
        while time.monotonic() < deadline and process.poll() is None:
            if len(list(staging.glob("*.h5"))) >= 2:
                time.sleep(0.3)
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed"
        helpers = _descendants(process.pid)  # the fork server and the worker
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert helpers, "no worker process was running"
    deadline = time.monotonic() + 20
    while _alive(helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(helpers), "worker processes outlived the killed extraction"
    # The output written before the crash is untouched and readable; nothing half-done is
    # marked complete.
    assert sorted(_read(out / "rgb.h5")) == ["A"]
    for path in staging.glob("*.h5"):
        try:
            with h5py.File(path, "r") as handle:
                assert all(
                    not g.attrs["complete"] or len(g["frames"]) == 90 for g in handle.values()
                )
        except OSError:
            pass  # a staging file killed mid-write may be unreadable: the rerun redoes it
    assert (
        main(
            [
                "--videos",
                str(videos),
                "--out",
                str(out),
                "-c",
                str(tiny_config),
                "--progress",
                "false",
                *overrides,
            ]
        )
        == 0
    )
    clean = tmp_path / "clean"
    assert (
        main(
            [
                "--videos",
                str(videos),
                "--out",
                str(clean),
                "-c",
                str(tiny_config),
                "--progress",
                "false",
                *overrides,
            ]
        )
        == 0
    )
    for modality in ("rgb", "flow"):
        _assert_same(_read(out / f"{modality}.h5"), _read(clean / f"{modality}.h5"))


@pytest.mark.slow
def test_two_cpu_processes_with_ddp_share_the_videos(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    videos = tmp_path / "videos"
    for name, frames in (("A", 30), ("B", 20), ("C", 25)):
        make_video(f"videos/{name}.mp4", num_frames=frames)
    overrides = [*tiny_overrides, "--modalities", "rgb", "obj"]
    distributed = tmp_path / "ddp"
    result = subprocess.run(
        _command(videos, distributed, tiny_config, overrides, "--devices", "2", "--device", "cpu"),
        env=_environment(), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 done, 0 skipped, 0 failed" in result.stdout
    assert "processes: 2 (videos per rank: 2, 1)" in result.stdout  # both ranks worked
    single = tmp_path / "single"
    assert (
        main(
            [
                "--videos",
                str(videos),
                "--out",
                str(single),
                "-c",
                str(tiny_config),
                "--progress",
                "false",
                *overrides,
            ]
        )
        == 0
    )
    for modality in ("rgb", "obj"):
        _assert_same(_read(distributed / f"{modality}.h5"), _read(single / f"{modality}.h5"))
    assert sorted(p.name for p in distributed.iterdir()) == ["obj.h5", "rgb.h5"]


def test_sigterm_stops_the_run_and_the_same_command_resumes(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str], monkeypatch, capsys
) -> None:
    """A scheduler's SIGTERM (Lightning records it; its predict loop never checks) stops the
    extraction after the current chunk with one line and status 143; the rerun finishes and
    equals an uninterrupted run."""
    from feature_extraction.loop import StagingSink

    for name in ("A", "B"):
        make_video(f"videos/{name}.mp4", num_frames=30)
    args = [*tiny_overrides, "--batch_size", "4", "--num_workers", "0", "--progress", "false"]

    def run(out: Path) -> int:
        command = ["--videos", str(tmp_path / "videos"), "--out", str(out), "-c", str(tiny_config)]
        return main([*command, *args])

    assert run(tmp_path / "straight") == 0
    original = StagingSink.write_on_batch_end
    calls = {"n": 0}

    def terminated_after_two_chunks(self, trainer, *rest, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            trainer._signal_connector.received_sigterm = True  # what Lightning's handler does
        return original(self, trainer, *rest, **kwargs)

    monkeypatch.setattr(StagingSink, "write_on_batch_end", terminated_after_two_chunks)
    capsys.readouterr()
    assert run(tmp_path / "resumed") == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted by SIGTERM" in err[0] and "rerun the same" in err[0]
    monkeypatch.setattr(StagingSink, "write_on_batch_end", original)
    assert run(tmp_path / "resumed") == 0
    for modality in ("rgb", "flow", "obj"):
        left = _read(tmp_path / "straight" / f"{modality}.h5")
        right = _read(tmp_path / "resumed" / f"{modality}.h5")
        assert left.keys() == right.keys() == {"A", "B"}
        for video in left:
            assert np.array_equal(left[video][0], right[video][0])
            assert np.array_equal(left[video][1], right[video][1])


def _file_size_limit(limit: int):
    def set_limit() -> None:
        # Ignored SIGXFSZ: a write past the limit returns EFBIG ("File too large").
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


@pytest.mark.slow
def test_a_full_disk_fails_with_one_line_keeps_finished_files_and_resumes(
    tmp_path: Path, make_video, tiny_config: Path, tiny_overrides: list[str]
) -> None:
    """RLIMIT_FSIZE stands in for a full disk (the same failed write(2), EFBIG for ENOSPC):
    it was a segmentation fault after dozens of h5py tracebacks (h5py/h5py#914)."""
    videos = tmp_path / "videos"
    make_video("videos/A.mp4", num_frames=20)
    overrides = [*tiny_overrides, "--modalities", "rgb"]
    out = tmp_path / "out"
    command = _command(videos, out, tiny_config, overrides)
    assert main(command[3:]) == 0
    finished = (out / "rgb.h5").read_bytes()
    for name in ("B", "C"):
        make_video(f"videos/{name}.mp4", num_frames=30)
    # A 512-d video fills one 256 KiB chunk: 200 kB stops its staging file, 700 kB the merge
    # of three videos into rgb.h5.tmp.
    staging = out / ".rulstm-extract" / "staging" / "rgb" / "B.h5"
    expected = {
        200_000: f"rulstm-extract: error: {staging}: cannot write: File too large\n",
        700_000: (
            f"rulstm-extract: error: cannot write {out / 'rgb.h5'}: "
            f"{out / 'rgb.h5.tmp'}: File too large\n"
        ),
    }
    for limit, message in expected.items():
        result = subprocess.run(
            command, env=_environment(), capture_output=True, text=True, timeout=300,
            preexec_fn=_file_size_limit(limit),
        )  # fmt: skip
        assert (result.returncode, result.stderr) == (1, message), result.stderr[-3000:]
        assert (out / "rgb.h5").read_bytes() == finished
    assert main(command[3:]) == 0  # the rerun resumes
    assert sorted(_read(out / "rgb.h5")) == ["A", "B", "C"]
