"""Write random-weight RU-LSTM checkpoints in the authors' released layout and under their
released names: the rgb, flow and obj branches and the MATT fusion of their anticipation models
(alpha 0.25 s, 6 encoding and 8 anticipation steps), for trying ``rulstm-import checkpoint`` and
the released-model demo end to end without the authors' files. The predictions mean nothing.

    python scripts/make_rulstm_checkpoints.py --out models/ek55/ [--dataset ek55|ek100] \\
        [--hidden 1024] [--seed 0] [--overwrite]

The files are ``RULSTM-anticipation_0.25_6_8_{rgb,flow,obj,fusion}_best.pth.tar`` (EK55, 2513
actions) or ``..._{rgb,flow,obj,fusion}_mt5r_best.pth.tar`` (EK100, 3806 actions); features
1024 (rgb, flow) and 352 (obj); ``{"state_dict", "epoch", "perf", "best_perf"}`` with numpy
scalars, as the authors' training script saves them. alpha and the step counts are only part of
the names: the weights do not depend on them. The fusion's branches are the three branch files'
weights (with a random MATT on top), so the fused and the averaged-branches demos agree on
them. Existing files are kept unless ``--overwrite``: the authors' files have the same names.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epic_protocol.errors import ArgumentParser, UsageError, cli_main  # noqa: E402
from rulstm.compat import write_reference_checkpoint  # noqa: E402
from rulstm.models import RULSTM, RULSTMFusion  # noqa: E402

PROG = "make_rulstm_checkpoints.py"
#: Classes of the released action classifiers, and the suffix of the released file names.
DATASETS = {"ek55": (2513, ""), "ek100": (3806, "_mt5r")}
#: The released models' modalities in fusion order, and their feature sizes.
FEAT_DIMS = {"rgb": 1024, "flow": 1024, "obj": 352}
#: The released anticipation models' alpha, encoding and anticipation steps (names only).
SETTINGS = "0.25_6_8"


def released_name(modality: str, dataset: str) -> str:
    """``RULSTM-anticipation_0.25_6_8_<modality>[_mt5r]_best.pth.tar``, as the authors'
    download scripts name the files (``modality`` is rgb, flow, obj or fusion)."""
    return f"RULSTM-anticipation_{SETTINGS}_{modality}{DATASETS[dataset][1]}_best.pth.tar"


def random_models(
    *, num_classes: int, hidden: int, seed: int
) -> tuple[dict[str, RULSTM], RULSTMFusion]:
    """The three branches (PyTorch's default initialisation, as the authors' untrained models)
    and the MATT fusion over those same branch objects, seeded. The global RNG is restored
    afterwards, so callers (tests) see no change."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        branches = {
            modality: RULSTM(num_classes=num_classes, feat_dim=dim, hidden=hidden)
            for modality, dim in FEAT_DIMS.items()
        }
        fusion = RULSTMFusion.from_branches(branches)
    return branches, fusion


def _megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


@cli_main(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 written, 1 unusable --out or existing files (one line), 2 bad arguments."""
    parser = ArgumentParser(
        prog=PROG,
        description="Write random-weight RU-LSTM checkpoints under the authors' released names.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the four files")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ek55")
    parser.add_argument("--hidden", type=int, default=1024, help="LSTM size (released: 1024)")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="action classes (default: the dataset's, 2513 or 3806; smaller for tests)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace files of the same names in --out"
    )
    args = parser.parse_args(argv)
    num_classes = DATASETS[args.dataset][0] if args.num_classes is None else args.num_classes
    if min(args.hidden, num_classes) < 1:
        raise UsageError(
            f"--hidden and --num-classes must be >= 1, got {args.hidden}, {num_classes}"
        )
    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"--out {args.out}: exists and is not a folder")
    paths = {m: args.out / released_name(m, args.dataset) for m in (*FEAT_DIMS, "fusion")}
    existing = [str(p) for p in paths.values() if p.exists()]
    # Checked before writing anything: a half-replaced set would mix two seeds.
    if existing and not args.overwrite:
        raise FileExistsError(
            f"{existing[0]} exists ({len(existing)} of the 4 files); pass --overwrite to replace "
            "them (the authors' released files have these names)"
        )
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file on the way: name --out, not just the errno
        raise NotADirectoryError(
            f"--out {args.out}: cannot create the folder ({error.strerror})"
        ) from None

    branches, fusion = random_models(num_classes=num_classes, hidden=args.hidden, seed=args.seed)
    for modality, branch in branches.items():
        path = write_reference_checkpoint(branch, paths[modality])
        print(
            f"{path}: random {modality} branch (features {branch.feat_dim}, hidden "
            f"{args.hidden}, {num_classes} classes), {_megabytes(path)}",
            flush=True,
        )
    path = write_reference_checkpoint(fusion, paths["fusion"])
    print(
        f"{path}: random MATT fusion of the {'/'.join(branches)} branches above, "
        f"{_megabytes(path)}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
