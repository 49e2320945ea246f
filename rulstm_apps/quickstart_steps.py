"""What every rulstm-quickstart task shares: where the configs are, the command log and how a step
is shown and run. The next-action quickstart (:mod:`rulstm_apps.quickstart`) and the Ego4D
long-term anticipation one (:mod:`rulstm_apps.quickstart_lta`) both use these, so a step looks
and is recorded the same in either (``commands.sh`` lists every command, ready to copy).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from epic_protocol.errors import SetupError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
COMMANDS: list[str] = []  # every command of this run, in order (written to commands.sh)


class QuickstartError(SetupError):
    """A step of the quickstart failed; the message says which and where its logs are."""


def banner(step: str) -> None:
    """Print the heading of a step."""
    print(f"\n=== {step} ===", flush=True)


def show(program: str, args: Sequence[str]) -> None:
    """Print the command line a user would type for this step (and record it)."""
    line = f"{program} {shlex.join(args)}"
    COMMANDS.append(line)
    print(f"$ {line}", flush=True)


def run_rulstm(args: list[str]):
    """Show, then run ``rulstm ARGS`` in this process; returns the LightningCLI."""
    from rulstm.cli import build_cli

    show("rulstm", args)
    return build_cli(args)


def config_path(*parts: str) -> str:
    """``configs/<parts>`` of the source checkout.

    Raises:
        QuickstartError: the file is missing (the package was installed without its checkout).
    """
    path = CONFIGS.joinpath(*parts)
    if not path.is_file():
        raise QuickstartError(
            f"{path} not found: rulstm-quickstart runs from a source checkout "
            "(pip install -e .), which holds the configs/ folder"
        )
    return str(path)
