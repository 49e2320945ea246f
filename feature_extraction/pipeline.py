"""The data side of an extraction: videos -> chunks of decoded frames (and CPU flow stacks),
produced in DataLoader workers so that decoding and flow overlap the models' forward passes.

Each video is decoded by one worker, in order; chunks of different videos interleave. A
video's last chunk has ``last=True``; a video that fails yields one chunk with ``error`` set
(after any chunks it already produced), and the other videos go on.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import multiprocessing.context
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from feature_extraction.clips import clip_context
from feature_extraction.config import DecodeConfig, Modality
from feature_extraction.flow import FlowSource
from feature_extraction.foundation import FoundationBackbone
from feature_extraction.frames import FrameError, FrameReader, FrameVideo
from feature_extraction.video import DecodeReport, decode_video
from feature_extraction.video_files import VideoError, probe_video


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: which modalities, and which frames (``None``: all).

    ``frames``: the video's frame folders when the input is JPEG frames (``--frames``);
    ``path`` is then one of its folders (for messages). ``expected``: the frames this job
    extracts (``len(wanted)``, or the video's estimated length), for progress and estimates."""

    video_id: str
    path: Path
    modalities: tuple[Modality, ...]
    wanted: np.ndarray | None = None
    frames: FrameVideo | None = None
    expected: int = 0  # frames to extract (estimated for a whole video), for progress bars


@dataclass(frozen=True)
class ChunkOptions:
    fps: float
    decode: DecodeConfig
    batch_size: int
    flow: FlowSource | None  # None: no flow; RAFT's runs in the main process (no module here)
    flow_stack: int
    allow_truncated: bool = False  # keep the decoded part of videos cut short
    # (clip length T, stride s) of a video RGB backbone: the (T-1)*s frames before each kept
    # frame are decoded too (keep=False) and their images handed over for the clips.
    rgb_clip: tuple[int, int] | None = None


def clip_of(backbone: object) -> tuple[int, int] | None:
    """(T, s) of a video foundation backbone, else None."""
    if isinstance(backbone, FoundationBackbone) and backbone.is_video:
        return backbone.clip_length, backbone.clip_stride
    return None


def _empty(dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    return torch.zeros(0, dtype=dtype)


@dataclass
class Chunk:
    """A run of consecutive decoded frames of one video, as a worker hands it to the models.

    ``images`` holds every row for RAFT (which needs the context frames too) and only the kept
    rows otherwise; it is empty when no modality needs images. ``total_frames`` is the
    video's frame count at the target fps: exact in the last chunk of a dense pass, else
    estimated.
    """

    video: str
    modalities: tuple[Modality, ...]
    frames: torch.Tensor  # int64 (B,): 1-based frame numbers at the target fps
    keep: torch.Tensor  # bool (B,): False for context frames decoded only for flow
    images: torch.Tensor  # uint8 RGB (B, H, W, 3), (K, H, W, 3) of the kept rows, or (0,)
    flow: torch.Tensor  # CPU flow stacks of the kept rows (K, 2 * stack, H, W), or (0,)
    last: bool  # the video's last chunk
    error: str = ""  # why the video failed ("" when fine); such a chunk is the last
    total_frames: int = 0
    expected: int = 0  # frames that will be kept, for progress bars
    sparse: bool = False  # only the frames a sampling reads (--only-needed)
    # Attributes for the video's group, set in its last chunk (e.g. truncation counts).
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def pin_memory(self) -> Chunk:
        """Called by the DataLoader's pin-memory thread (CUDA runs)."""
        return dataclasses.replace(
            self,
            frames=self.frames.pin_memory(),
            keep=self.keep.pin_memory(),
            images=self.images.pin_memory(),
            flow=self.flow.pin_memory(),
        )


class VideoChunks:
    """Chunks of one video (a generator wrapped in a class for clarity).

    Yields :class:`Chunk` records of at most ``batch_size`` kept frames.
    """

    def __init__(self, job: VideoJob, options: ChunkOptions) -> None:
        self.job, self.options = job, options
        modalities = set(job.modalities)
        self.use_flow = "flow" in modalities
        source = options.flow if self.use_flow else None
        # Where the fields are estimated: here, in the worker (CPU flow), or beside the models
        # (RAFT, which needs the images of every decoded row).
        self.cpu_flow = source is not None and source.estimated and not source.on_device
        self.raft = source is not None and source.on_device
        self.need_images = bool(modalities & {"rgb", "obj"}) or self.raft
        clip = options.rgb_clip if "rgb" in modalities else None
        self.rgb_context = (clip[0] - 1) * clip[1] if clip is not None else 0
        # Context rows' images go to the models: RAFT's pairs, the video backbone's clips.
        self.context_images = self.raft or self.rgb_context > 0

    def _chunk(self, rows: dict[str, list], *, last: bool, total: int, expected: int) -> Chunk:
        images = _empty()
        if rows["images"]:
            images = torch.from_numpy(np.stack(rows["images"]))  # B x (H, W, 3) -> (B, H, W, 3)
        flow = _empty()
        if rows["flow"]:
            flow = torch.from_numpy(np.stack(rows["flow"]))  # K x (2L, H, W) -> (K, 2L, H, W)
        chunk = Chunk(
            video=self.job.video_id,
            modalities=tuple(self.job.modalities),
            frames=torch.tensor(rows["frames"], dtype=torch.int64),
            keep=torch.tensor(rows["keep"], dtype=torch.bool),
            images=images,
            flow=flow,
            last=last,
            total_frames=total,
            expected=expected,
            sparse=self.job.wanted is not None,
        )
        for values in rows.values():
            values.clear()
        return chunk

    def error_chunk(self, message: str) -> Chunk:
        rows: dict[str, list] = {"frames": [], "keep": [], "images": [], "flow": []}
        return dataclasses.replace(self._chunk(rows, last=True, total=0, expected=0), error=message)

    def __iter__(self) -> Iterator[Chunk]:
        job, options = self.job, self.options
        try:
            info = probe_video(job.path)
            estimated = info.estimated_frames(options.fps)
            expected = estimated if job.wanted is None else len(job.wanted)
            flow = options.flow.new_stream() if self.cpu_flow and options.flow else None
            rows: dict[str, list] = {"frames": [], "keep": [], "images": [], "flow": []}
            kept = decoded_frames = last_frame = 0
            report = DecodeReport()
            for decoded in decode_video(
                job.path,
                fps=options.fps,
                width=options.decode.width,
                height=options.decode.height,
                backend=options.decode.backend,
                wanted=job.wanted,
                context=max(options.flow_stack if self.use_flow else 0, self.rgb_context),
                allow_truncated=options.allow_truncated,
                report=report,
            ):
                decoded_frames += 1
                last_frame = decoded.frame
                if flow is not None:  # (H, W, 3) -> (1, H, W, 3); the stack of a kept row
                    stacks = flow.push_frames([decoded.frame], decoded.image[None], [decoded.keep])
                    if stacks is not None:
                        rows["flow"].append(stacks[0])
                if decoded.keep:
                    kept += 1
                if self.need_images and (decoded.keep or self.context_images):
                    rows["images"].append(decoded.image)
                rows["frames"].append(decoded.frame)
                rows["keep"].append(decoded.keep)
                # A chunk holds batch_size kept frames (the models' fixed batch); RAFT, which
                # keeps the context frames' images too, also caps the rows held in memory.
                if sum(rows["keep"]) >= options.batch_size or (
                    self.context_images and len(rows["frames"]) >= 4 * options.batch_size
                ):
                    yield self._chunk(rows, last=False, total=estimated, expected=expected)
            if decoded_frames == 0:
                raise VideoError(f"{job.path}: no frames decoded")
            total = last_frame if job.wanted is None else max(estimated, last_frame)
            chunk = self._chunk(rows, last=True, total=total, expected=expected)
            if report.truncated:  # kept with --allow-truncated: say so in the file
                chunk.attrs.update(
                    truncated=True,
                    decoded_frames=report.decoded_frames,
                    announced_frames=report.announced_frames,
                )
            yield chunk
        except Exception as error:  # reported per video; the other videos go on
            message = (
                str(error)
                if isinstance(error, VideoError)
                else f"{job.path}: {type(error).__name__}: {error}"
            )
            yield self.error_chunk(message)


class FrameChunks(VideoChunks):
    """Chunks of one frame-folder video (:mod:`feature_extraction.frames`): RGB frames and
    flow stacks read from JPEGs, every row kept (no context frames are needed)."""

    def __iter__(self) -> Iterator[Chunk]:
        job, options = self.job, self.options
        assert job.frames is not None
        try:
            reader = FrameReader(
                job.frames,
                fps=options.fps,
                rgb=bool(set(job.modalities) & {"rgb", "obj"}),
                flow=self.use_flow,
                stack=options.flow_stack,
            )
            frames = reader.frames(job.wanted)
            total = reader.total
            rows: dict[str, list] = {"frames": [], "keep": [], "images": [], "flow": []}
            if self.rgb_context and job.wanted is not None:
                # A video backbone's clips read earlier frames: read them too, not kept.
                length, stride = options.rgb_clip  # type: ignore[misc]
                kept = set(frames)
                extended = sorted(kept | set(clip_context(frames, length=length, stride=stride)))
                for frame in extended:
                    rows["frames"].append(frame)
                    rows["keep"].append(frame in kept)
                    rows["images"].append(reader.rgb_image(frame))
                    if self.use_flow and frame in kept:
                        rows["flow"].append(reader.flow_stack(frame))
                    if sum(rows["keep"]) >= options.batch_size or len(rows["frames"]) >= (
                        4 * options.batch_size
                    ):
                        yield self._chunk(rows, last=False, total=total, expected=len(frames))
                yield self._chunk(rows, last=True, total=total, expected=len(frames))
                return
            for row in reader.rows(job.wanted):
                rows["frames"].append(row.frame)
                rows["keep"].append(True)
                if row.image is not None:
                    rows["images"].append(row.image)
                if row.flow is not None:
                    rows["flow"].append(row.flow)
                if len(rows["frames"]) >= options.batch_size:
                    yield self._chunk(rows, last=False, total=total, expected=len(frames))
            yield self._chunk(rows, last=True, total=total, expected=len(frames))
        except Exception as error:  # reported per video; the other videos go on
            message = (
                str(error)
                if isinstance(error, FrameError)
                else f"{job.path}: {type(error).__name__}: {error}"
            )
            yield self.error_chunk(message)


class ChunkDataset(IterableDataset):
    """All chunks of this process's share of the videos.

    Videos are dealt to ranks (distributed extraction) and then to DataLoader workers
    round-robin, in the given order (the planner sorts them largest first for balance).
    """

    def __init__(
        self, *, jobs: Sequence[VideoJob], options: ChunkOptions, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__()
        self.jobs = list(jobs)
        self.options = options
        self.rank, self.world_size = rank, world_size

    def jobs_of_rank(self) -> list[VideoJob]:
        return self.jobs[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Chunk]:
        jobs = self.jobs_of_rank()
        worker = get_worker_info()
        if worker is not None:
            jobs = jobs[worker.id :: worker.num_workers]
        for job in jobs:
            if job.frames is not None:
                yield from FrameChunks(job, self.options)
            else:
                yield from VideoChunks(job, self.options)


def worker_context() -> multiprocessing.context.BaseContext:
    """Workers start from a fork server, a clean process that only imported our modules.

    Plain fork copies the parent's locks: after the parent used OpenCV's or OpenMP's thread
    pools (a benchmark, a test, the streaming extractor in the same process), a forked child
    can deadlock in its first cv2 call. The fork server never runs such code, and preloading
    the heavy modules keeps worker start-up cheap. Falls back to spawn where fork servers do
    not exist (Windows).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["feature_extraction.pipeline", "cv2", "av", "decord"])
    return context


def worker_init(_: int, *, main_pid: int | None = None) -> None:
    """Workers decode and compute CPU flow single-threaded: parallelism is across workers.

    ``main_pid``: the extracting process. A fork-server worker's parent is the fork server,
    so PyTorch's own check (has my parent died?) misses a killed main process and the worker
    (and the fork server, which waits for its children) would linger forever: watch it here.
    """
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    if main_pid is not None and main_pid != os.getppid():
        threading.Thread(target=_exit_when_gone, args=(main_pid,), daemon=True).start()


def _exit_when_gone(pid: int, interval: float = 1.0) -> None:
    while True:
        time.sleep(interval)
        try:
            os.kill(pid, 0)  # signal 0: only checks that the process exists
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass  # exists, owned by someone else (cannot happen for our own parent)


def worker_init_for(main_pid: int) -> functools.partial:
    """A picklable ``worker_init_fn`` that watches ``main_pid``."""
    return functools.partial(worker_init, main_pid=main_pid)
