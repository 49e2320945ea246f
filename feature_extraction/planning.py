"""Planning an extraction: which videos, which frames (``--only-needed``), which modalities.

Runs on rank 0 only; the plan is broadcast to the other ranks (see
:mod:`feature_extraction.loop`). A complete video is reused only if it holds the frames this
run needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epic_protocol.annotations import Segment, read_annotations, read_video_info
from epic_protocol.ego4d_lta import needed_frames_for_file as lta_needed_frames
from epic_protocol.errors import DataError
from epic_protocol.sampling import sample_frames
from feature_extraction.config import ExtractConfig, Modality, SparseConfig
from feature_extraction.frames import FrameVideo, find_frame_videos
from feature_extraction.output import StagingArea, StoredVideo, check_output_file
from feature_extraction.pipeline import VideoJob
from feature_extraction.video_files import probe_video, scan_videos


class PlanningError(DataError, RuntimeError):
    """The plan could not be made (bad output folder, annotations, ...); rank 0's message."""


@dataclass
class RunOptions:
    """What to extract and where (the per-run part of the command line).

    Exactly one of ``videos`` (video files) and ``frames`` (JPEG frame folders, see
    :mod:`feature_extraction.frames`) is given. ``video_info`` gives native frame rates, for
    original EPIC annotation CSVs and EPIC-KITCHENS frame folders."""

    videos: Path | None
    out: Path
    annotations: Path | Sequence[Path] | None = None  # one or several split files
    video_info: Path | None = None
    only_needed: bool = False
    overwrite: bool = False
    allow_truncated: bool = False  # keep the decoded part of videos cut short
    devices: int = 1
    num_nodes: int = 1
    progress: bool = True
    frames: Path | None = None

    @property
    def source(self) -> Path:
        source = self.frames if self.frames is not None else self.videos
        if source is None or (self.frames is not None and self.videos is not None):
            raise ValueError("give either videos or frames (one of them)")
        return source


@dataclass(frozen=True)
class _Source:
    """A video file or a frame-folder video, as planning sees it."""

    video_id: str
    path: Path
    frames: FrameVideo | None = None

    def size(self) -> int:
        """For ordering the jobs largest first (one run has one kind of source): bytes of a
        video file, frames of a frame-folder video."""
        if self.frames is not None:
            return self.frames.output_frames(30.0)
        return self.path.stat().st_size

    def estimated_frames(self, fps: float) -> int:
        if self.frames is not None:
            return self.frames.output_frames(fps)
        try:
            return probe_video(self.path).estimated_frames(fps)
        except Exception:  # reported when the video is processed
            return 0


def _sources(options: RunOptions) -> tuple[list[_Source], int]:
    """The videos to consider, and how many files were ignored (not videos)."""
    if options.frames is None:
        assert options.videos is not None
        scan = scan_videos(options.videos)
        return [_Source(v.video_id, v.path) for v in scan.videos], len(scan.ignored)
    info = read_video_info(options.video_info) if options.video_info is not None else None
    found = find_frame_videos(options.frames, video_info=info)
    return [_Source(v.video_id, v.path, v) for v in found], 0


@dataclass
class Plan:
    jobs: list[VideoJob]
    skipped: dict[str, str]  # video -> why
    replace_old: dict[str, bool]  # modality -> drop the old file's videos when merging
    planned_frames: int = 0  # frames to extract (dense videos: estimated from their length)
    video_frames: int = 0  # sparse runs: the frames of the videos the sampled frames lie in
    ignored_files: int = 0  # files under --videos that are not videos


def needed_frames(
    segments: Sequence[Segment], *, fps: float, sparse: SparseConfig
) -> dict[str, np.ndarray]:
    """Per video, the sorted unique frames the RU-LSTM sampling reads for these segments
    (the union of :func:`epic_protocol.sampling.sample_frames` over tasks and segments)."""
    tasks = [("anticipation", sparse.steps)]
    if sparse.early_recognition:
        tasks.append(("early_recognition", sparse.early_steps))
    per_video: dict[str, set[int]] = {}
    for segment in segments:
        frames = per_video.setdefault(segment.video_id, set())
        for task, steps in tasks:
            chosen = sample_frames(
                segment.start_frame,
                segment.end_frame,
                task=task,
                fps=fps,
                alpha=sparse.alpha,
                steps=steps,
            )
            if chosen is not None:
                frames.update(int(f) for f in chosen if f >= 1)
    return {video: np.array(sorted(f), np.int64) for video, f in per_video.items() if f}


def plan_extraction(
    config: ExtractConfig,
    options: RunOptions,
    *,
    dims: dict[Modality, int],
    hashes: dict[Modality, str],
    revisions: dict[Modality, str | None] | None = None,
    log: Any = print,
) -> Plan:
    """Which videos (and frames) to extract; deletes stale staging files (rank 0 only).
    ``revisions``: each modality's weights revision (the backbone record's), checked against
    the output file's and the staging files' besides the config hash."""
    revisions = revisions or {}
    videos, ignored = _sources(options)
    if not videos and options.frames is not None:
        raise ValueError(
            f"--frames {options.frames} holds no JPEG frames in the RU-LSTM authors' layout "
            "(<video>_frame_<n>.jpg, <video>_flow_u_<n>.jpg) or EPIC-KITCHENS' "
            "(rgb_frames/<video>/frame_<n>.jpg, flow_frames/<video>/u/frame_<n>.jpg)"
        )
    if not videos:
        raise ValueError(
            f"--videos {options.videos} holds no video file ({ignored} other files "
            f"ignored; video extensions: .mp4, .mkv, .avi, .mov, ...)"
        )
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
            revision=revisions.get(modality),
        )
        replace_old[modality] = options.overwrite and main_path.exists() and not in_main
        staged = staging.complete(
            modality, config_hash=hashes[modality], revision=revisions.get(modality)
        )
        done[modality] = {} if options.overwrite else {**in_main, **staged}
    wanted: dict[str, np.ndarray] | None = None
    if options.only_needed:
        if options.annotations is None:
            raise ValueError("--only-needed needs --annotations (the segments to sample)")
        files = options.annotations
        files = [files] if isinstance(files, (str, Path)) else list(files)
        # Ego4D LTA files (fho_lta_*.json, keyed by clip_uid) need the step frames of every
        # action; RU-LSTM / EPIC CSVs the anticipation sampling's frames.
        lta_files = [p for p in files if str(p).lower().endswith(".json")]
        segments = [
            segment
            for path in files
            if path not in lta_files
            for segment in read_annotations(path, video_fps=options.video_info, fps=config.fps)
        ]
        wanted = needed_frames(segments, fps=config.fps, sparse=config.sparse)
        for path in lta_files:
            for video, frames in lta_needed_frames(path).items():
                wanted[video] = np.union1d(wanted.get(video, frames), frames)
        missing = sorted(set(wanted) - {v.video_id for v in videos})
        if missing:
            log(
                f"note: {len(missing)} annotated videos have no file under {options.source} "
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
        estimated = video.estimated_frames(config.fps)
        expected = len(frames) if frames is not None else estimated
        job = VideoJob(video.video_id, video.path, todo, frames, video.frames, expected)
        jobs.append((video.size(), job))
        planned += expected
        if frames is not None:
            total += max(estimated, int(frames.max()) if len(frames) else 0)
    # Largest first, so that round-robin dealing to ranks and workers balances the load.
    ordered = [job for _, job in sorted(jobs, key=lambda item: -item[0])]
    if wanted is not None and total:
        earlier = []  # what is decoded besides the frames themselves (videos, not folders)
        if options.frames is None and "flow" in config.modalities:
            earlier.append(f"flow also decodes {config.flow.stack} frames before each")
        length = config.rgb.clip_length or 1
        if options.frames is None and "rgb" in config.modalities and length > 1:
            earlier.append(
                f"each RGB clip also decodes the {length - 1} frames before its last, "
                f"{config.rgb.clip_stride} apart"
            )
        log(
            f"sparse extraction: the sampling needs {planned} frames of the videos' ~{total} "
            f"({1 - planned / total:.1%} of the frames not extracted"
            + "".join(f"; {part}" for part in earlier)
            + ")"
        )
    return Plan(ordered, skipped, replace_old, planned, total, ignored)
