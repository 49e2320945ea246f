"""``rulstm-score``: score a predictions file against annotations.

rulstm-score ego4d-lta --annotations fho_lta_val.json --predictions outputs.json \
    [--json metrics.json] [--num-input-actions 2] [--num-future-actions 20]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from epic_protocol.ego4d_lta import (
    NUM_FUTURE_ACTIONS,
    NUM_INPUT_ACTIONS,
    read_lta_windows,
    read_taxonomy,
)
from epic_protocol.errors import ArgumentParser, cli_main
from rulstm.evaluation.lta import score_predictions_file


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="rulstm-score",
        description="Score a predictions file against annotations. Errors are one line; "
        "--debug (or RULSTM_DEBUG=1) shows the traceback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    lta = commands.add_parser(
        "ego4d-lta",
        help="Ego4D long-term anticipation: ED@Z and AUED (verb, noun; action is ours)",
        description="ED@Z and AUED of an outputs.json (official layout) against an "
        "fho_lta_*.json with labels, computed as the official Ego4D code does; the action "
        "row over (verb, noun) pairs is this project's own addition.",
    )
    lta.add_argument("--annotations", required=True, help="fho_lta_val.json (with labels)")
    lta.add_argument("--predictions", required=True, help="outputs.json")
    lta.add_argument("--taxonomy", default=None, help="fho_lta_taxonomy.json (checks labels)")
    lta.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    lta.add_argument("--num-input-actions", type=int, default=NUM_INPUT_ACTIONS)
    lta.add_argument("--num-future-actions", type=int, default=NUM_FUTURE_ACTIONS)
    return parser


@cli_main("rulstm-score")
def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    taxonomy = read_taxonomy(args.taxonomy) if args.taxonomy else None
    windows = read_lta_windows(
        args.annotations,
        taxonomy=taxonomy,
        num_input_actions=args.num_input_actions,
        num_future_actions=args.num_future_actions,
    )
    if not windows:
        raise ValueError(
            f"{args.annotations}: no clip has {args.num_input_actions} + "
            f"{args.num_future_actions} actions, so there is no window to score"
        )
    scores = score_predictions_file(args.predictions, windows)
    print(scores.table())
    if args.json:
        path = Path(args.json)
        path.write_text(json.dumps(scores.as_dict(), indent=2))
        print(f"metrics written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
