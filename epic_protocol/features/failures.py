"""Writes the operating system refuses (disk full, file-size limit): one error naming the
file, and an HDF5 file that is abandoned instead of closed (h5py/h5py#914)."""

from __future__ import annotations

import atexit
import contextlib
import errno as errno_codes
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from epic_protocol.features.layout import FeatureFileAccessError


class FeatureWriteError(FeatureFileAccessError):
    """The operating system refused a write to a feature file (disk full, ``File too large``
    under a file-size limit, quota, I/O error). ``path``, ``errno`` and ``strerror`` say which
    file and why; the message is one line: ``<path>: cannot write: <strerror>``.

    The file is abandoned (see :func:`abandon_hdf5`): the process ends with status 1 once the
    error is reported, and the file is left as it is, to be discarded by the next run."""

    def __init__(self, path: Path, errno: int | None, strerror: str) -> None:
        self.path, self.errno, self.strerror = Path(path), errno, strerror
        super().__init__(f"{self.path}: cannot write: {strerror}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.errno, self.strerror)


# HDF5 reports a failed write(2) as "file write failed: ..., errno = 28, error message = 'No
# space left on device', ..." in a RuntimeError or OSError of h5py.
_HDF5_WRITE_FAILED = re.compile(r"errno = (\d+), error message = '([^']*)'")
_WRITE_ERRNOS = frozenset(
    getattr(errno_codes, name)
    for name in ("ENOSPC", "EFBIG", "EDQUOT", "EIO", "EROFS")
    if hasattr(errno_codes, name)
)


def write_failure(path: str | Path, error: BaseException) -> FeatureWriteError | None:
    """The :class:`FeatureWriteError` for ``error`` when it is the operating system refusing a
    write to ``path`` (an h5py error carrying HDF5's "file write failed" errno, or an
    ``OSError`` with a disk-full-like errno); ``None`` for any other error."""
    if isinstance(error, FeatureWriteError):
        return error
    text = str(error)
    match = _HDF5_WRITE_FAILED.search(text)
    if match and ("write" in text or "extend file" in text):  # not a failed read
        number = int(match[1])
        return FeatureWriteError(Path(path), number, os.strerror(number) or match[2])
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
        return FeatureWriteError(Path(path), error.errno, os.strerror(error.errno))
    return None


_ABANDONED: list[Any] = []


def _end_without_hdf5_cleanup() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def abandon_hdf5(*objects: Any) -> None:
    """Keep the h5py objects of a file HDF5 failed to write alive until the process ends, and
    end it with ``os._exit(1)`` (after flushing stdout and stderr) instead of a normal exit.

    Why: once a write failed (disk full, file-size limit), closing the file or its datasets
    fails again, each failure printing a traceback from a destructor, and HDF5's own clean-up
    at exit then crashes the process with a segmentation fault (h5py/h5py#914; seen with
    HDF5 2.0). So such a file is never closed: nothing of it is worth saving (writers only
    write files that a failed run discards: staging files, temporary files, videos not yet
    marked complete), and every other file was closed by the code that wrote it. Python's
    ``atexit`` callbacks run before the C library's, so the process ends with status 1
    right after the command has printed its error line.
    """
    if not _ABANDONED:
        atexit.register(_end_without_hdf5_cleanup)
    _ABANDONED.append(objects)


@contextlib.contextmanager
def reporting_write_failures(path: str | Path, *objects: Any) -> Iterator[None]:
    """Run a block of writes to the HDF5 file ``path``: an error of the operating system
    refusing a write becomes a :class:`FeatureWriteError`, and ``objects`` (the open file and
    the datasets the block uses) are abandoned (:func:`abandon_hdf5`); other errors pass."""
    try:
        yield
    except Exception as error:
        failure = write_failure(path, error)
        if failure is None:
            raise
        abandon_hdf5(*objects)
        raise failure from None
