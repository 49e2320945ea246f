"""``rulstm-extract``: videos or JPEG frame folders -> ``OUT/rgb.h5``, ``OUT/flow.h5``,
``OUT/obj.h5``.

Examples::

    rulstm-extract --videos videos/ --out features/ -c configs/extract/default.yaml
    rulstm-extract --frames sample/ --out features/ -c configs/extract/rulstm_tsn.yaml \
        --rgb.weights TSN-rgb.pth.tar --flow.weights TSN-flow.pth.tar
    rulstm-extract --videos videos/ --out features/ --modalities rgb flow \\
        -c configs/extract/cpu.yaml --annotations training.csv validation.csv --only-needed
    rulstm-extract ... -c configs/extract/quickstart.yaml --obj.palette palette.yaml

Every config field is an option (``--rgb.backbone resnet18``, ``--flow.method dis``);
``--print_config`` shows the full configuration. Exit codes (the rule of every console
script, :mod:`epic_protocol.errors`): 0 when every video was extracted or skipped, 1 when
some failed (listed in the summary) or on a data or environment error (an output folder
holding other features or that cannot be written, bad annotations; one line), 2 for unusable
arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from epic_protocol.errors import cli_main
from feature_extraction.config import add_config_arguments, config_from_namespace


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="rulstm-extract",
        description="Extract RU-LSTM features (RGB, optical flow, objects) from videos into "
        "HDF5 files (epic_protocol layout). Reruns skip finished videos.",
        default_env=False,
    )
    parser.add_argument(
        "-c", "--config", action=ActionConfigFile, help="A YAML config (configs/extract/)."
    )
    parser.add_argument(
        "--videos",
        type=Path | None,
        default=None,
        help="A video file, or a folder searched recursively (other files are ignored).",
    )
    parser.add_argument(
        "--frames",
        type=Path | None,
        default=None,
        help="Instead of --videos: a folder of JPEG frames, searched recursively, in the RU-LSTM "
        "authors' flat layout (<video>_frame_<n>.jpg, <video>_flow_u_<n>.jpg, "
        "<video>_flow_v_<n>.jpg, 30 fps) or EPIC-KITCHENS' (rgb_frames/<video>/frame_<n>.jpg, "
        "flow_frames/<video>/{u,v}/frame_<n>.jpg, native fps: needs --video_info); .jpeg and "
        "upper case (.JPG) are read too.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="Output folder for rgb.h5, flow.h5, obj.h5."
    )
    parser.add_argument(
        "--annotations",
        type=Path,
        nargs="+",
        default=None,
        help="Segments for --only-needed: one or more RU-LSTM split CSVs or original EPIC CSVs "
        "(e.g. training.csv validation.csv test.csv), or Ego4D LTA fho_lta_*.json files (clips "
        "keyed by clip_uid: the 4 step frames of every action); the frames of all of them are "
        "extracted.",
    )
    parser.add_argument(
        "--video_info",
        type=Path | None,
        default=None,
        help="EPIC video-info CSV (native fps), needed for original EPIC CSVs and EPIC frame "
        "folders.",
    )
    parser.add_argument(
        "--only_needed",
        "--only-needed",
        type=bool,
        default=False,
        help="Extract only the frames the RU-LSTM sampling reads for --annotations.",
    )
    parser.add_argument(
        "--overwrite", type=bool, default=False, help="Re-extract videos that are already complete."
    )
    parser.add_argument(
        "--allow_truncated",
        "--allow-truncated",
        type=bool,
        default=False,
        help="Keep the decoded part of a video that ends before its container says "
        "(a file cut short) and mark it complete, recording decoded_frames and "
        "announced_frames in its attributes; without it such a video fails.",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="Processes per node (GPUs, or CPU processes with gloo); >1 runs DDP.",
    )
    parser.add_argument(
        "--num_nodes",
        type=int,
        default=1,
        help="Nodes of a distributed run (launched by SLURM/torchrun).",
    )
    parser.add_argument("--progress", type=bool, default=True, help="Show progress bars.")
    add_config_arguments(parser)
    return parser


def _flag_style(argv: Sequence[str]) -> list[str]:
    """Let boolean flags be given bare (``--only-needed``), as well as ``--only-needed true``."""
    flags = {
        "--only-needed",
        "--only_needed",
        "--overwrite",
        "--progress",
        "--allow-truncated",
        "--allow_truncated",
    }
    result: list[str] = []
    for index, argument in enumerate(argv):
        result.append(argument)
        following = argv[index + 1] if index + 1 < len(argv) else None
        if argument in flags and (following is None or following.startswith("-")):
            result.append("true")
    return result


def launcher_mismatch(devices: int, num_nodes: int) -> str | None:
    """Under torchrun (``TORCHELASTIC_RUN_ID`` set), why ``--devices``/``--num_nodes`` do not
    match the processes it started (``LOCAL_WORLD_SIZE`` per node, ``WORLD_SIZE`` in all), else
    None. Without the match each process would run a whole extraction of its own into the
    same folder instead of its share."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", devices))
    world = int(os.environ.get("WORLD_SIZE", devices * num_nodes))
    if local == devices and world == devices * num_nodes:
        return None
    return (
        f"torchrun started {local} processes per node, {world} in all, but --devices {devices} "
        f"--num_nodes {num_nodes}: give --devices {local} --num_nodes {world // max(local, 1)} "
        "(--devices = --nproc_per_node, --num_nodes = --nnodes)"
    )


@cli_main("rulstm-extract")
def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    parser = build_parser()
    parser.exit_on_error = False  # usage errors raise: cli_main prints them as one line
    arguments = _flag_style(list(sys.argv[1:] if argv is None else argv))
    namespace = parser.parse_args(arguments)
    from feature_extraction.runner import RunOptions, run_extraction

    try:
        config = config_from_namespace(parser, namespace)
    except ValueError as error:
        parser.error(str(error))
    options = RunOptions(
        videos=namespace.videos,
        out=namespace.out,
        annotations=tuple(namespace.annotations or ()) or None,
        video_info=namespace.video_info,
        only_needed=namespace.only_needed,
        overwrite=namespace.overwrite,
        allow_truncated=namespace.allow_truncated,
        devices=namespace.devices,
        num_nodes=namespace.num_nodes,
        progress=namespace.progress,
        frames=namespace.frames,
    )
    if options.only_needed and options.annotations is None:
        parser.error("--only-needed needs --annotations")
    if (options.videos is None) == (options.frames is None):
        parser.error("give either --videos or --frames")
    if options.videos is not None and not options.videos.exists():
        parser.error(f"--videos {options.videos}: no such file or folder")
    if options.frames is not None and not options.frames.is_dir():
        parser.error(f"--frames {options.frames}: no such folder")
    mismatch = launcher_mismatch(options.devices, options.num_nodes)
    if mismatch is not None:
        parser.error(mismatch)
    # Data and environment errors (an incompatible or unwritable output folder, bad
    # annotations, a missing checkpoint) reach cli_main: one line, status 1.
    summary = run_extraction(config, options)
    if summary is None:  # a non-zero rank of a distributed run: rank 0 reports
        return 0
    print(summary.format())
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
