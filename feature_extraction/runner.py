"""Running an extraction with Lightning: planning, the predict loop, writing and the summary.

One code path serves a single CPU or GPU and many GPUs or nodes: ``Trainer.predict`` with
DDP when ``devices * num_nodes > 1`` (gloo on CPUs). Rank 0 plans (which videos, which
frames; :mod:`feature_extraction.planning`) and broadcasts the plan; every rank extracts its
share of the videos into per-video staging files (:mod:`feature_extraction.loop`,
:mod:`feature_extraction.output`); after a barrier, rank 0 merges them into
``OUT/<modality>.h5`` and prints the summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from epic_protocol.errors import Interrupted
from feature_extraction.config import ExtractConfig
from feature_extraction.loop import ExtractionData, ExtractionModule, StagingSink, VideoResult
from feature_extraction.models import (
    ExtractionModels,
    FeatureComputer,
    build_models,
    provenance,
    resolve_device,
    resolve_precision,
)
from feature_extraction.output import (
    WORK_DIR,
    UnwritableOutputError,
    check_writable,
    clean_work_dir,
    merge_staging,
)
from feature_extraction.pipeline import ChunkOptions, clip_of
from feature_extraction.planning import Plan, PlanningError, RunOptions, plan_extraction


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    video_frames: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0  # until the first chunk arrived (workers starting, first decode)
    sparse: bool = False
    ignored_files: int = 0  # non-video files under --videos
    videos_per_rank: list[int] = field(default_factory=list)  # distributed runs
    unit: str = "frame"  # what a row is: "clip" when a video model computes every row

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_frames_per_second(self) -> float:
        running = self.seconds - self.startup_seconds
        return self.frames / running if running > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def format(self) -> str:
        unit = self.unit
        lines = [
            f"videos: {len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed",
            f"{unit}s: {self.frames} extracted in {self.seconds:.1f} s "
            f"({_rate(self.frames_per_second)} {unit}s/s; "
            f"{_rate(self.steady_frames_per_second)} {unit}s/s after a "
            f"{self.startup_seconds:.1f} s start)",
        ]
        if self.sparse and self.video_frames:
            saved = 1.0 - self.frames / self.video_frames
            lines.append(
                f"sparse: extracted {self.frames} of {self.video_frames} frames of the processed "
                f"videos ({saved:.1%} saved)"
            )
        if len(self.videos_per_rank) > 1:
            counts = ", ".join(str(count) for count in self.videos_per_rank)
            lines.append(f"processes: {len(self.videos_per_rank)} (videos per rank: {counts})")
        reasons: dict[str, int] = {}
        for reason in self.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in sorted(reasons.items()):
            lines.append(f"skipped ({reason}): {count}")
        if self.ignored_files:
            lines.append(f"ignored (not a video file): {self.ignored_files}")
        if self.failed:
            lines.append("failed:")
            lines.extend(f"  {video}: {error}" for video, error in sorted(self.failed.items()))
        return "\n".join(lines)


def _rate(per_second: float) -> str:
    """One decimal, two significant digits below 1 (``0.084``: a video model on a CPU)."""
    return f"{per_second:.1f}" if per_second >= 1 or per_second == 0 else f"{per_second:.2g}"


class ExtractionInterrupted(Interrupted):
    """The run was stopped (SIGTERM from a scheduler or ``kill``, or Ctrl-C). Finished videos
    stay in the staging area; the same command resumes, redoing only unfinished videos."""

    def __init__(self, signal_name: str, *, finished: int) -> None:
        super().__init__(
            f"interrupted by {signal_name} after {finished} finished videos (kept); rerun the "
            "same command to resume"
        )
        self.exit_code = 143 if signal_name == "SIGTERM" else 130


def _remove_if_empty(folder: Path) -> None:
    """Delete ``folder`` when it holds nothing but empty folders."""
    if any(path.is_file() for path in folder.rglob("*")):
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir()
    folder.rmdir()


def _trainer_hardware(config: ExtractConfig, options: RunOptions) -> dict[str, Any]:
    device = resolve_device(config.device)
    if device.type == "cuda":
        devices: Any = (
            [device.index] if device.index is not None and options.devices == 1 else options.devices
        )
        accelerator = "gpu"
    else:
        devices, accelerator = options.devices, "cpu"
    distributed = options.devices * options.num_nodes > 1
    precision = resolve_precision(config.precision, device)
    return {
        "accelerator": accelerator,
        "devices": devices,
        "num_nodes": options.num_nodes,
        "strategy": "ddp" if distributed else "auto",
        "precision": precision,
    }


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's hardware banner, tips and a warning about batch indices that
    iterable datasets always trigger; our own progress bars and summary say what matters."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _library_bars(*, shown: bool) -> Iterator[None]:
    """Hugging Face ``transformers``' own bars (``Loading weights``) hidden unless ``shown``
    (``--progress false``: a log holds only our lines)."""
    try:  # an hf: backbone imports it anyway; a missing one is the loader's error to say
        from transformers.utils import logging as hf_logging
    except ImportError:
        shown = True
    if shown:
        yield
        return

    active = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if active:
            hf_logging.enable_progress_bar()


def describe_models(config: ExtractConfig) -> str:
    """``"rgb resnet50 (ImageNet weights), flow auto + resnet50 (ImageNet weights), obj
    faster_rcnn fasterrcnn_resnet50_fpn (COCO weights)"``: what an extraction loads."""

    def weights(value: Any, default: str = "ImageNet") -> str:
        if value is None or str(value).lower() in ("none", "null"):
            return "seeded random weights"
        return f"{default} weights" if value == "DEFAULT" else f"weights {value}"

    parts = []
    for modality in config.modalities:
        if modality == "rgb":
            parts.append(f"rgb {config.rgb.backbone} ({weights(config.rgb.weights)})")
        elif modality == "flow":
            parts.append(
                f"flow {config.flow.method} + {config.flow.backbone} "
                f"({weights(config.flow.weights)})"
            )
        elif modality == "obj":
            name = config.obj.detector
            if name == "faster_rcnn":
                name += f" {config.obj.model} ({weights(config.obj.weights, 'COCO')})"
            parts.append(f"obj {name}")
    return ", ".join(parts)


def describe_outputs(models: ExtractionModels) -> str:
    """``"rgb 1024-d from clips of 16 frames (stride 4), flow 512-d, obj 352-d"``: what an
    extraction computes for each stored frame."""
    parts = []
    for modality, dim in models.dims.items():
        text = f"{modality} {dim}-d"
        clip = clip_of(models.rgb) if modality == "rgb" else None
        if clip is not None:
            text += f" from clips of {clip[0]} frames (stride {clip[1]})"
        parts.append(text)
    return ", ".join(parts)


def row_unit(models: ExtractionModels) -> str:
    """What one stored row costs, for progress and speeds: ``"clip"`` when the only modality
    is a video model's RGB (a row is a clip's forward pass), else ``"frame"``."""
    only_rgb = tuple(models.config.modalities) == ("rgb",)
    return "clip" if only_rgb and clip_of(models.rgb) is not None else "frame"


def slow_run_hint(config: ExtractConfig, device: torch.device) -> str:
    """What to change when a run is estimated to take long on ``device``."""
    if device.type == "cuda":
        return "fewer --modalities or a larger --batch_size shorten it"
    if "rgb" in config.modalities and ":" in config.rgb.backbone:
        return (
            "foundation backbones are GPU work (--device cuda; docs/extraction.md estimates "
            "GPU-hours); on a CPU, --only-needed extracts only the frames a sampling reads"
        )
    if "obj" in config.modalities and config.obj.detector == "faster_rcnn":
        return (
            "the obj detector is the slowest part on a CPU: leave it out (--modalities rgb "
            "flow) when your configs do not train obj (configs/egtea/ does not), or use "
            "configs/extract/cpu_small.yaml (sized for a CPU)"
        )
    small = {"resnet18", "mobilenet_v3_small", "mobilenet_v3_large"}
    backbones = {
        config.rgb.backbone if m == "rgb" else config.flow.backbone
        for m in config.modalities
        if m in ("rgb", "flow")
    }
    if backbones - small:
        return "configs/extract/cpu_small.yaml is sized for a CPU"
    return "the models are small already: other processes on this CPU slow them (see its load)"


def run_extraction(
    config: ExtractConfig, options: RunOptions, *, log: Any = print
) -> Summary | None:
    """Extract features; returns the summary on rank 0 (``None`` on other ranks).

    Raises :class:`~feature_extraction.planning.PlanningError` (a data error) when the output
    folder holds features that cannot be added to or the inputs cannot be planned, and
    :class:`~feature_extraction.output.UnwritableOutputError` (the environment's) when the
    output folder or a file in it cannot be written."""
    options.out = Path(options.out)
    created_out = not options.out.exists()
    check_writable(options.out)
    # Busy-waiting OpenMP threads and DataLoader workers must not fight over the same cores.
    torch.set_num_threads(config.resolved_threads())
    frames_input = options.frames is not None
    device = resolve_device(config.device)
    began = time.perf_counter()
    if options.progress:  # weights may download or load for a while: say what is happening
        precision = resolve_precision(config.precision, device)
        log(f"loading the models: {describe_models(config)} (for {device.type}, {precision})")
        sys.stdout.flush()
    with _library_bars(shown=options.progress or not config.rgb.backbone.startswith("hf:")):
        models: ExtractionModels = build_models(
            config, device=torch.device("cpu"), flow_from_images=frames_input
        )
    if options.progress:
        log(f"models ready in {time.perf_counter() - began:.1f} s: {describe_outputs(models)}")
    dims = models.dims
    provenances = {m: provenance(models, m, frames_input=frames_input) for m in config.modalities}
    hashes = {m: provenances[m]["config_hash"] for m in config.modalities}
    revisions = {m: (provenances[m].get("backbone") or {}).get("revision") for m in hashes}
    chunk_options = ChunkOptions(
        fps=config.fps,
        decode=config.decode,
        batch_size=config.batch_size,
        flow=models.flow_source.for_workers() if models.flow_source is not None else None,
        flow_stack=config.flow.stack,
        allow_truncated=options.allow_truncated,
        rgb_clip=clip_of(models.rgb),
    )

    def planner() -> Plan:
        return plan_extraction(
            config, options, dims=dims, hashes=hashes, revisions=revisions, log=log
        )

    data = ExtractionData(
        planner=planner, options=chunk_options, num_workers=config.resolved_workers()
    )
    sink = StagingSink(
        out=options.out,
        dims=dims,
        fps=config.fps,
        provenances=provenances,
        keep_detections=config.obj.keep_detections,
        class_names=models.detector.class_names if models.detector is not None else (),
        progress=options.progress,
        dtype=config.dtype,
        device=device.type,
        slow_hint=slow_run_hint(config, device),
        unit=row_unit(models),
    )
    module = ExtractionModule(
        computer=FeatureComputer.from_models(models), batch_size=config.batch_size, progress=sink
    )
    with _quiet_lightning():
        trainer = L.Trainer(
            **_trainer_hardware(config, options),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[sink],
            inference_mode=True,
        )
        started = time.perf_counter()
        try:
            trainer.predict(module, datamodule=data, return_predictions=False)
        except (PlanningError, UnwritableOutputError):
            if created_out:  # nothing was planned: leave no empty output folder behind
                _remove_if_empty(options.out)
            raise
        except SystemExit:  # Lightning exits on Ctrl-C; the sink raised SIGTERMException
            if sink.interrupted is None:
                raise
            raise ExtractionInterrupted(
                sink.interrupted, finished=sum(r.status == "done" for r in sink.results)
            ) from None
        seconds = time.perf_counter() - started
    results_dir = options.out / WORK_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    rank_file = results_dir / f"results.rank{trainer.global_rank}.json"
    rank_file.write_text(json.dumps([asdict(r) for r in sink.results]))
    trainer.strategy.barrier("extraction-finished")
    if trainer.global_rank != 0:
        return None
    assert data.plan is not None
    results = []
    for rank in range(trainer.world_size):
        path = results_dir / f"results.rank{rank}.json"
        results.extend(VideoResult(**r) for r in json.loads(path.read_text()))
        path.unlink()
    for modality in config.modalities:
        merged = merge_staging(
            options.out,
            modality,
            dim=dims[modality],
            fps=config.fps,
            provenance=provenances[modality],
            replace_old=data.plan.replace_old.get(modality, False),
            dtype=config.dtype,
        )
        if merged:
            noun = "video" if len(merged) == 1 else "videos"
            log(f"{options.out / f'{modality}.h5'}: added {len(merged)} {noun}")
    clean_work_dir(options.out)
    startup = (sink.first_batch_at - started) if sink.first_batch_at is not None else seconds
    summary = Summary(
        skipped=dict(data.plan.skipped),
        seconds=seconds,
        startup_seconds=startup,
        sparse=options.only_needed,
        ignored_files=data.plan.ignored_files,
        unit=sink.unit,
        videos_per_rank=[
            sum(1 for r in results if r.rank == rank) for rank in range(trainer.world_size)
        ],
    )
    for result in results:
        if result.status == "done":
            summary.done.append(result.video)
            summary.frames += result.frames
            summary.video_frames += result.total_frames
        else:
            summary.failed[result.video] = result.error
    return summary


__all__ = [
    "ExtractionInterrupted",
    "PlanningError",
    "RunOptions",
    "Summary",
    "VideoResult",
    "run_extraction",
]
