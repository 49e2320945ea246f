"""A disk that fills up (or a file-size limit) while feature files are written: one error line
naming the file and the OS error, exit status 1, no crash (h5py/h5py#914), other files intact.

Each case runs in a child process: a failed HDF5 write ends the process (``abandon_hdf5``).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest

from epic_protocol.features import (
    FeatureFileError,
    FeatureWriteError,
    complete_videos,
    write_failure,
)

REPO = Path(__file__).resolve().parents[2]

# Writes videos A (finished, closed) then B, 20 appends of 64 rows of 512 float32 (2.6 MB).
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from epic_protocol.errors import cli_main
    from epic_protocol.features import FeatureFileWriter

    @cli_main("probe")
    def main(argv):
        done, path = argv
        with FeatureFileWriter(done, modality="rgb", dim=512, fps=30) as writer:
            writer.write_video("A", np.arange(1, 11), np.ones((10, 512), np.float32))
        with FeatureFileWriter(path, modality="rgb", dim=512, fps=30) as writer:
            writer.start_video("B")
            for step in range(20):
                rows = np.arange(1, 65) + 64 * step
                writer.append("B", rows, np.full((64, 512), step, np.float32))
            writer.finish_video("B")

    sys.exit(main(sys.argv[1:]))
    """
)


def _run(script: str, *args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    def set_limit() -> None:
        # Ignored SIGXFSZ: a write past the limit returns EFBIG ("File too large").
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    environment = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=set_limit if limit is not None else None,
    )


def _check_one_line_and_first_file_intact(result, path: Path, done: Path, message: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert result.stderr == f"probe: error: {path}: cannot write: {message}\n"
    with h5py.File(done, "r") as handle:  # the finished file: closed before, readable
        assert handle["A"].attrs["complete"] and handle["A"]["features"].shape == (10, 512)


def _complete_videos(path: Path) -> set[str]:
    """Videos marked complete in what is left of the file that could not be written."""
    try:
        return complete_videos(path)
    except (FeatureFileError, RuntimeError):  # cut short (HDF5: "addr overflow"): discarded
        return set()


def test_a_file_size_limit_ends_with_one_line_and_status_1(tmp_path: Path) -> None:
    done, path = tmp_path / "done.h5", tmp_path / "big.h5"
    result = _run(WRITER, str(done), str(path), limit=1_000_000)
    _check_one_line_and_first_file_intact(result, path, done, "File too large")
    assert _complete_videos(path) == set()  # B is redone by a rerun


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 1 MiB tmpfs (needs root, or a container that allows mounting)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)  # busy: detach it


def test_a_full_disk_ends_with_one_line_and_status_1(small_tmpfs: Path) -> None:
    done, path = small_tmpfs / "done.h5", small_tmpfs / "big.h5"
    result = _run(WRITER, str(done), str(path))
    _check_one_line_and_first_file_intact(result, path, done, "No space left on device")
    assert _complete_videos(path) == set()


def test_write_failure_recognises_hdf5_and_os_errors(tmp_path: Path) -> None:
    hdf5 = RuntimeError(
        "Unable to synchronously flush file (file write failed: time = x, filename = 'a.h5', "
        "file descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0)"
    )
    failure = write_failure(tmp_path / "a.h5", hdf5)
    assert isinstance(failure, FeatureWriteError) and failure.errno == 28
    assert str(failure) == f"{tmp_path / 'a.h5'}: cannot write: No space left on device"
    extend = OSError("Can't decrement id ref count (unable to extend file properly, errno = 27, "
                     "error message = 'File too large')")  # fmt: skip
    assert write_failure("a.h5", extend).strerror == "File too large"
    read = OSError("Can't read data (file read failed: time = x, errno = 5, error message = 'x')")
    assert write_failure("a.h5", read) is None
    assert write_failure("a.h5", OSError(27, "File too large")).strerror == "File too large"
    assert write_failure("a.h5", OSError(2, "No such file")) is None
    assert write_failure("a.h5", ValueError("bad shape")) is None
