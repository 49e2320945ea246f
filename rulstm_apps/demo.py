"""``rulstm-demo``: anticipate actions live on a video and write it back with an overlay.

The video is decoded at the target fps (frames numbered 1-based, as in the extraction),
every frame is pushed to a :class:`~feature_extraction.streaming.StreamingExtractor` (which
keeps the optical-flow history), and every ``alpha`` seconds the features of the current
frame go through one :meth:`~rulstm.online.OnlineAnticipator.step`. Nothing is extracted
ahead: the demo is what a live system would see.

(This module is the command line: options, parsing, ``main``. The streaming loop and the
predictions file are :mod:`rulstm_apps.demo_loop`; the model :mod:`rulstm_apps.demo_model`;
the inputs (a video, a frame folder) :mod:`rulstm_apps.demo_inputs`; drawing, encoding and
naming ``overlay``, ``encoding`` and ``labels``.)

Examples::

    rulstm-demo --video P01_11.mp4 --checkpoint fusion.ckpt --out demo.mp4 \\
        --annotations builtin:ek55/validation.csv --actions builtin:ek55/actions.csv
    rulstm-demo --video clip.mkv --checkpoint rgb.ckpt --extract-config configs/extract/cpu.yaml \\
        --rgb.weights none --out demo.mp4 --predictions-out demo.jsonl
    rulstm-demo --video P01_11.mp4 --checkpoint fusion.ckpt --detections P01_11.npy \\
        --extract-config configs/extract/rulstm_tsn.yaml \\
        --rgb.weights TSN-rgb.pth.tar --flow.weights TSN-flow.pth.tar

Every option that is not one of the demo's own (``rulstm-demo --help``) is an extraction
option, exactly as for ``rulstm-extract`` (``--rgb.backbone resnet18``, ``--flow.method dis``,
``--modalities rgb flow``); they override ``--extract-config``. Arguments after ``--`` are
always extraction options.

Models: one RU-LSTM branch or fusion checkpoint, or several branch checkpoints
(``--checkpoint rgb.ckpt --checkpoint flow.ckpt``) fused by averaging their scores. A fusion
checkpoint reads Obj features from the extraction (a detector) or from ``--detections``
(the authors' per-frame detection ``.npy`` of an EPIC video, summed per class as
``rulstm-import detections`` does); with neither, its other branches are fused by averaging
their scores (MATT needs every branch), and the panel and the log say so. No modality is
ever fed zeros.

``--predictions-out FILE.jsonl`` writes one JSON object per step (see
:func:`rulstm_apps.demo_loop.prediction_record`).

Frame folders (``--frames DIR`` instead of ``--video``, as for ``rulstm-extract --frames``;
see :mod:`feature_extraction.frames`): the RU-LSTM authors' flat layout
(``<video>_frame_<n>.jpg``, ``<video>_flow_u_<n>.jpg``, ``<video>_flow_v_<n>.jpg``, 30 fps) or
EPIC-KITCHENS' (``rgb_frames/<video>/``, ``flow_frames/<video>/{u,v}/``, native rates from
``--video_info``). ``--video_id`` picks the video when the folder holds several. The RGB JPEGs
are shown; on step frames their features and those of the stored flow stack are computed
exactly as ``rulstm-extract --frames`` does (flow images as the authors made them, no flow
estimated), through :meth:`~feature_extraction.StreamingExtractor.push_stored`::

    rulstm-demo --frames data/ --checkpoint fusion.ckpt --detections P01_01.npy \
        --extract-config configs/extract/rulstm_tsn.yaml \
        --rgb.weights TSN-rgb.pth.tar --flow.weights TSN-flow.pth.tar

Step schedule: step ``j = 1, 2, ...`` happens at frame ``floor(j * alpha * fps)`` (frames 7,
15, 22, 30, ... for 0.25 s at 30 fps), the same rounding as the RU-LSTM sampling, so steps
are ``alpha`` seconds apart on average and never drift. ``--every N`` refreshes the displayed
prediction on every N-th step only (N * alpha seconds); the model still steps every
``alpha``, as it was trained.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from epic_protocol.errors import UsageError, cli_main
from rulstm_apps.demo_errors import ClipTooLongError, DemoError
from rulstm_apps.demo_inputs import check_extraction_options
from rulstm_apps.demo_loop import DemoOptions, DemoSummary, prediction_record, run_demo

__all__ = [
    "ClipTooLongError",
    "DemoError",
    "DemoOptions",
    "DemoSummary",
    "build_parser",
    "main",
    "parse_options",
    "prediction_record",
    "run_demo",
    "split_arguments",
]

# --------------------------------------------------------------------------- command line
#: DemoOptions fields whose options are written by hand: repeatable, negated or not options.
_HAND_WRITTEN = {"checkpoint", "modality", "extract_overrides", "overlay_gt", "overlay_detections"}
#: Options given once per value (``--checkpoint a --checkpoint b``), merged into one list.
_REPEATABLE = {"--checkpoint", "--modality"}


def build_parser() -> Any:
    """The demo's own options, generated from :class:`DemoOptions` (types, defaults and help
    from its fields and docstring), plus the repeatable and negated flags."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="rulstm-demo",
        description="Anticipate actions while streaming a video through the feature "
        "extraction and a RU-LSTM (branch, fusion, or branches averaged), and write the video "
        "(or the RGB JPEGs of a frame folder, --frames) "
        "with an overlay (H.264 MP4). Every other option is an extraction option, as for "
        "rulstm-extract (rulstm-extract --help lists them: --rgb.weights PATH, --modalities "
        "rgb flow, ...); so are all arguments after '--'. Options accept '-' or '_'.",
        default_env=False,
        exit_on_error=False,
    )
    add = parser.add_argument
    add("-c", "--config", action=ActionConfigFile, help="A YAML file with these options.")
    add(
        "--checkpoint",
        type=Path,
        nargs="+",
        required=True,
        help="A RU-LSTM branch or fusion .ckpt (rulstm fit or rulstm-import checkpoint). "
        "Several branch checkpoints (repeat the option) are fused by averaging their scores.",
    )
    add(
        "--modality",
        type=str,
        nargs="+",
        default=None,
        help="The modality of a branch checkpoint that does not record it (repeat the option "
        "for several checkpoints, in their order).",
    )
    add(
        "--no-overlay-gt",
        "--no_overlay_gt",
        dest="hide_gt",
        action="store_true",
        help="Hide the ground truth. Off by default: the ground truth of --annotations is "
        "shown (same as --overlay_gt false).",
    )
    add(
        "--no-detections",
        "--no_detections",
        dest="hide_detections",
        action="store_true",
        help="Do not draw the object detector's boxes. Off by default: the boxes are drawn "
        "when the extraction runs a detector (same as --overlay_detections false).",
    )
    add(
        "--palette",
        type=Path | None,
        default=None,
        help="Shortcut for the extraction option --obj.palette (colour-blob detector palette).",
    )
    parser.add_class_arguments(DemoOptions, None, skip=_HAND_WRITTEN)
    for field in ("overlay_gt", "overlay_detections"):
        add(f"--{field}", type=bool, default=True, help=_field_help(field))
    return parser


def _field_help(name: str) -> str:
    """The help of a DemoOptions field, from its docstring."""
    from docstring_parser import parse

    for param in parse(DemoOptions.__doc__ or "").params:
        if param.arg_name == name:
            return " ".join((param.description or "").split())
    return ""


def _option_names(parser: Any) -> set[str]:
    return {name for action in parser._actions for name in action.option_strings}


def _is_option(token: str) -> bool:
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)  # a negative number is a value
    except ValueError:
        return True
    return False


def split_arguments(argv: Sequence[str], demo_options: set[str]) -> tuple[list[str], list[str]]:
    """``(demo arguments, extraction arguments)``: options the demo's parser knows go to it
    (dashes in names read as underscores; repeated ``--checkpoint`` / ``--modality`` merged),
    every other option and its values, and everything after ``--``, are extraction options."""
    argv = list(argv)
    extraction: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extraction = argv[:split], argv[split + 1 :]
    demo: list[str] = []
    repeated: dict[str, list[str]] = {}
    overrides: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not _is_option(token):
            demo.append(token)  # a stray value: the parser names it
            continue
        name, equals, value = token.partition("=")
        if name not in demo_options and name.startswith("--"):
            name = "--" + name[2:].replace("-", "_")
        values = [value] if equals else []
        while index < len(argv) and not _is_option(argv[index]):
            values.append(argv[index])
            index += 1
        if name in _REPEATABLE:
            repeated.setdefault(name, []).extend(values)
        elif name in demo_options:
            demo += [name, *values]
        else:
            overrides += [name, *values]
    for name, values in repeated.items():
        demo += [name, *values]
    return demo, overrides + extraction


def parse_options(argv: Sequence[str]) -> DemoOptions:
    """Options from command-line arguments (see :func:`split_arguments`)."""
    parser = build_parser()
    demo, overrides = split_arguments(argv, _option_names(parser))
    namespace = parser.parse_args(demo)
    values = {
        f.name: namespace.get(f.name)
        for f in dataclasses.fields(DemoOptions)
        if f.name in namespace
    }
    values["checkpoint"] = tuple(namespace.checkpoint)
    if (values.get("video") is None) == (values.get("frames") is None):
        raise UsageError("give either --video or --frames (a folder of JPEG frames)")
    values["overlay_gt"] = namespace.overlay_gt and not namespace.hide_gt
    values["overlay_detections"] = namespace.overlay_detections and not namespace.hide_detections
    if namespace.get("palette") is not None:
        overrides = ["--obj.palette", str(namespace.palette), *overrides]
    _check_extraction_options(overrides)
    values["extract_overrides"] = tuple(overrides)
    return DemoOptions(**values)


def _check_extraction_options(overrides: Sequence[str]) -> None:
    """An option that is neither the demo's nor an extraction option is a usage error
    (exit status 2), found before any file is read."""
    check_extraction_options(overrides, prog="rulstm-demo")


@cli_main("rulstm-demo")
def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 written, 1 unusable input (the message names it), 2 bad arguments;
    errors are one line (``cli_main``), ``--debug`` shows the traceback."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = parse_options(sys.argv[1:] if argv is None else argv)
    summary = run_demo(options)
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
