"""Check the annotation readers and the sampling against the real EPIC-KITCHENS files.

    python scripts/check_reference_data.py --shared ../shared/data

Prints, for each EPIC CSV, how many rows convert to exactly the RU-LSTM split's frames, and,
for each shipped split, how many rows the sampling reproduces the reference on. Not a test:
it needs the full EPIC CSVs, which the project does not ship.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

from epic_protocol import anticipation_frames, read_epic_csv, read_rulstm_split
from epic_protocol.errors import ArgumentParser, cli_main
from rulstm.resources import resolve_path


def reference_frames(start: int, fps: float = 30.0, alpha: float = 0.25, steps: int = 14):
    point = start / fps
    frames = [math.floor((point - alpha * k) * fps) for k in range(steps, 0, -1)]
    valid = [f for f in frames if f >= 1]
    return None if not valid else [f if f >= 1 else min(valid) for f in frames]


@cli_main("check_reference_data.py")
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    ann = args.shared / "annotations"
    pairs = [
        (ann / "ek55/EPIC_train_action_labels.csv", ["ek55/training.csv", "ek55/validation.csv"]),
        (ann / "ek55/EPIC_test_s1_timestamps.csv", ["ek55/test_seen.csv"]),
        (ann / "ek55/EPIC_test_s2_timestamps.csv", ["ek55/test_unseen.csv"]),
        (ann / "ek100/EPIC_100_validation.csv", ["ek100/validation.csv"]),
        (ann / "ek100/EPIC_100_test_timestamps.csv", ["ek100/test_timestamps.csv"]),
    ]
    for epic_csv, splits in pairs:
        split = {}
        for name in splits:
            split.update({s.uid: s for s in read_rulstm_split(resolve_path(f"builtin:{name}"))})
        rows = read_epic_csv(epic_csv)
        same = sum(
            (r.start_frame, r.end_frame, r.verb, r.noun)
            == (
                split[r.uid].start_frame,
                split[r.uid].end_frame,
                split[r.uid].verb,
                split[r.uid].noun,
            )
            for r in rows
        )
        print(
            f"{epic_csv.name}: {same}/{len(rows)} rows equal the RU-LSTM split ({', '.join(splits)})"
        )
    for name in [
        "ek55/validation.csv",
        "ek55/test_seen.csv",
        "ek55/test_unseen.csv",
        "ek100/validation.csv",
        "ek100/test_timestamps.csv",
    ]:
        segments = read_rulstm_split(resolve_path(f"builtin:{name}"))
        agree = 0
        for s in segments:
            mine = anticipation_frames(s.start_frame)
            ref = reference_frames(s.start_frame)
            agree += (mine is None and ref is None) or (mine is not None and mine.tolist() == ref)
        dropped = sum(anticipation_frames(s.start_frame) is None for s in segments)
        print(f"sampling {name}: {agree}/{len(segments)} rows agree ({dropped} dropped)")


if __name__ == "__main__":
    sys.exit(main())
