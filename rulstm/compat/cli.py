"""``rulstm-import``: convert the RU-LSTM authors' released files.

rulstm-import features --lmdb data/ek55/rgb --modality rgb --out features/ek55/rgb.h5
rulstm-import checkpoint --in RULSTM-anticipation_0.25_6_8_rgb_best.pth.tar --out rgb.ckpt
rulstm-import detections --npy detections/ --out features/ek100/obj.h5 --num-classes 352
rulstm-import ego4d-features --features ego4d_data/v2/omnivore_video_swinl \
    --metadata ego4d_data/ego4d.json --annotations ego4d_data/v2/annotations/fho_lta_{train,val,test_unannotated}.json \
    --out data/ego4d/omnivore_video_swinl.h5
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from epic_protocol.errors import ArgumentParser, cli_main
from rulstm.compat.checkpoints import DEFAULT_MODALITIES, import_checkpoint
from rulstm.compat.detections import RELEASED_OBJ_CLASSES, import_detections
from rulstm.compat.ego4d_features import import_ego4d_features, parent_videos
from rulstm.compat.lmdb_features import DEFAULT_KEY_PATTERN, convert_lmdb


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="rulstm-import",
        description="Convert the RU-LSTM authors' released LMDB features, checkpoints and "
        "per-frame object detections. "
        "Errors are one line; --debug (or RULSTM_DEBUG=1) shows the traceback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    features = commands.add_parser(
        "features",
        help="LMDB features -> HDF5 feature file (resumable)",
        description="Convert one modality's LMDB database into the HDF5 feature layout. "
        "Re-running after an interruption skips the videos already converted.",
    )
    features.add_argument("--lmdb", required=True, help="LMDB folder (holding data.mdb)")
    features.add_argument(
        "--modality", required=True, help="rgb, flow, obj, or any other name (with --dim)"
    )
    features.add_argument("--out", required=True, help="output .h5 file")
    features.add_argument("--fps", type=float, default=30.0, help="fps of the key frame numbers")
    features.add_argument(
        "--dim",
        type=int,
        default=None,
        help="feature size, for any modality (default: inferred from the first value); "
        "sizes other than the released rgb/flow 1024 and obj 352 only warn",
    )
    features.add_argument(
        "--key-pattern",
        default=DEFAULT_KEY_PATTERN,
        help="regex with named groups 'video' and 'frame' (default: %(default)s)",
    )
    features.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage dtype of the HDF5 features; float16 halves the disk size and is read "
        "back as float32 (default: %(default)s)",
    )
    features.add_argument("--no-progress", action="store_true", help="no progress bar")

    checkpoint = commands.add_parser(
        "checkpoint",
        help="RU-LSTM .pth.tar -> Lightning .ckpt",
        description="Convert a released branch or fusion checkpoint into a Lightning-style "
        "checkpoint (weights under 'net.', network described under 'rulstm_net').",
    )
    checkpoint.add_argument("--in", dest="source", required=True, help="reference .pth.tar")
    checkpoint.add_argument("--out", required=True, help="output .ckpt")
    checkpoint.add_argument(
        "--modalities",
        nargs="+",
        default=list(DEFAULT_MODALITIES),
        help="fusion branch names in order (default: %(default)s)",
    )
    checkpoint.add_argument(
        "--dropout", type=float, default=0.8, help="dropout recorded for fine-tuning"
    )
    checkpoint.add_argument(
        "--unsafe",
        action="store_true",
        help="allow full unpickling (only for files from a trusted source)",
    )
    detections = commands.add_parser(
        "detections",
        help="per-frame detection .npy files -> obj HDF5 feature file (resumable)",
        description="Sum the detection scores of each class per frame (float32, in the listed "
        "order, as the authors' extraction) from the authors' <video>.npy detection files. "
        "Re-running after an interruption skips the videos already imported; an --out file "
        "without any complete video is recreated if its attributes differ. The files are "
        "pickled numpy arrays: import only files from a trusted source.",
    )
    detections.add_argument(
        "--npy", required=True, help="a <video>.npy file, or a folder searched recursively"
    )
    detections.add_argument("--out", required=True, help="output .h5 file (modality obj)")
    detections.add_argument(
        "--num-classes",
        type=int,
        default=RELEASED_OBJ_CLASSES,
        help="feature size: detector classes (default: %(default)s, the EK55 nouns)",
    )
    detections.add_argument(
        "--video",
        default=None,
        help="video id of a single --npy file, e.g. P01_101 (default: its name without .npy; "
        "a name that is not an EPIC-KITCHENS id warns)",
    )
    detections.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="ignore detections scoring below this (default: none, as the authors)",
    )
    detections.add_argument("--fps", type=float, default=30.0, help="fps of the frame entries")
    detections.add_argument(
        "--overwrite",
        action="store_true",
        help="redo videos already complete in --out, and replace an --out file that holds "
        "other features (another --num-classes or --fps), with a warning",
    )
    detections.add_argument("--no-progress", action="store_true", help="no progress bar")

    ego4d = commands.add_parser(
        "ego4d-features",
        help="Ego4D's released per-video features (<video_uid>.pt) -> HDF5 (resumable)",
        description="Import the Ego4D CLI's omnivore_video_swinl / slowfast8x8_r101_k400 "
        "features (windows of 32 frames at stride 16, back-padded last window), each window "
        "stored at its last frame, keyed by video_uid at 30 fps (rulstm.compat.ego4d_features).",
    )
    ego4d.add_argument("--features", required=True, help="folder of <video_uid>.pt files")
    ego4d.add_argument("--metadata", required=True, help="Ego4D's ego4d.json (video lengths)")
    ego4d.add_argument("--out", required=True, help="output .h5 file")
    ego4d.add_argument("--modality", default="rgb", help="modality name (default: %(default)s)")
    ego4d_only = ego4d.add_mutually_exclusive_group()
    ego4d_only.add_argument(
        "--videos", nargs="+", default=None, help="only these video uids (default: every file)"
    )
    ego4d_only.add_argument(
        "--annotations",
        nargs="+",
        default=None,
        help="only the parent videos (video_uid) of the clips these fho_lta_*.json files name "
        "(default: every file of --features)",
    )
    ego4d.add_argument(
        "--before-first",
        choices=("zeros", "error"),
        default="zeros",
        help="what a step before the first window ends (frames 1-31) reads: a zero vector "
        "stored at frame 1, or an error naming the video and frame (default: %(default)s)",
    )
    ego4d.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    return parser


@cli_main("rulstm-import")
def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 converted, 1 unusable input (one line naming it), 2 bad arguments."""
    args = _parser().parse_args(argv)
    if args.command == "features":
        summary = convert_lmdb(
            args.lmdb,
            args.out,
            modality=args.modality,
            fps=args.fps,
            dim=args.dim,
            key_pattern=args.key_pattern,
            progress=not args.no_progress,
            dtype=args.dtype,
        )
        print(summary)
    elif args.command == "detections":
        summary = import_detections(
            args.npy,
            args.out,
            num_classes=args.num_classes,
            video=args.video,
            threshold=args.threshold,
            fps=args.fps,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        print(summary)
    elif args.command == "ego4d-features":
        summary = import_ego4d_features(
            args.features,
            args.out,
            metadata=args.metadata,
            modality=args.modality,
            videos=args.videos if args.annotations is None else parent_videos(args.annotations),
            before_first=args.before_first,
            dtype=args.dtype,
        )
        print(summary)
    else:
        converted = import_checkpoint(
            args.source,
            args.out,
            modalities=args.modalities,
            dropout=args.dropout,
            unsafe=args.unsafe,
        )
        print(f"{args.out}: {converted.class_path} {converted.init_args}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
