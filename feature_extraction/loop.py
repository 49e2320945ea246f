"""The Lightning parts of an extraction: the module that runs the models on each chunk, the
DataModule that plans (rank 0) and deals chunks to ranks and workers, and the prediction
writer that stores each chunk's features in the video's staging files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from epic_protocol.errors import SetupError
from epic_protocol.features import (
    SPARSE,
    DetectionsWriter,
    FeatureFileWriter,
    FeatureWriteError,
    describe_non_finite,
    first_non_finite_row,
)
from feature_extraction import progress as run_timing
from feature_extraction.clips import ClipBuffer
from feature_extraction.config import Modality
from feature_extraction.flow import FlowStream
from feature_extraction.models import FeatureComputer
from feature_extraction.output import OutputError, StagingArea, UnwritableOutputError
from feature_extraction.pipeline import (
    Chunk,
    ChunkDataset,
    ChunkOptions,
    worker_context,
    worker_init_for,
)
from feature_extraction.planning import Plan, PlanningError
from feature_extraction.progress import ThroughputMeter, format_estimate, format_rate


@dataclass
class VideoResult:
    video: str
    status: Literal["done", "failed"]
    frames: int = 0
    total_frames: int = 0
    error: str = ""
    rank: int = 0


def in_fixed_batches(
    compute: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, size: int
) -> torch.Tensor:
    """``compute`` on ``inputs`` (N, ...) in batches of exactly ``size`` rows, the last one
    padded by repeating its last row; returns the N rows of results.

    Why: CPU (oneDNN) and GPU kernels choose their algorithm by batch size, and a frame's
    features then change in the last bits with the number of frames computed with it
    (measured: ResNet-18 features of one frame differ by up to 2e-6 between a batch of 1 and
    a batch of 16). Chunk sizes vary with video length, sparse frame sets and context frames,
    so without a fixed shape the same frame could get different features in two runs that
    chunk differently. With it, a row's result depends only on that row.
    """
    if size <= 0 or len(inputs) == 0:
        return compute(inputs)
    parts = []
    for begin in range(0, len(inputs), size):
        part = inputs[begin : begin + size]  # (n <= size, ...)
        count = len(part)
        if count < size:
            padding = part[-1:].expand(size - count, *part.shape[1:])  # (size - n, ...)
            part = torch.cat([part, padding])  # (size, ...)
        parts.append(compute(part)[:count])
    return torch.cat(parts)


class ProgressListener(Protocol):
    """Told by :class:`ExtractionModule` what it computed (see :class:`StagingSink`)."""

    def computed(self, frames: float) -> None:
        """``frames`` more frames done (a modality's batch counts as its share of them)."""


class ExtractionModule(L.LightningModule):
    """Runs the models on each chunk; the writer callback stores the results.

    RGB and flow features are computed in batches of exactly ``batch_size`` frames (see
    :func:`in_fixed_batches`), so that they are bit-identical however the frames are chunked.
    ``progress`` (optional) hears after each modality's batch.
    """

    def __init__(
        self,
        *,
        computer: FeatureComputer,
        batch_size: int = 0,
        progress: ProgressListener | None = None,
    ) -> None:
        super().__init__()
        self.computer = computer
        self.batch_size = batch_size
        self.progress = progress
        self._flow_streams: dict[str, FlowStream] = {}  # flow estimated here (RAFT)
        self._clips: dict[str, ClipBuffer] = {}

    def _computed(self, frames: int, modalities: int) -> None:
        if self.progress is not None:
            self.progress.computed(frames / modalities)

    def predict_step(self, batch: Chunk, batch_idx: int) -> dict[str, Any]:
        video = batch.video
        if batch.error:
            self._flow_streams.pop(video, None)
            self._clips.pop(video, None)
            return {}
        modalities = batch.modalities
        keep = batch.keep
        images = batch.images
        raft = self.computer.flow_on_device and "flow" in modalities
        # Images of every row (RAFT, clips of a video backbone) or of the kept rows only.
        all_rows = images.numel() > 0 and len(images) == len(keep)
        kept_images = images[keep] if all_rows else images
        rgb_inputs = kept_images
        if "rgb" in modalities and self.computer.rgb_clip is not None and len(batch.frames):
            clips = self._clips.get(video)
            if clips is None:
                clips = self._clips[video] = self.computer.new_clip_buffer()
            rgb_inputs = clip_rows(clips, batch.frames.tolist(), images, keep.tolist())
        out: dict[str, Any] = {}
        kept = int(keep.sum())
        if kept > 0:
            if "rgb" in modalities:
                rgb = in_fixed_batches(self.computer.rgb_features, rgb_inputs, self.batch_size)
                out["rgb"] = rgb.cpu().numpy()
                self._computed(kept, len(modalities))
            if "flow" in modalities:
                if raft:
                    stacks = self._flow_stream(video).push_frames(
                        batch.frames.tolist(), images, keep.tolist()
                    )
                else:
                    stacks = batch.flow
                flow = in_fixed_batches(self.computer.flow_features, stacks, self.batch_size)
                out["flow"] = flow.cpu().numpy()
                self._computed(kept, len(modalities))
            if "obj" in modalities:
                vectors, detections = self.computer.object_features(kept_images)
                out["obj"], out["detections"] = vectors, detections
                self._computed(kept, len(modalities))
        elif raft and len(batch.frames):
            self._flow_stream(video).push_frames(batch.frames.tolist(), images, keep.tolist())
        if batch.last:
            self._flow_streams.pop(video, None)
            self._clips.pop(video, None)
        return out

    def _flow_stream(self, video: str) -> FlowStream:
        stream = self._flow_streams.get(video)
        if stream is None:
            stream = self._flow_streams[video] = self.computer.new_flow_stream()
        return stream


def clip_rows(
    clips: ClipBuffer, frames: Sequence[int], images: torch.Tensor, keep: Sequence[bool]
) -> torch.Tensor:
    """Push every row's (H, W, 3) image into the video's clip buffer; return the clips
    (K, T, H, W, 3) ending at the kept rows."""
    out = []
    for frame, image, kept in zip(frames, images, keep):
        clips.push(int(frame), image)
        if kept:
            out.append(clips.clip(int(frame)))
    if not out:
        return images.new_zeros((0, clips.length, *images.shape[1:]))
    return torch.stack(out)  # K x (T, H, W, 3) -> (K, T, H, W, 3)


class ExtractionData(L.LightningDataModule):
    """Rank 0 plans and broadcasts; each rank iterates its share of the chunks."""

    def __init__(
        self, *, planner: Callable[[], Plan], options: ChunkOptions, num_workers: int
    ) -> None:
        super().__init__()
        self.planner = planner
        self.options = options
        self.num_workers = num_workers
        self.plan: Plan | None = None

    def setup(self, stage: str) -> None:
        # (plan, message, whether the environment's): every rank raises the same kind.
        result: tuple[Plan | None, str, bool] = (None, "", False)
        if self.trainer.global_rank == 0:
            try:
                result = (self.planner(), "", False)
            except (OutputError, ValueError, FileNotFoundError, SetupError) as error:
                # The message names the file or option already.
                result = (None, str(error), isinstance(error, SetupError))
        plan, error, environment = self.trainer.strategy.broadcast(result, src=0)
        if error:
            raise UnwritableOutputError(error) if environment else PlanningError(error)
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


def _non_finite(frames: Any, prediction: dict[str, Any], modalities: Iterable[str]) -> str:
    """Why a chunk's features cannot be stored (a vector holding NaN or inf), or ''."""
    for modality in modalities:
        rows = prediction[modality]
        bad = first_non_finite_row(rows)
        if bad is not None:
            return (
                f"frame {int(frames[bad])}: the {modality} feature vector is not finite "
                f"({describe_non_finite(rows[bad])}); the model computed NaN or inf"
            )
    return ""


@dataclass
class _OpenVideo:
    writers: dict[str, FeatureFileWriter]
    detections: DetectionsWriter | None
    frames: int = 0


class StagingSink(BasePredictionWriter):
    """Writes each chunk's features to the video's staging files; tracks results.

    Progress: one bar over the frames of this rank's videos, moved after every modality's
    batch (so a slow model still moves it every few seconds), with frames/s, the video being
    extracted and how many are finished. The time since the bar appeared plus the frames left
    at the frames/s measured after the first batch estimate the whole run (the meter and its
    defaults are in :mod:`feature_extraction.progress`); a run estimated longer than
    ``long_run_seconds`` says so once on stderr (rank 0, with ``slow_hint``), whether or not
    bars are shown. A first batch of at least ``rough_seconds`` gives a rough estimate at once,
    said (when long) as such and followed by the measured one whatever it is. ``clock`` and
    ``measure_seconds`` are the meter's. ``unit``: what one row is, in messages and on
    the bar (``"frame"``; ``"clip"`` when a video model computes every row).
    """

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
        dtype: str = "float32",
        device: str = "cpu",
        slow_hint: str = "",
        long_run_seconds: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        measure_seconds: float | None = None,
        rough_seconds: float | None = None,
        unit: str = "frame",
    ) -> None:
        super().__init__(write_interval="batch")
        self.device, self.slow_hint, self.unit = device, slow_hint, unit
        self.long_run_seconds = (
            run_timing.LONG_RUN_SECONDS if long_run_seconds is None else long_run_seconds
        )
        self.meter = ThroughputMeter(
            clock=clock,
            measure_seconds=run_timing.MEASURE_SECONDS
            if measure_seconds is None
            else measure_seconds,
            rough_seconds=run_timing.ROUGH_SECONDS if rough_seconds is None else rough_seconds,
        )
        self._announced = False  # an estimate was said (the measured one follows a rough one)
        self._first_started = False  # a batch began
        #: The estimate of this rank's run (seconds, from the bar's start), once measured.
        self.estimated_seconds: float | None = None
        self._computed = 0.0
        self._planned = 0
        self._videos = 0
        self._rank_zero = True
        self.staging = StagingArea(out)
        self.dims, self.fps, self.provenances = dims, fps, provenances
        self.dtype = dtype
        self.keep_detections = keep_detections
        self.class_names = list(class_names)
        self.progress = progress
        self.results: list[VideoResult] = []
        #: Why the run stopped early ("SIGTERM", "Ctrl-C"), or None.
        self.interrupted: str | None = None
        self.first_batch_at: float | None = None
        self._open: dict[str, _OpenVideo] = {}
        self._refused: set[str] = set()  # failed videos whose remaining chunks are ignored
        self._overall: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """After planning (the DataModule's setup), before the decoding workers start (which
        takes a while): the bar shows from here on."""
        datamodule = trainer.datamodule
        jobs = datamodule.plan.jobs[trainer.global_rank :: trainer.world_size]
        self._planned = sum(job.expected for job in jobs)
        self._videos = len(jobs)
        self._rank_zero = trainer.global_rank == 0
        show = self.progress and self._rank_zero
        self.meter.begin()
        self._overall = tqdm(
            total=self._planned or None,
            unit=self.unit,
            desc="extracting",
            disable=not show,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} "
            + self.unit
            + "s [{elapsed}<{remaining}, {rate_fmt}]{postfix}",
        )
        workers = min(datamodule.num_workers, self._videos)
        noun = "worker" if workers == 1 else "workers"
        starting = f"starting {workers} decoding {noun}" if workers else "decoding"
        self._overall.set_postfix_str(f"{starting}; 0/{self._videos} videos")

    def on_predict_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.meter.batch_started()
        self._first_started = True
        self._show_video(batch.video)

    def computed(self, frames: float) -> None:
        self._computed += frames
        self._overall.update(frames)

    def _measure(self) -> None:
        """After each batch: once a rate is known (rough, then measured), estimate the run and
        announce it if long; a measured estimate always follows an announced rough one."""
        kind = self.meter.batch_done(self._computed)
        if kind is None:
            return
        self.estimated_seconds = self.meter.estimate(done=self._computed, planned=self._planned)
        long_run = self.estimated_seconds > self.long_run_seconds
        if not self._rank_zero or not (long_run or (kind == "measured" and self._announced)):
            return
        unit = self.unit
        planned = f"{format_estimate(self.estimated_seconds)} for {self._planned} {unit}s"
        if kind == "rough":
            assert self.meter.first_batch is not None
            frames, seconds = self.meter.first_batch
            message = (
                f"rulstm-extract: rough estimate: {planned} on {self.device} (the first batch: "
                f"{round(frames)} {unit}s in {seconds:.0f} s, warm-up included; refined after "
                "the next batches)"
            )
        else:
            assert self.meter.rate is not None
            message = (
                f"rulstm-extract: {'refined estimate: ' if self._announced else ''}{planned} on "
                f"{self.device} (measured: {format_rate(self.meter.rate, unit)} over "
                f"{round(self.meter.measured_frames)} {unit}s after the first batch)"
            )
        if self.slow_hint and not self._announced:
            message += f"; {self.slow_hint}"
        self._announced = True
        tqdm.write(message, file=sys.stderr)

    def _show_video(self, video: str) -> None:
        finished = len(self.results)
        # A slow model's first batch (with the warm-up) can take minutes before the bar moves.
        warming = self.meter.first_batch is None and self._first_started
        note = " (first batch, warm-up)" if warming else ""
        self._overall.set_postfix_str(f"{video}{note}; {finished}/{self._videos} videos")

    def _begin(self, batch: Chunk) -> _OpenVideo:
        video = batch.video
        writers = {}
        detections = None
        for modality in batch.modalities:
            self.staging.discard(modality, video)
            writer = FeatureFileWriter(
                self.staging.path(modality, video),
                modality=modality,
                dim=self.dims[modality],
                fps=self.fps,
                provenance=self.provenances[modality],
                dtype=self.dtype,
            )
            writer.start_video(video, attrs={SPARSE: batch.sparse})
            writers[modality] = writer
            if modality == "obj" and self.keep_detections:
                detections = DetectionsWriter(
                    self.staging.detections_path(video), class_names=self.class_names
                )
        self._show_video(video)
        return _OpenVideo(writers, detections)

    def _close(self, video: str, *, failed: bool) -> _OpenVideo | None:
        state = self._open.pop(video, None)
        if state is None:
            return None
        errors = []
        for writer in [*state.writers.values(), state.detections]:
            try:  # every file is closed (or abandoned) even when one cannot be written
                if writer is not None:
                    writer.close()
            except FeatureWriteError as error:
                errors.append(error)
        if failed:
            for modality in state.writers:
                self.staging.discard(modality, video)
        if errors:
            raise errors[0]
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
        if trainer.received_sigterm:  # Lightning's predict loop never checks it
            raise SIGTERMException
        if self.first_batch_at is None:
            self.first_batch_at = time.perf_counter()
        self._measure()
        video = batch.video
        if video in self._refused:
            if batch.last:
                self._refused.discard(video)
            return
        if batch.error:
            state = self._close(video, failed=True)
            frames = state.frames if state else 0
            self.results.append(
                VideoResult(video, "failed", frames, 0, batch.error, trainer.global_rank)
            )
            self._show_video(video)
            return
        state = self._open.get(video)
        if state is None:
            state = self._open[video] = self._begin(batch)
        kept_frames = batch.frames[batch.keep].cpu().numpy()
        problem = len(kept_frames) and _non_finite(kept_frames, prediction, state.writers)
        if problem:  # that video fails, the others go on (the writers would refuse it too)
            self._close(video, failed=True)
            self.results.append(
                VideoResult(video, "failed", state.frames, 0, problem, trainer.global_rank)
            )
            self._show_video(video)
            if not batch.last:
                self._refused.add(video)
            return
        if len(kept_frames):
            for modality, writer in state.writers.items():
                writer.append(video, kept_frames, prediction[modality])
            if state.detections is not None:
                for frame, found in zip(kept_frames, prediction["detections"]):
                    state.detections.append(int(frame), found.boxes, found.labels, found.scores)
            state.frames += len(kept_frames)
        if batch.last:
            for writer in state.writers.values():
                if batch.attrs:
                    writer.set_video_attrs(video, batch.attrs)
                # Marks complete and flushes (only after all rows); the video's length at the
                # target fps lets training refuse frames past its end, even in sparse files.
                writer.finish_video(video, num_frames=batch.total_frames or None)
            if state.detections is not None:
                state.detections.finish()
            self._close(video, failed=False)
            self.results.append(
                VideoResult(
                    video,
                    "done",
                    state.frames,
                    batch.total_frames,
                    rank=trainer.global_rank,
                )
            )
            self._show_video(video)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            self.interrupted = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.interrupted = "Ctrl-C"
        self.on_predict_end(trainer, pl_module)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for video in list(self._open):
            # Left incomplete: redone on the next run. A write failure here is that of a run
            # that failed already (this is its clean-up), reported by then.
            with contextlib.suppress(FeatureWriteError):
                self._close(video, failed=False)
        if self._overall is not None:
            self._overall.close()
