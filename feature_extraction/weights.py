"""Where a backbone's weights come from, the rules every builder shares: a random
initialisation seeded without touching the global RNG, the spellings of "no weights", and the
hash recorded for a local weights file or folder."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch

#: Suffixes of weight and config files (hashed in a folder; a path-like weights name).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".tar", ".json")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """A block with a fixed torch RNG seed, the global RNG state left untouched (the random
    initialisation of ``none`` weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def is_random_weights(weights: str | None) -> bool:
    """Whether ``weights`` asks for a random initialisation (``None``, ``""``, ``none``,
    ``null``, ``random``, in any case)."""
    return weights is None or weights.strip().lower() in {"", "none", "null", "random"}


def file_hash(path: Path) -> str:
    """sha256 (first 16 hex digits) of a file, or of a folder's weight/config files."""
    digest = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    )
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
