"""The error every part of ``rulstm-demo`` raises on unusable input (kept apart so that the
demo's sources, model and loop share it without importing each other)."""

from __future__ import annotations

from epic_protocol.errors import DataError


class DemoError(DataError, ValueError):
    """Unusable input (video, checkpoint, configuration); the message names the culprit."""


class ClipTooLongError(DemoError):
    """The clip went on past ``max_seconds`` while it was decoded (nothing is written)."""
