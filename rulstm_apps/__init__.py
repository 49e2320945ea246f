"""Applications that compose both sides: the streaming demo and the quickstart."""
