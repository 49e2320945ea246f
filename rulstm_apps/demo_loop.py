"""The streaming loop of ``rulstm-demo``: :func:`run_demo` opens the model and the input
source, steps the anticipator on every step frame the source yields, draws each frame with
the overlay, encodes it and writes the predictions file.

The sources (:mod:`rulstm_apps.demo_inputs`) yield one record per frame with its features;
the model is :mod:`rulstm_apps.demo_model`; drawing, encoding and naming are ``overlay``,
``encoding`` and ``labels``; the command line is :mod:`rulstm_apps.demo`.

Step schedule: step ``j = 1, 2, ...`` happens at frame ``floor(j * alpha * fps)`` (frames 7,
15, 22, 30, ... for 0.25 s at 30 fps), the same rounding as the RU-LSTM sampling, so steps
are ``alpha`` seconds apart on average and never drift. ``every = N`` refreshes the displayed
prediction on every N-th step only (N * alpha seconds); the model still steps every
``alpha``, as it was trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rulstm_apps.demo_errors import DemoError
from rulstm_apps.demo_inputs import (
    DetectionFeatures,
    FrameFolder,
    FrameFolderSource,
    StepClock,
    VideoSource,
    build_extractor,
    load_extract_config,
)
from rulstm_apps.demo_model import check_demo_backbones, load_model

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.25


@dataclass(frozen=True)
class DemoOptions:
    """Options of rulstm-demo.

    Args:
        checkpoint: A RU-LSTM branch or fusion .ckpt (rulstm fit or rulstm-import
            checkpoint); several branch checkpoints (--checkpoint rgb.ckpt --checkpoint
            flow.ckpt) are fused by averaging their scores.
        video: The input video (or --frames).
        frames: Instead of --video: a folder of JPEG frames, as for rulstm-extract --frames:
            the RU-LSTM authors' layout (<video>_frame_<n>.jpg, <video>_flow_u_<n>.jpg,
            <video>_flow_v_<n>.jpg, 30 fps) or EPIC-KITCHENS' (rgb_frames/<video>/frame_<n>.jpg,
            flow_frames/<video>/{u,v}/frame_<n>.jpg; needs --video_info). Flow features come
            from the stored flow images.
        video_info: EPIC video-info CSV (EPIC_100_video_info.csv): the native frame rates of
            EPIC-KITCHENS frame folders.
        out: The output MP4.
        extract_config: Extraction config (configs/extract/*.yaml); the defaults
            (= default.yaml) without it. Other extraction options override it.
        extract_overrides: Extraction options (as for rulstm-extract), e.g. ['--rgb.weights',
            'none'].
        detections: The authors' per-frame detections of this EPIC video (<video>.npy): the
            Obj features of a fusion checkpoint, instead of a detector.
        predictions_out: Write the predictions of every step to this JSON Lines file.
        annotations: Ground truth: a RU-LSTM split CSV or an EPIC CSV
            (builtin:ek55/validation.csv works); the segments of video_id are shown.
        video_id: Video id in annotations, and the video of --frames (default: the video's
            file name without extension; the folder's only video).
        actions: actions.csv naming the model's classes (default: the shipped EK55/EK100 one
            when the class count is 2513/3806).
        verb_classes: EPIC verb classes CSV: actions are named 'verb noun' (with actions).
        noun_classes: EPIC noun classes CSV (see verb_classes).
        every: Refresh the displayed prediction every N anticipation steps (N * alpha s); the
            model still steps every alpha.
        overlay_gt: Show the ground truth (when annotations hold the video).
        overlay_detections: Draw the object detector's boxes.
        fps: Frames per second of decoding, features and output (default: the extraction
            config's, 30).
        device: auto, cpu, cuda, cuda:N (default: the extraction config's device).
        weights: Precision of the anticipation model's weights: fp32 (exact), bf16, int8
            (CPU only) or auto (bf16 where the device computes bf16 natively: a GPU with
            bf16, a CPU with AVX-512 BF16 or AMX; else fp32).
        alpha: Seconds between steps (default: the checkpoint's, else 0.25).
        horizon: Anticipation time (s) of the displayed top-k; a multiple of alpha.
        top_k: Actions listed (panel and predictions file).
        modality: The modality of a branch checkpoint that does not record it (one per
            checkpoint when several are given).
        min_height: Small videos are scaled up to this height (readable text).
        max_height: Large videos are scaled down to this height.
        duration: Only process the first seconds of the video.
        max_seconds: Refuse a clip longer than this, counted while decoding (a raw H.264 or
            MPEG-2 stream announces no duration): decoding stops past it (the web demo's
            limit).
        crf: x264 quality (lower is better and bigger).
        progress: Show a progress bar.
    """

    checkpoint: Path | Sequence[Path]
    video: Path | None = None
    frames: Path | None = None
    video_info: Path | None = None
    out: Path = Path("demo.mp4")
    extract_config: Path | None = None
    extract_overrides: Sequence[str] = ()
    detections: Path | None = None
    predictions_out: Path | None = None
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
    weights: Literal["auto", "fp32", "bf16", "int8"] = "fp32"
    alpha: float | None = None
    horizon: float = 1.0
    top_k: int = 5
    modality: str | Sequence[str] | None = None
    min_height: int = 360
    max_height: int = 1080
    duration: float | None = None
    max_seconds: float | None = None
    crf: int = 23
    progress: bool = True

    @property
    def checkpoints(self) -> tuple[Path, ...]:
        if isinstance(self.checkpoint, str | Path):
            return (Path(self.checkpoint),)
        return tuple(Path(path) for path in self.checkpoint)

    @property
    def checkpoint_name(self) -> str:
        return " + ".join(str(path) for path in self.checkpoints)


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


def run_demo(
    options: DemoOptions, *, on_step: Callable[[int, float, Any], None] | None = None
) -> DemoSummary:
    """Decode, extract, anticipate and write ``options.out`` (and ``predictions_out``); see
    the module docstring. ``on_step(frame, fps, prediction)`` is called after every step
    (``prediction``: a :class:`rulstm.OnlinePrediction`, MATT weights only for a MATT
    fusion)."""
    from feature_extraction import VideoError, probe_video, resolve_device
    from rulstm_apps.labels import ActionNames, VideoTimeline
    from rulstm_apps.overlay import Layout

    if options.every < 1:
        raise DemoError(f"--every must be >= 1, got {options.every}")
    if options.top_k < 1:
        raise DemoError(f"--top_k must be >= 1, got {options.top_k}")
    if options.max_seconds is not None and not options.max_seconds > 0:
        raise DemoError(f"--max_seconds must be > 0, got {options.max_seconds}")
    if (options.video is None) == (options.frames is None):
        raise DemoError("give either --video or --frames (a folder of JPEG frames)")
    started = time.perf_counter()
    info = None
    if options.video is not None:
        video = Path(options.video)
        try:
            info = probe_video(video)
        except VideoError as error:
            raise DemoError(f"--video: {error}") from None
        for name, path in (("--out", options.out), ("--predictions-out", options.predictions_out)):
            if path is not None and Path(path).resolve() == video.resolve():
                raise DemoError(f"{name} {path} would overwrite the input video")
    if options.predictions_out is not None and Path(options.predictions_out).resolve() == (
        Path(options.out).resolve()
    ):
        raise DemoError(f"--predictions-out {options.predictions_out} is also --out")

    device = resolve_device(options.device) if options.device else None
    config = load_extract_config(options.extract_config, options.extract_overrides, fps=options.fps)
    available = list(config.modalities)
    if options.detections is not None and "obj" not in available:
        available.append("obj")
    model = load_model(
        options.checkpoints,
        device=device or torch.device("cpu"),
        alpha=options.alpha,
        modality=options.modality,
        available=available,
        horizon=options.horizon,
        weights=options.weights,
    )
    detections = None
    needed = dict(model.dims)
    if options.detections is not None:
        if "obj" not in needed:
            raise DemoError(
                f"--detections {options.detections}: {options.checkpoint_name} reads no Obj "
                f"features (it reads {list(needed)})"
            )
        detections = DetectionFeatures(options.detections, num_classes=needed.pop("obj"))
    if not needed:
        raise DemoError(f"{options.checkpoint_name} reads no feature the extraction computes")
    frames = None
    if options.frames is not None:
        # Before the models are built: a bad folder is reported at once.
        frames = FrameFolder(
            options.frames,
            video_id=options.video_id,
            video_info=options.video_info,
            fps=config.fps,
            flow="flow" in needed,
            stack=config.flow.stack,
        )
    extractor = build_extractor(
        config,
        needed=needed,
        device=device,
        checkpoint=options.checkpoint_name,
        config_name=str(options.extract_config or "(defaults)"),
        flow_from_images=frames is not None,
    )
    check_demo_backbones(options.checkpoints, extractor, needed)
    source: VideoSource | FrameFolderSource
    if frames is not None:
        source = FrameFolderSource(frames, extractor, detections=detections)
        width, height, total = frames.width, frames.height, frames.total
        video_id = frames.video_id
    else:
        assert info is not None
        source = VideoSource(video, extractor, detections=detections)
        width, height = info.width, info.height
        total = info.estimated_frames(extractor.config.fps)
        video_id = options.video_id or video.stem
    anticipator = model.anticipator
    if device is None and extractor.device != anticipator.device:
        anticipator.to(extractor.device)
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
            video_id=video_id,
            fps=fps,
            vocabulary=names.vocabulary,
        )
    layout = Layout.for_video(
        width, height, min_height=options.min_height, max_height=options.max_height
    )
    last_frame = math.floor(options.duration * fps) if options.duration else None
    if last_frame is not None:
        total = min(total, last_frame)
    with _torch_threads(demo_threads(extractor.config.threads)):
        summary = _stream(
            options,
            source=source,
            anticipator=anticipator,
            alpha=model.alpha,
            note=model.note,
            names=names,
            timeline=timeline,
            layout=layout,
            total=total,
            last_frame=last_frame,
            on_step=on_step,
        )
    return dataclasses.replace(summary, wall_s=time.perf_counter() - started)


def prediction_record(
    prediction: Any, *, frame: int, fps: float, names: Any, top_k: int, fusion: str | None
) -> dict[str, Any]:
    """One line of ``--predictions-out``::

        {"step": 0, "frame": 7, "time_s": 0.2333, "fusion": "matt" | "average" | null,
         "anticipations": [{"time_s": 2.0,
                            "top_k": [{"action": 5, "name": "open tap", "probability": 0.31},
                                      ...],
                            "weights": {"rgb": 0.4, "flow": 0.35, "obj": 0.25} | null},
                           ...]}

    ``step`` counts from 0; ``frame`` is the 1-based frame (at ``fps``) whose features the
    step read and ``time_s = frame / fps``; one ``anticipations`` entry per anticipation
    time, largest first, with the ``top_k`` actions (best first) and the MATT weight of each
    modality (``null`` for a branch or an average).
    """
    anticipations = []
    for index, time_s in enumerate(prediction.times):
        values, actions = prediction.probabilities[index].topk(
            min(top_k, prediction.probabilities.shape[-1])
        )
        weights = (
            {name: float(w[index]) for name, w in prediction.weights.items()}
            if prediction.weights
            else None
        )
        anticipations.append(
            {
                "time_s": float(time_s),
                "top_k": [
                    {"action": int(a), "name": names.action(int(a)), "probability": float(p)}
                    for a, p in zip(actions.tolist(), values.tolist(), strict=True)
                ],
                "weights": weights,
            }
        )
    return {
        "step": int(prediction.step),
        "frame": int(frame),
        "time_s": frame / fps,
        "fusion": fusion,
        "anticipations": anticipations,
    }


class PredictionsFile:
    """``--predictions-out``: written to ``<name>.partial`` and renamed when the run ends
    well, so that a crash never leaves a complete-looking file."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._handle = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._partial = self.path.with_name(self.path.name + ".partial")
            self._handle = self._partial.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is not None:
            self._handle.write(json.dumps(record) + "\n")

    def close(self, *, ok: bool) -> None:
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        if ok:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)


def demo_threads(configured: int | None) -> int:
    """CPU threads of the models: the extraction config's ``threads`` when set, else every
    usable core but one (at least 1). The demo decodes, draws and encodes (x264's own
    threads) beside the models, one image per step: model threads on every core contend with
    them and spin. Measured on 2 shared cores (AMD EPYC, 1-minute load 11-14), a 10 s
    1280x720 clip with ``cpu_small.yaml``: 2 threads 52 s of CPU and 153 s wall, 1 thread
    23 s and 64 s."""
    if configured is not None:
        return max(1, configured)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows: no affinity mask
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _stream(
    options: DemoOptions,
    *,
    source: VideoSource | FrameFolderSource,
    anticipator: Any,
    alpha: float,
    note: str | None,
    names: Any,
    timeline: Any,
    layout: Any,
    total: int,
    last_frame: int | None,
    on_step: Callable[[int, float, Any], None] | None = None,
) -> DemoSummary:
    """The frame loop: read the source's records (decoded, features on step frames), step
    every alpha, draw, encode."""
    from tqdm import tqdm

    from rulstm_apps.encoding import H264Writer
    from rulstm_apps.overlay import detection_boxes, render

    fps = source.fps
    clock = StepClock(alpha=alpha, fps=fps)
    shown = None  # the prediction on display
    steps = frames = 0
    extract_s = anticipate_s = 0.0
    started = time.perf_counter()
    anticipator.reset()
    predictions = PredictionsFile(options.predictions_out)
    ok = False
    try:
        with (
            H264Writer(
                options.out, fps=fps, width=layout.width, height=layout.height, crf=options.crf
            ) as writer,
            tqdm(total=total, unit="frame", desc=source.name, disable=not options.progress) as bar,
        ):
            records = source.records(clock, last_frame=last_frame, max_seconds=options.max_seconds)
            for record in records:
                frame = record.frame
                extract_s += record.extract_s
                for _ in range(record.steps):
                    tick = time.perf_counter()
                    prediction = anticipator.step(record.features)
                    anticipate_s += time.perf_counter() - tick
                    if anticipator.fusion != "matt":  # uniform weights: nothing to show
                        prediction = dataclasses.replace(prediction, weights=None)
                    predictions.write(
                        prediction_record(
                            prediction,
                            frame=frame,
                            fps=fps,
                            names=names,
                            top_k=options.top_k,
                            fusion=anticipator.fusion,
                        )
                    )
                    if on_step is not None:
                        on_step(frame, fps, prediction)
                    if steps % options.every == 0:
                        shown = prediction
                    steps += 1
                content = panel_content(
                    frame=frame,
                    fps=fps,
                    steps=steps,
                    prediction=shown,
                    options=options,
                    names=names,
                    timeline=timeline,
                    first_step_s=alpha,
                )
                boxes, box_size = [], None
                shown_detections = record.detections
                if options.overlay_detections and shown_detections is not None:
                    boxes = detection_boxes(
                        shown_detections.boxes,
                        shown_detections.labels,
                        shown_detections.scores,
                        class_names=shown_detections.class_names,
                        threshold=shown_detections.threshold,
                    )
                    box_size = shown_detections.image_size
                content = dataclasses.replace(content, boxes=tuple(boxes), fusion_note=note)
                writer.write(render(record.image, content, layout, boxes_image_size=box_size))
                frames += 1
                bar.update(1)
                bar.set_postfix(steps=steps, refresh=False)
        if frames == 0:
            raise DemoError(f"{source.option} {source.path}: no frame could be decoded")
        ok = True
    finally:
        predictions.close(ok=ok)
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


def panel_content(
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
            index = prediction.index_at(options.horizon)
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
