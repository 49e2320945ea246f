"""Annotation files shipped with the package (RU-LSTM splits, action vocabularies, EPIC class
lists), addressed in configs as ``builtin:<dataset>/<file>``, e.g. ``builtin:ek55/actions.csv``."""

from __future__ import annotations

from pathlib import Path

BUILTIN_PREFIX = "builtin:"
RESOURCES_DIR = Path(__file__).resolve().parent


def resolve_path(path: str | Path) -> Path:
    """``builtin:ek55/actions.csv`` -> the shipped file (which must exist); any other string
    -> that path with ``~`` expanded (not checked: the caller reports a missing file)."""
    text = str(path)
    if not text.startswith(BUILTIN_PREFIX):
        return Path(text).expanduser()
    relative = text[len(BUILTIN_PREFIX) :].lstrip("/")
    resolved = (RESOURCES_DIR / relative).resolve()
    if RESOURCES_DIR not in resolved.parents or not resolved.is_file():
        available = sorted(str(p.relative_to(RESOURCES_DIR)) for p in RESOURCES_DIR.rglob("*.csv"))
        raise FileNotFoundError(
            f"{text!r} is not a shipped file; available: {', '.join(available)}"
        )
    return resolved
