"""``rulstm-demo``: anticipate actions live on a video and write it back with an overlay.

The video is decoded at the target fps (frames numbered 1-based, as in the extraction),
every frame is pushed to a :class:`~feature_extraction.streaming.StreamingExtractor` (which
keeps the optical-flow history), and every ``alpha`` seconds the features of the current
frame go through one :meth:`~rulstm.online.OnlineAnticipator.step`. Nothing is extracted
ahead: the demo is what a live system would see.

Examples::

    rulstm-demo --video P01_11.mp4 --checkpoint fusion.ckpt --out demo.mp4 \\
        --annotations builtin:ek55/validation.csv --actions builtin:ek55/actions.csv
    rulstm-demo --video clip.mkv --checkpoint rgb.ckpt --extract_config configs/extract/cpu.yaml \\
        --out demo.mp4 -- --rgb.weights none

Arguments after ``--`` are extraction options, exactly as for ``rulstm-extract``
(``--rgb.backbone resnet18``, ``--flow.method dis``); they override ``--extract_config``.

Step schedule: step ``j = 1, 2, ...`` happens at frame ``floor(j * alpha * fps)`` (frames 7,
15, 22, 30, ... for 0.25 s at 30 fps), the same rounding as the RU-LSTM sampling, so steps
are ``alpha`` seconds apart on average and never drift. ``--every N`` refreshes the displayed
prediction on every N-th step only (N * alpha seconds); the model still steps every
``alpha``, as it was trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epic_protocol.errors import cli_main

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.25


class DemoError(ValueError):
    """Unusable input (video, checkpoint, configuration); the message names the culprit."""


@dataclass(frozen=True)
class DemoOptions:
    """Everything ``rulstm-demo`` takes (see ``rulstm-demo --help``)."""

    video: Path
    checkpoint: Path
    out: Path = Path("demo.mp4")
    extract_config: Path | None = None
    extract_overrides: Sequence[str] = ()
    annotations: str | None = None
    video_id: str | None = None
    actions: str | None = None
    verb_classes: str | None = None
    noun_classes: str | None = None
    every: int = 1
    overlay_gt: bool = True
    overlay_detections: bool = True
    fps: float | None = None
    device: str | None = None
    alpha: float | None = None
    horizon: float = 1.0
    top_k: int = 5
    modality: str | None = None
    min_height: int = 360
    max_height: int = 1080
    duration: float | None = None
    crf: int = 23
    progress: bool = True


@dataclass(frozen=True)
class DemoSummary:
    out: Path
    frames: int
    steps: int
    width: int
    height: int
    fps: float
    wall_s: float  # the whole run, loading included
    extract_s: float  # pushing frames to the extractor
    anticipate_s: float  # anticipator steps

    def format(self) -> str:
        per_step = (self.extract_s + self.anticipate_s) / max(1, self.steps)
        return (
            f"{self.out}: {self.frames} frames {self.width}x{self.height} at {self.fps:g} fps, "
            f"{self.steps} anticipation steps, {self.wall_s:.1f} s wall "
            f"(extraction {self.extract_s:.1f} s, anticipation {self.anticipate_s:.2f} s, "
            f"{1000 * per_step:.0f} ms of extraction + anticipation per step)"
        )


# --------------------------------------------------------------------------- checkpoint
@dataclass(frozen=True)
class LoadedModel:
    anticipator: Any  # rulstm.online.OnlineAnticipator
    dims: dict[str, int]  # modality -> feature size the model reads
    alpha: float


def load_model(
    path: Path,
    *,
    device: torch.device,
    alpha: float | None = None,
    modality: str | None = None,
    available: Sequence[str] = (),
    horizon: float = 1.0,
) -> LoadedModel:
    """The online anticipator of a RU-LSTM branch or fusion checkpoint.

    ``alpha`` and a branch's ``modality`` come from the checkpoint's hyper-parameters when it
    was written by ``rulstm fit``; otherwise from the arguments (a branch's modality may also
    be inferred when ``available`` holds a single modality).
    """
    from rulstm.checkpoints import load_net, read_checkpoint
    from rulstm.models import RULSTM, RULSTMFusion
    from rulstm.online import OnlineAnticipator

    path = Path(path)
    try:
        checkpoint = read_checkpoint(path)
        net = load_net(path, checkpoint=checkpoint)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise DemoError(str(error)) from None
    if not isinstance(net, RULSTM | RULSTMFusion):
        raise DemoError(
            f"{path} holds a {type(net).__name__}; the demo runs a RU-LSTM branch or fusion"
        )
    hparams = checkpoint.get("hyper_parameters") or {}
    if hparams.get("task", "anticipation") != "anticipation":
        raise DemoError(f"{path} was trained for {hparams['task']}, not anticipation")
    alpha = alpha or hparams.get("alpha") or DEFAULT_ALPHA
    if isinstance(net, RULSTMFusion):
        dims = {name: branch.feat_dim for name, branch in net.branches.items()}
        modality = None
    else:
        modality = modality or hparams.get("modality")
        if modality is None and len(available) == 1:
            modality = available[0]
        if modality is None:
            raise DemoError(
                f"{path} is a single-branch checkpoint that does not record its modality; "
                "pass --modality rgb|flow|obj"
            )
        dims = {modality: net.feat_dim}
    steps = int(hparams.get("anticipation_steps", 8))
    times = [alpha * k for k in range(steps, 0, -1)]
    if not any(math.isclose(t, horizon) for t in times):
        times.append(horizon)  # OnlineAnticipator checks that it is a multiple of alpha
    try:
        anticipator = OnlineAnticipator(
            net, modality=modality, alpha=alpha, times=sorted(times, reverse=True), device=device
        )
    except ValueError as error:
        raise DemoError(f"--horizon {horizon}: {error}") from None
    return LoadedModel(anticipator=anticipator, dims=dims, alpha=alpha)


# --------------------------------------------------------------------------- extraction
def load_extract_config(
    config_path: Path | None, overrides: Sequence[str], *, fps: float | None = None
) -> Any:
    """The ExtractConfig of ``--extract_config`` and the extraction options after ``--``."""
    from feature_extraction.config import load_config

    if config_path is not None and not Path(config_path).is_file():
        raise DemoError(f"extraction config not found: {config_path}")
    extra = list(overrides) + (["--fps", str(fps)] if fps is not None else [])
    try:
        return load_config(config_path, extra)
    except Exception as error:  # jsonargparse reports bad options with several error types
        raise DemoError(f"extraction config {config_path or '(defaults)'}: {error}") from None


def build_extractor(
    config: Any,
    *,
    needed: Mapping[str, int],
    device: torch.device | None,
    checkpoint: Path,
    config_name: str,
) -> Any:
    """A StreamingExtractor computing only the modalities the model reads, after checking
    that the config produces them with the model's feature sizes."""
    from feature_extraction.streaming import StreamingExtractor

    missing = [m for m in needed if m not in config.modalities]
    if missing:
        raise DemoError(
            f"{checkpoint} reads modalities {list(needed)}, but the extraction config "
            f"{config_name} produces {list(config.modalities)} (missing {missing})"
        )
    # Only extract what the model reads (a single RGB branch needs no flow nor detector).
    config = dataclasses.replace(config, modalities=[m for m in config.modalities if m in needed])
    extractor = StreamingExtractor(config, device=device)
    wrong = {m: (extractor.dims[m], dim) for m, dim in needed.items() if extractor.dims[m] != dim}
    if wrong:
        details = ", ".join(
            f"{m}: extractor {got}, model {want}" for m, (got, want) in wrong.items()
        )
        raise DemoError(
            f"{checkpoint} does not fit the extraction config {config_name}: "
            f"feature sizes differ ({details}); extract with the backbones/detector the model "
            "was trained on"
        )
    return extractor


class FramePusher:
    """Pushes every frame to the extractor, computing features only on step frames.

    Between steps, ``push(frame, compute=False)`` only advances the flow history, and
    ``flow=False`` skips the optical flow too on frames the next step's flow stack will not
    read (it reads the fields of its last ``stack`` frames). Extractors without these keywords
    compute everything on every frame (same features, slower).
    """

    def __init__(self, extractor: Any, clock: StepClock) -> None:
        self.extractor, self.clock = extractor, clock
        try:
            keywords = inspect.signature(extractor.push).parameters
        except (TypeError, ValueError):
            keywords = {}
        self.can_skip = "compute" in keywords
        self.can_skip_flow = "flow" in keywords
        self.stack = extractor.config.flow.stack

    def push(self, image: np.ndarray, *, frame: int, due: bool) -> dict[str, np.ndarray]:
        """Push frame ``frame`` (the next one); its features when ``due`` (a step falls on
        it), else ``{}``."""
        if due or not self.can_skip:
            return self.extractor.push(image)
        if not self.can_skip_flow:
            return self.extractor.push(image, compute=False)
        # clock.next_frame is the next step's frame (steps_at has been asked for this one).
        needed = self.clock.next_frame - frame < self.stack
        return self.extractor.push(image, compute=False, flow=needed)


class StepClock:
    """Step ``j = 1, 2, ...`` falls on frame ``floor(j * alpha * fps)`` (1-based frames)."""

    def __init__(self, *, alpha: float, fps: float) -> None:
        self.alpha, self.fps = alpha, fps
        self._next = 1

    def _frame_of(self, step: int) -> int:
        # The epsilon absorbs float error (0.25 * 30 * 4 must be frame 30, not 29).
        return math.floor(step * self.alpha * self.fps + 1e-6)

    @property
    def next_frame(self) -> int:
        """The frame of the next step not yet returned by :meth:`steps_at`."""
        return self._frame_of(self._next)

    def steps_at(self, frame: int) -> int:
        """How many steps fall on ``frame`` (0 or 1 unless alpha * fps < 1); frames must be
        asked in increasing order."""
        count = 0
        while self._frame_of(self._next) <= frame:
            self._next += 1
            count += 1
        return count


# --------------------------------------------------------------------------- the run
def _boxes(
    extractor: Any, threshold: float, limit: int = 12
) -> tuple[list, tuple[int, int] | None]:
    from rulstm_apps.overlay import Box

    detections = getattr(extractor, "last_detections", None)
    image = getattr(extractor, "last_image", None)
    if detections is None or image is None or len(detections) == 0:
        return [], None
    names = list(extractor.class_names)
    order = np.argsort(-detections.scores)[:limit]
    boxes = [
        Box(
            *map(float, detections.boxes[i]),
            label=names[int(detections.labels[i])]
            if 0 <= int(detections.labels[i]) < len(names)
            else str(int(detections.labels[i])),
            score=float(detections.scores[i]),
        )
        for i in order
        if detections.scores[i] >= threshold
    ]
    return boxes, (image.shape[1], image.shape[0])


def run_demo(options: DemoOptions) -> DemoSummary:
    """Decode, extract, anticipate and write ``options.out``; see the module docstring."""
    from feature_extraction.models import resolve_device
    from feature_extraction.video import VideoError, probe_video
    from rulstm_apps.labels import ActionNames, VideoTimeline
    from rulstm_apps.overlay import Layout

    if options.every < 1:
        raise DemoError(f"--every must be >= 1, got {options.every}")
    if options.top_k < 1:
        raise DemoError(f"--top_k must be >= 1, got {options.top_k}")
    started = time.perf_counter()
    video = Path(options.video)
    try:
        info = probe_video(video)
    except VideoError as error:
        raise DemoError(f"--video: {error}") from None
    if Path(options.out).resolve() == video.resolve():
        raise DemoError(f"--out {options.out} would overwrite the input video")

    device = resolve_device(options.device) if options.device else None
    config = load_extract_config(options.extract_config, options.extract_overrides, fps=options.fps)
    model = load_model(
        Path(options.checkpoint),
        device=device or torch.device("cpu"),
        alpha=options.alpha,
        modality=options.modality,
        available=config.modalities,
        horizon=options.horizon,
    )
    extractor = build_extractor(
        config,
        needed=model.dims,
        device=device,
        checkpoint=Path(options.checkpoint),
        config_name=str(options.extract_config or "(defaults)"),
    )
    anticipator = model.anticipator
    if device is None and extractor.device != anticipator.device:
        anticipator.net.to(extractor.device)
        anticipator.device = extractor.device
    fps = extractor.config.fps
    names = ActionNames.from_files(
        num_classes=anticipator.num_classes,
        actions=options.actions,
        verb_classes=options.verb_classes,
        noun_classes=options.noun_classes,
    )
    timeline = None
    if options.annotations is not None:
        timeline = VideoTimeline.from_file(
            options.annotations,
            video_id=options.video_id or video.stem,
            fps=fps,
            vocabulary=names.vocabulary,
        )
    layout = Layout.for_video(
        info.width, info.height, min_height=options.min_height, max_height=options.max_height
    )
    total = info.estimated_frames(fps)
    last_frame = math.floor(options.duration * fps) if options.duration else None
    if last_frame is not None:
        total = min(total, last_frame)
    # The demo has no workers: the config's thread count, when set, is the models' (on a busy
    # machine 1 thread can be several times faster than oversubscribed cores).
    threads = extractor.config.threads
    with _torch_threads(threads):
        summary = _stream(
            options,
            video=video,
            extractor=extractor,
            anticipator=anticipator,
            alpha=model.alpha,
            names=names,
            timeline=timeline,
            layout=layout,
            total=total,
            last_frame=last_frame,
        )
    return dataclasses.replace(summary, wall_s=time.perf_counter() - started)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _stream(
    options: DemoOptions,
    *,
    video: Path,
    extractor: Any,
    anticipator: Any,
    alpha: float,
    names: Any,
    timeline: Any,
    layout: Any,
    total: int,
    last_frame: int | None,
) -> DemoSummary:
    """The frame loop: decode, push, step every alpha, draw, encode."""
    from tqdm import tqdm

    from feature_extraction.video import VideoError, decode_video
    from rulstm_apps.encoding import H264Writer
    from rulstm_apps.overlay import render

    fps = extractor.config.fps
    clock = StepClock(alpha=alpha, fps=fps)
    pusher = FramePusher(extractor, clock)
    if not pusher.can_skip:
        log.info("the extractor computes features on every frame (no push(compute=False))")
    threshold = extractor.config.obj.threshold
    shown = None  # the prediction on display
    steps = frames = 0
    extract_s = anticipate_s = 0.0
    started = time.perf_counter()
    anticipator.reset()
    extractor.reset()
    with (
        H264Writer(
            options.out, fps=fps, width=layout.width, height=layout.height, crf=options.crf
        ) as writer,
        tqdm(total=total, unit="frame", desc=video.name, disable=not options.progress) as bar,
    ):
        try:
            for decoded in decode_video(video, fps=fps):
                frame = decoded.frame
                if last_frame is not None and frame > last_frame:
                    break
                due = clock.steps_at(frame)
                tick = time.perf_counter()
                features = pusher.push(decoded.image, frame=frame, due=due > 0)
                extract_s += time.perf_counter() - tick
                for _ in range(due):
                    tick = time.perf_counter()
                    prediction = anticipator.step(features)
                    anticipate_s += time.perf_counter() - tick
                    if steps % options.every == 0:
                        shown = prediction
                    steps += 1
                content = _panel(
                    frame=frame,
                    fps=fps,
                    steps=steps,
                    prediction=shown,
                    options=options,
                    names=names,
                    timeline=timeline,
                    first_step_s=alpha,
                )
                boxes, box_size = (
                    _boxes(extractor, threshold)
                    if options.overlay_detections and "obj" in extractor.modalities
                    else ([], None)
                )
                content = dataclasses.replace(content, boxes=tuple(boxes))
                writer.write(render(decoded.image, content, layout, boxes_image_size=box_size))
                frames += 1
                bar.update(1)
                bar.set_postfix(steps=steps, refresh=False)
        except VideoError as error:
            raise DemoError(f"--video: {error}") from None
    if frames == 0:
        raise DemoError(f"--video {video}: no frame could be decoded")
    return DemoSummary(
        out=Path(options.out),
        frames=frames,
        steps=steps,
        width=layout.width,
        height=layout.height,
        fps=fps,
        wall_s=time.perf_counter() - started,
        extract_s=extract_s,
        anticipate_s=anticipate_s,
    )


def _panel(
    *,
    frame: int,
    fps: float,
    steps: int,
    prediction: Any,
    options: DemoOptions,
    names: Any,
    timeline: Any,
    first_step_s: float,
) -> Any:
    from rulstm_apps.overlay import PanelContent

    upcoming = timeline.upcoming(frame) if timeline is not None else None
    current = timeline.current(frame) if timeline is not None else None
    predictions: list[tuple[str, float]] = []
    hits: set[int] = set()
    weights = None
    if prediction is not None:
        top = prediction.top_k(options.top_k, time=options.horizon)
        predictions = [(names.action(action), probability) for action, probability in top]
        if upcoming is not None and upcoming.segment.action is not None:
            hits = {
                rank for rank, (action, _) in enumerate(top) if action == upcoming.segment.action
            }
        if prediction.weights:
            index = min(
                range(len(prediction.times)),
                key=lambda i: abs(prediction.times[i] - options.horizon),
            )
            weights = {name: float(w[index]) for name, w in prediction.weights.items()}
    show_gt = options.overlay_gt and timeline is not None
    return PanelContent(
        time_s=frame / fps,
        horizon=options.horizon,
        predictions=predictions,
        hits=frozenset(hits) if show_gt else frozenset(),
        weights=weights,
        current=names.segment(current) if current is not None else None,
        upcoming=(
            f"{names.segment(upcoming.segment)} in {upcoming.seconds:.1f} s"
            if upcoming is not None
            else None
        ),
        show_ground_truth=show_gt,
        status=f"observing... first step at {first_step_s:g} s",
        steps=steps,
    )


# --------------------------------------------------------------------------- command line
def build_parser() -> Any:
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="rulstm-demo",
        description="Anticipate actions while streaming a video through the feature "
        "extraction and a RU-LSTM (branch or fusion), and write the video with an overlay "
        "(H.264 MP4). Arguments after '--' are extraction options, as for rulstm-extract.",
        default_env=False,
        exit_on_error=False,
    )
    add = parser.add_argument
    add("-c", "--config", action=ActionConfigFile, help="A YAML file with these options.")
    add("--video", type=Path, required=True, help="The input video.")
    add(
        "--checkpoint",
        type=Path,
        required=True,
        help="A RU-LSTM branch or fusion .ckpt (rulstm fit or rulstm-import checkpoint).",
    )
    add("--out", type=Path, default=Path("demo.mp4"), help="The output MP4.")
    add(
        "--extract_config",
        "--extract-config",
        type=Path | None,
        default=None,
        help="Extraction config (configs/extract/*.yaml); the defaults (= default.yaml) without it.",
    )
    add(
        "--palette",
        type=Path | None,
        default=None,
        help="Shortcut for the extraction option --obj.palette (colour-blob detector palette).",
    )
    add(
        "--annotations",
        type=str | None,
        default=None,
        help="Ground truth: a RU-LSTM split CSV or an EPIC CSV (builtin:ek55/validation.csv works); the segments of --video_id are shown.",
    )
    add(
        "--video_id",
        "--video-id",
        type=str | None,
        default=None,
        help="Video id in --annotations (default: the video's file name without extension).",
    )
    add(
        "--actions",
        type=str | None,
        default=None,
        help="actions.csv naming the model's classes (default: the shipped EK55/EK100 one when the class count is 2513/3806).",
    )
    add(
        "--verb_classes",
        "--verb-classes",
        type=str | None,
        default=None,
        help="EPIC verb classes CSV: actions are named 'verb noun' (with --actions).",
    )
    add(
        "--noun_classes",
        "--noun-classes",
        type=str | None,
        default=None,
        help="EPIC noun classes CSV (see --verb_classes).",
    )
    add(
        "--every",
        type=int,
        default=1,
        help="Refresh the displayed prediction every N anticipation steps (N * alpha s); the model still steps every alpha.",
    )
    add(
        "--no-overlay-gt",
        "--no_overlay_gt",
        dest="overlay_gt",
        action="store_false",
        help="Hide the ground truth.",
    )
    add(
        "--no-detections",
        "--no_detections",
        dest="overlay_detections",
        action="store_false",
        help="Do not draw the object detector's boxes.",
    )
    add(
        "--fps",
        type=float | None,
        default=None,
        help="Frames per second of decoding, features and output (default: the extraction config's, 30).",
    )
    add(
        "--device",
        type=str | None,
        default=None,
        help="auto, cpu, cuda, cuda:N (default: the extraction config's device).",
    )
    add(
        "--alpha",
        type=float | None,
        default=None,
        help="Seconds between steps (default: the checkpoint's, else 0.25).",
    )
    add(
        "--horizon",
        type=float,
        default=1.0,
        help="Anticipation time (s) of the displayed top-k; a multiple of alpha.",
    )
    add("--top_k", "--top-k", type=int, default=5, help="Actions listed.")
    add(
        "--modality",
        type=str | None,
        default=None,
        help="The modality of a single-branch checkpoint that does not record it.",
    )
    add(
        "--min_height",
        "--min-height",
        type=int,
        default=360,
        help="Small videos are scaled up to this height (readable text).",
    )
    add(
        "--max_height",
        "--max-height",
        type=int,
        default=1080,
        help="Large videos are scaled down to this height.",
    )
    add(
        "--duration",
        type=float | None,
        default=None,
        help="Only process the first seconds of the video.",
    )
    add("--crf", type=int, default=23, help="x264 quality (lower is better and bigger).")
    add("--progress", type=bool, default=True, help="Show a progress bar.")
    return parser


def parse_options(argv: Sequence[str]) -> DemoOptions:
    """Options from command-line arguments; those after ``--`` are extraction overrides."""
    argv = list(argv)
    overrides: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, overrides = argv[:split], argv[split + 1 :]
    namespace = build_parser().parse_args(argv)
    values = {f.name: namespace.get(f.name) for f in dataclasses.fields(DemoOptions)}
    if namespace.get("palette") is not None:
        overrides = ["--obj.palette", str(namespace.palette), *overrides]
    values["extract_overrides"] = tuple(overrides)
    return DemoOptions(**values)


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
