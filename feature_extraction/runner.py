"""Running an extraction with Lightning: planning, the predict loop, writing and the summary.

One code path serves a single CPU or GPU and many GPUs or nodes: ``Trainer.predict`` with
DDP when ``devices * num_nodes > 1`` (gloo on CPUs). Rank 0 plans (which videos, which
frames) and broadcasts the plan; every rank extracts its share of the videos into per-video
staging files (see :mod:`feature_extraction.output`); after a barrier, rank 0 merges them
into ``OUT/<modality>.h5`` and prints the summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from epic_protocol.annotations import read_annotations
from epic_protocol.features import SPARSE, FeatureFileWriter
from epic_protocol.sampling import anticipation_frames, early_recognition_frames
from feature_extraction.config import MODALITIES, ExtractConfig, Modality, SparseConfig
from feature_extraction.models import (
    RAFT_METHODS,
    ExtractionModels,
    FeatureComputer,
    RaftStream,
    build_models,
    provenance,
    resolve_device,
)
from feature_extraction.output import (
    WORK_DIR,
    DetectionsWriter,
    OutputError,
    StagingArea,
    StoredVideo,
    check_output_file,
    check_writable,
    clean_work_dir,
    merge_staging,
)
from feature_extraction.pipeline import (
    ChunkDataset,
    ChunkOptions,
    VideoJob,
    worker_context,
    worker_init_for,
)
from feature_extraction.video import find_videos, probe_video


@dataclass
class RunOptions:
    """What to extract and where (the per-run part of the command line)."""

    videos: Path
    out: Path
    annotations: Path | None = None
    video_info: Path | None = None
    only_needed: bool = False
    overwrite: bool = False
    devices: int = 1
    num_nodes: int = 1
    progress: bool = True


@dataclass
class Plan:
    jobs: list[VideoJob]
    skipped: dict[str, str]  # video -> why
    replace_old: dict[str, bool]  # modality -> drop the old file's videos when merging
    planned_frames: int = 0
    video_frames: int = 0


@dataclass
class VideoResult:
    video: str
    status: Literal["done", "failed"]
    frames: int = 0
    total_frames: int = 0
    error: str = ""
    rank: int = 0


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
    videos_per_rank: list[int] = field(default_factory=list)  # distributed runs

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
        lines = [
            f"videos: {len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed",
            f"frames: {self.frames} extracted in {self.seconds:.1f} s ({self.frames_per_second:.1f} "
            f"frames/s; {self.steady_frames_per_second:.1f} frames/s after a "
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
        if self.failed:
            lines.append("failed:")
            lines.extend(f"  {video}: {error}" for video, error in sorted(self.failed.items()))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- planning


def needed_frames(
    segments: Sequence[Any], *, fps: float, sparse: SparseConfig
) -> dict[str, np.ndarray]:
    """Per video, the sorted unique frames the RU-LSTM sampling reads for these segments."""
    per_video: dict[str, set[int]] = {}
    for segment in segments:
        frames = per_video.setdefault(segment.video_id, set())
        observed = anticipation_frames(
            segment.start_frame, fps=fps, alpha=sparse.alpha, steps=sparse.steps
        )
        if observed is not None:
            frames.update(int(f) for f in observed)
        if sparse.early_recognition:
            frames.update(
                int(f)
                for f in early_recognition_frames(
                    segment.start_frame, segment.end_frame, steps=sparse.early_steps
                )
                if f >= 1
            )
    return {video: np.array(sorted(f), np.int64) for video, f in per_video.items() if f}


def plan_extraction(
    config: ExtractConfig,
    options: RunOptions,
    *,
    dims: dict[Modality, int],
    hashes: dict[Modality, str],
    log: Any = print,
) -> Plan:
    """Which videos (and frames) to extract; deletes stale staging files (rank 0 only)."""
    videos = find_videos(options.videos)
    staging = StagingArea(options.out)
    done: dict[Modality, dict[str, StoredVideo]] = {}
    replace_old: dict[str, bool] = {}
    for modality in config.modalities:
        main_path = options.out / f"{modality}.h5"
        in_main = check_output_file(
            main_path,
            dim=dims[modality],
            fps=config.fps,
            config_hash=hashes[modality],
            overwrite=options.overwrite,
        )
        replace_old[modality] = options.overwrite and main_path.exists() and not in_main
        staged = staging.complete(modality, config_hash=hashes[modality])
        done[modality] = {} if options.overwrite else {**in_main, **staged}
    wanted: dict[str, np.ndarray] | None = None
    if options.only_needed:
        if options.annotations is None:
            raise ValueError("--only-needed needs --annotations (the segments to sample)")
        segments = read_annotations(
            options.annotations, video_fps=options.video_info, fps=config.fps
        )
        wanted = needed_frames(segments, fps=config.fps, sparse=config.sparse)
        missing = sorted(set(wanted) - {v.video_id for v in videos})
        if missing:
            log(
                f"note: {len(missing)} annotated videos have no file under {options.videos} "
                f"(e.g. {', '.join(missing[:3])})"
            )
    jobs: list[tuple[int, VideoJob]] = []
    skipped: dict[str, str] = {}
    planned = total = 0
    for video in videos:
        frames = None
        if wanted is not None:
            frames = wanted.get(video.video_id)
            if frames is None:
                skipped[video.video_id] = "no annotated segments"
                continue
        # A complete video is reused only if it holds the frames this run needs: a sparse
        # extraction for other segments, or a dense run after a sparse one, redoes it.
        stored = {m: done[m].get(video.video_id) for m in config.modalities}
        todo = tuple(m for m, s in stored.items() if s is None or not s.covers(frames))
        if not todo:
            skipped[video.video_id] = "already complete"
            continue
        if frames is not None:  # keep the frames earlier sparse runs stored
            earlier = [s.frames for m, s in stored.items() if m in todo and s is not None]
            frames = np.union1d(frames, np.concatenate(earlier)) if earlier else frames
        size = video.path.stat().st_size
        jobs.append((size, VideoJob(video.video_id, video.path, todo, frames)))
        if frames is not None:
            planned += len(frames)
            try:
                estimated = probe_video(video.path).estimated_frames(config.fps)
            except Exception:  # reported when the video is processed
                estimated = 0
            total += max(estimated, int(frames.max()) if len(frames) else 0)
    # Largest first, so that round-robin dealing to ranks and workers balances the load.
    ordered = [job for _, job in sorted(jobs, key=lambda item: -item[0])]
    if wanted is not None and total:
        log(
            f"sparse extraction: {planned} of ~{total} frames needed by the sampling "
            f"({1 - planned / total:.1%} saved; flow also decodes {config.flow.stack} frames "
            "before each)"
        )
    return Plan(ordered, skipped, replace_old, planned, total)


# ------------------------------------------------------------------------------- lightning


class ExtractionModule(L.LightningModule):
    """Runs the models on each chunk; the writer callback stores the results."""

    def __init__(self, *, computer: FeatureComputer) -> None:
        super().__init__()
        self.computer = computer
        self._raft_streams: dict[str, RaftStream] = {}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        video = batch["video"]
        if batch["error"]:
            self._raft_streams.pop(video, None)
            return {}
        modalities = batch["modalities"].split(",")
        keep = batch["keep"]
        images = batch["images"]
        raft = self.computer.raft is not None and "flow" in modalities
        kept_images = images[keep] if raft and images.numel() else images
        out: dict[str, Any] = {}
        if int(keep.sum()) > 0:
            if "rgb" in modalities:
                out["rgb"] = self.computer.rgb_features(kept_images).cpu().numpy()
            if "flow" in modalities:
                if raft:
                    stream = self._raft_streams.get(video)
                    if stream is None:
                        stream = self._raft_streams[video] = self.computer.new_raft_stream()
                    stacks = stream.push(batch["frames"].tolist(), images, keep.tolist())
                else:
                    stacks = batch["flow"]
                out["flow"] = self.computer.flow_features(stacks).cpu().numpy()
            if "obj" in modalities:
                vectors, detections = self.computer.object_features(kept_images)
                out["obj"], out["detections"] = vectors, detections
        elif raft and len(batch["frames"]):
            stream = self._raft_streams.setdefault(video, self.computer.new_raft_stream())
            stream.push(batch["frames"].tolist(), images, keep.tolist())
        if batch["last"]:
            self._raft_streams.pop(video, None)
        return out


class ExtractionData(L.LightningDataModule):
    """Rank 0 plans and broadcasts; each rank iterates its share of the chunks."""

    def __init__(self, *, planner: Any, options: ChunkOptions, num_workers: int) -> None:
        super().__init__()
        self.planner = planner
        self.options = options
        self.num_workers = num_workers
        self.plan: Plan | None = None

    def setup(self, stage: str) -> None:
        result: tuple[Plan | None, str] = (None, "")
        if self.trainer.global_rank == 0:
            try:
                result = (self.planner(), "")
            except (OutputError, ValueError, FileNotFoundError) as error:
                result = (None, f"{type(error).__name__}: {error}")
        plan, error = self.trainer.strategy.broadcast(result, src=0)
        if error:
            raise PlanningError(error)
        self.plan = plan

    def predict_dataloader(self) -> DataLoader:
        assert self.plan is not None
        dataset = ChunkDataset(
            jobs=self.plan.jobs,
            options=self.options,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
        )
        workers = min(self.num_workers, len(dataset.jobs_of_rank()))
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            worker_init_fn=worker_init_for(os.getpid()) if workers else None,
            pin_memory=torch.cuda.is_available()
            and self.trainer.strategy.root_device.type == "cuda",
            prefetch_factor=4 if workers else None,
            multiprocessing_context=worker_context() if workers else None,
        )


class PlanningError(RuntimeError):
    pass


@dataclass
class _OpenVideo:
    writers: dict[str, FeatureFileWriter]
    detections: DetectionsWriter | None
    bar: Any
    frames: int = 0


class StagingSink(BasePredictionWriter):
    """Writes each chunk's features to the video's staging files; tracks results and bars."""

    def __init__(
        self,
        *,
        out: Path,
        dims: dict[Modality, int],
        fps: float,
        provenances: dict[Modality, dict[str, Any]],
        keep_detections: bool,
        class_names: Sequence[str],
        progress: bool,
    ) -> None:
        super().__init__(write_interval="batch")
        self.staging = StagingArea(out)
        self.dims, self.fps, self.provenances = dims, fps, provenances
        self.keep_detections = keep_detections
        self.class_names = list(class_names)
        self.progress = progress
        self.results: list[VideoResult] = []
        self.first_batch_at: float | None = None
        self._open: dict[str, _OpenVideo] = {}
        self._overall: Any = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        jobs = len(datamodule.plan.jobs[trainer.global_rank :: trainer.world_size])
        show = self.progress and trainer.global_rank == 0
        self._overall = tqdm(total=jobs, unit="video", desc="videos", disable=not show, position=0)

    def _begin(self, batch: dict[str, Any], rank_zero: bool) -> _OpenVideo:
        video = batch["video"]
        writers = {}
        detections = None
        for modality in batch["modalities"].split(","):
            self.staging.discard(modality, video)
            writer = FeatureFileWriter(
                self.staging.path(modality, video),
                modality=modality,
                dim=self.dims[modality],
                fps=self.fps,
                provenance=self.provenances[modality],
            )
            writer.start_video(video, attrs={SPARSE: bool(batch["sparse"])})
            writers[modality] = writer
            if modality == "obj" and self.keep_detections:
                detections = DetectionsWriter(
                    self.staging.detections_path(video), class_names=self.class_names
                )
        bar = tqdm(
            total=int(batch["expected"]) or None,
            unit="frame",
            desc=video,
            leave=False,
            disable=not (self.progress and rank_zero),
        )
        return _OpenVideo(writers, detections, bar)

    def _close(self, video: str, *, failed: bool) -> _OpenVideo | None:
        state = self._open.pop(video, None)
        if state is None:
            return None
        for writer in state.writers.values():
            writer.close()
        if state.detections is not None:
            state.detections.close()
        state.bar.close()
        if failed:
            for modality in state.writers:
                self.staging.discard(modality, video)
        return state

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.first_batch_at is None:
            self.first_batch_at = time.perf_counter()
        video = batch["video"]
        if batch["error"]:
            state = self._close(video, failed=True)
            frames = state.frames if state else 0
            self.results.append(
                VideoResult(video, "failed", frames, 0, batch["error"], trainer.global_rank)
            )
            self._overall.update(1)
            return
        state = self._open.get(video)
        if state is None:
            state = self._open[video] = self._begin(batch, trainer.global_rank == 0)
        kept_frames = batch["frames"][batch["keep"]].cpu().numpy()
        if len(kept_frames):
            for modality, writer in state.writers.items():
                writer.append(video, kept_frames, prediction[modality])
            if state.detections is not None:
                for frame, found in zip(kept_frames, prediction["detections"]):
                    state.detections.append(int(frame), found.boxes, found.labels, found.scores)
            state.frames += len(kept_frames)
            state.bar.update(len(kept_frames))
        if batch["last"]:
            for writer in state.writers.values():
                writer.finish_video(video)  # marks complete and flushes: only after all rows
            if state.detections is not None:
                state.detections.finish()
            self._close(video, failed=False)
            self.results.append(
                VideoResult(
                    video,
                    "done",
                    state.frames,
                    int(batch["total_frames"]),
                    rank=trainer.global_rank,
                )
            )
            self._overall.update(1)
            self._overall.set_postfix(frames=sum(r.frames for r in self.results))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for video in list(self._open):
            self._close(video, failed=False)  # left incomplete: redone on the next run
        if self._overall is not None:
            self._overall.close()


# ------------------------------------------------------------------------------------- run


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
    precision = config.precision
    if precision == "auto":
        precision = "16-mixed" if device.type == "cuda" else "32"
    if precision == "32":
        precision = "32-true"
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


def run_extraction(
    config: ExtractConfig, options: RunOptions, *, log: Any = print
) -> Summary | None:
    """Extract features; returns the summary on rank 0 (``None`` on other ranks).

    Raises :class:`OutputError` when the output folder cannot be used."""
    options.out = Path(options.out)
    check_writable(options.out)
    # Busy-waiting OpenMP threads and DataLoader workers must not fight over the same cores.
    torch.set_num_threads(config.resolved_threads())
    models: ExtractionModels = build_models(config, device=torch.device("cpu"))
    dims = models.dims
    provenances = {m: provenance(models, m) for m in config.modalities}
    hashes = {m: provenances[m]["config_hash"] for m in config.modalities}
    chunk_options = ChunkOptions(
        fps=config.fps,
        decode=config.decode,
        batch_size=config.batch_size,
        cpu_flow=models.cpu_flow,
        raft=models.flow_method in RAFT_METHODS,
        flow_stack=config.flow.stack,
        flow_bound=config.flow.bound,
        flow_quantize=config.flow.quantize,
    )

    def planner() -> Plan:
        return plan_extraction(config, options, dims=dims, hashes=hashes, log=log)

    data = ExtractionData(
        planner=planner, options=chunk_options, num_workers=config.resolved_workers()
    )
    module = ExtractionModule(computer=FeatureComputer.from_models(models))
    sink = StagingSink(
        out=options.out,
        dims=dims,
        fps=config.fps,
        provenances=provenances,
        keep_detections=config.obj.keep_detections,
        class_names=models.detector.class_names if models.detector is not None else (),
        progress=options.progress,
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
        trainer.predict(module, datamodule=data, return_predictions=False)
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
        )
        if merged:
            log(f"{options.out / f'{modality}.h5'}: added {len(merged)} videos")
    clean_work_dir(options.out)
    startup = (sink.first_batch_at - started) if sink.first_batch_at is not None else seconds
    summary = Summary(
        skipped=dict(data.plan.skipped),
        seconds=seconds,
        startup_seconds=startup,
        sparse=options.only_needed,
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
    "MODALITIES",
    "Plan",
    "RunOptions",
    "Summary",
    "VideoResult",
    "needed_frames",
    "plan_extraction",
    "run_extraction",
]
