"""What safe unpickling may reconstruct from the files this project reads: numpy arrays,
scalars and dtypes, nothing else. One allow-list, used two ways:

* :func:`numpy_scalar_globals` for ``torch.load(weights_only=True)`` of the RU-LSTM authors'
  ``.pth.tar`` files (TSN backbones for extraction, RU-LSTM checkpoints for training and
  evaluation), which hold numpy scalars (e.g. ``perf``, ``best_perf``);
* :func:`load_npy` for ``.npy`` files holding a pickled object array (the authors' per-frame
  detection files: an object array of float arrays), read with a restricted unpickler instead
  of ``np.load(allow_pickle=True)``, which would run whatever the file names.

The allow-list is data only, no code: a pickle naming anything else (``os.system``, a
``__reduce__`` payload, ...) is refused with :class:`RefusedPickleError` before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from epic_protocol.errors import DataError


class RefusedPickleError(DataError, pickle.UnpicklingError):
    """A pickle that names something beyond numpy arrays, scalars and dtypes."""


def _core() -> Any:
    return getattr(np, "_core", None) or np.core


def _numpy_globals() -> dict[str, Any]:
    """``"module.name" -> object`` of everything a pickled numpy array, scalar or dtype
    names, under the numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) module names."""
    multiarray = _core().multiarray
    allowed: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[f"{package}.multiarray._reconstruct"] = multiarray._reconstruct
        allowed[f"{package}.multiarray.scalar"] = multiarray.scalar
    for name in dir(np.dtypes):
        if name.endswith("DType"):
            allowed[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    return allowed


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How Python 3 pickles ``bytes`` at protocol 2 (an array's raw data):
    ``_codecs.encode(text, "latin1")``; only that encoding is accepted."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise RefusedPickleError(f"it calls _codecs.encode with {encoding!r}, not latin1")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """How Python 3 pickles ``b""`` at protocol 2 (an empty array's data): ``bytes()``."""
    if args:
        raise RefusedPickleError("it calls bytes with arguments")
    return b""


def numpy_scalar_globals() -> list[Any]:
    """For ``torch.serialization.safe_globals``: the numpy scalar reconstructor under its numpy
    1.x and 2.x names, ``numpy.dtype`` and the dtype classes."""
    allowed = _numpy_globals()
    scalar = allowed["numpy._core.multiarray.scalar"]
    dtypes = [value for key, value in allowed.items() if key.startswith("numpy.dtypes.")]
    return [
        np.dtype,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        *dtypes,
    ]


class _NumpyUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed numpy names; refuses every other global."""

    _allowed = {
        **_numpy_globals(),
        # Python 3 writes bytes this way at protocol 2; both accept only that use.
        "_codecs.encode": _latin1_bytes,
        "__builtin__.bytes": _empty_bytes,
        "builtins.bytes": _empty_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get(f"{module}.{name}")
        if found is None:
            raise RefusedPickleError(
                f"it names {module}.{name}, which is not numpy array data (only numpy arrays, "
                "scalars and dtypes are read)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickleError("it holds a persistent reference, which is not numpy data")


def load_npy(path: str | Path, *, encoding: str = "bytes") -> np.ndarray:
    """The array of a ``.npy`` file; an object array is unpickled with the numpy-only
    unpickler (``encoding`` as for ``np.load``: Python 2 strings of old files).

    Raises:
        RefusedPickleError: the pickle names anything but numpy arrays, scalars and dtypes
            (nothing it names is called).
        ValueError: not a ``.npy`` file, or a truncated one.
        OSError: unreadable file.
    """
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        if not dtype.hasobject:
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)
        try:
            array = _NumpyUnpickler(handle, encoding=encoding).load()
        except RefusedPickleError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, IndexError) as error:
            raise ValueError(f"not a readable pickled array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"the pickle holds a {type(array).__name__}, not an array")
    return array
