"""Where a backbone's weights come from, the rules every builder shares: a random
initialisation seeded without touching the global RNG, the spellings of "no weights", the
hash recorded for a local weights file or folder, and the checks that a user's weights file
or model folder runs no code (:func:`check_weights_file`, :func:`check_no_remote_code`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from epic_protocol.errors import DataError

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


#: Suffixes of pickle-based (``torch.save``) weights files in a folder: read by
#: :func:`check_weights_file` before any library opens them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".tar", ".pkl", ".pickle")
#: Formats that hold no pickle (numpy archives are read with ``allow_pickle=False``).
_NO_PICKLE_SUFFIXES = (".safetensors", ".json", ".npz", ".npy", ".txt", ".md")


class RefusedWeightsError(DataError, ValueError):
    """A weights file holding Python objects beyond tensors and plain data (a pickle naming a
    function or class), or a model folder asking to run its own code. Nothing was run."""


def check_weights_file(path: Path) -> None:
    """Refuse a pickle-based weights file that ``torch.load(weights_only=True)`` rejects, before
    a library (timm, OpenCLIP, transformers) opens it, whatever that library's version passes
    to ``torch.load``: a file that passes names only tensors and plain data, so no library can
    run code from it. A folder: each file in it with a :data:`PICKLE_SUFFIXES` suffix; a file
    given itself: any suffix but safetensors/JSON/numpy. Zip-format files are memory-mapped
    (their tensors are not read).

    Raises:
        RefusedWeightsError: one line naming the file and what it names.
        ValueError: a file that is not a readable PyTorch file, naming it.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    else:
        files = [] if path.suffix.lower() in _NO_PICKLE_SUFFIXES else [path]
    for file in files:
        try:
            torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
        except pickle.UnpicklingError as error:
            named = re.search(r"GLOBAL ([\w.]+)", str(error))
            what = f" (it names {named.group(1)})" if named else ""
            raise RefusedWeightsError(
                f"{file}: refused: it holds Python objects beyond tensors and plain data{what}, "
                "which loading would run; give a state dict (torch.save(model.state_dict())) "
                "or a .safetensors file"
            ) from None
        except Exception as error:  # truncated, or not a PyTorch file: many error types
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"{file}: not a readable PyTorch weights file ({type(error).__name__}: {first})"
            ) from None


def check_no_remote_code(folder: Path) -> None:
    """Refuse a Hugging Face / OpenCLIP model folder whose JSON files name code to import
    (``auto_map``: ``transformers`` would offer to run the folder's own Python files): only
    the model classes the libraries ship are built from a user's folder.

    Raises:
        RefusedWeightsError: one line naming the JSON file and the code it names.
    """
    for file in sorted(folder.glob("*.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours to report: the library names a broken file
        if isinstance(data, dict) and data.get("auto_map"):
            names = data["auto_map"]
            shown = sorted(names.values()) if isinstance(names, dict) else names
            raise RefusedWeightsError(
                f"{file}: refused: its auto_map names code to import ({shown}); custom model "
                "code is never run: use a model type the library ships (e.g. hf:dinov2)"
            )
