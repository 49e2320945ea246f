"""What safe unpickling must allow to read the RU-LSTM authors' released ``.pth.tar`` files.

Both sides read such files (the TSN backbones for extraction, the RU-LSTM checkpoints for
training and evaluation). They hold numpy scalars (e.g. ``perf``, ``best_perf``), which
``torch.load(weights_only=True)`` refuses unless their reconstructors are allowed; that list is
data only, no code, and lives here once.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def numpy_scalar_globals() -> list[Any]:
    """For ``torch.serialization.safe_globals``: the numpy scalar reconstructor under its numpy
    1.x and 2.x names, ``numpy.dtype`` and the dtype classes."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [
        np.dtype,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        *dtypes,
    ]
