"""Rolling-Unrolling LSTMs for egocentric action anticipation, trained with Lightning."""

__version__ = "0.1.0"
