"""Rolling-Unrolling LSTMs for egocentric action anticipation, trained with Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["OnlineAnticipator", "OnlinePrediction", "__version__"]

if TYPE_CHECKING:
    from rulstm.online import OnlineAnticipator, OnlinePrediction


def __getattr__(name: str) -> Any:
    # Lazy, so that light modules (rulstm.resources, rulstm.data) do not pull in the models.
    if name in ("OnlineAnticipator", "OnlinePrediction"):
        from rulstm import online

        return getattr(online, name)
    raise AttributeError(f"module 'rulstm' has no attribute {name!r}")
