"""Finding videos and reading their containers: :func:`scan_videos` lists the videos of a
folder, :func:`probe_video` reads a video's frame rate, duration, announced frame count and
display orientation (PyAV) without decoding it all. The decoding rules (frame numbering,
rotation, truncation) are :mod:`feature_extraction.video`'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from epic_protocol.errors import DataError

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".mkv",
        ".avi",
        ".mov",
        ".webm",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".ts",
        ".3gp",
    }
)


class VideoError(DataError, RuntimeError):
    """A video that cannot be read; the message names the file."""


@dataclass(frozen=True)
class VideoFile:
    video_id: str
    path: Path


@dataclass(frozen=True)
class Orientation:
    """How to turn a decoded picture upright: ``quarter_turns`` counter-clockwise, then a
    left-right mirror (from the stream's display matrix)."""

    quarter_turns: int = 0
    mirrored: bool = False

    @property
    def identity(self) -> bool:
        return self.quarter_turns == 0 and not self.mirrored

    @property
    def swaps_sides(self) -> bool:
        return self.quarter_turns % 2 == 1

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) coded picture -> upright picture ((W, H, C) for quarter turns)."""
        if self.identity:
            return image
        upright = np.rot90(image, self.quarter_turns)
        if self.mirrored:
            upright = upright[:, ::-1]
        return np.ascontiguousarray(upright)


def orientation_of(matrix: np.ndarray | None, *, path: Path) -> Orientation:
    """The :class:`Orientation` of an FFmpeg display matrix (9 int32, 16.16 fixed point;
    ``None``: upright). Raises :class:`VideoError` for angles that are not multiples of 90
    degrees. Checked against the ``ffmpeg`` command line's autorotation for all 8 cases."""
    if matrix is None:
        return Orientation()
    a, b, c, d = (float(matrix[i]) / 65536 for i in (0, 1, 3, 4))
    mirrored = a * d - b * c < 0
    if mirrored:  # a left-right mirror negates the first column
        a, c = -a, -c
    degrees = math.degrees(math.atan2(-b, a))
    turns = round(degrees / 90)
    if abs(degrees - 90 * turns) > 1:
        raise VideoError(
            f"{path}: display rotation of {degrees:.1f} degrees is not a multiple of 90; "
            "rotate the video first (e.g. ffmpeg -i IN OUT applies it)"
        )
    return Orientation(turns % 4, mirrored)


def display_matrix(frame) -> np.ndarray | None:  # av.VideoFrame
    """The FFmpeg display matrix of a decoded frame (``None``: upright)."""
    for side_data in frame.side_data:
        if side_data.type.name == "DISPLAYMATRIX":
            return np.frombuffer(bytes(side_data), np.int32)[:9]  # (9,) 16.16 fixed point
    return None


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata (PyAV; only the first frame is decoded, for the orientation).

    ``width`` and ``height`` are the upright (displayed) size; ``announced_frames`` is the
    container's frame count (the MP4 index, else duration x rate)."""

    path: Path
    native_fps: float
    duration_s: float
    width: int
    height: int
    announced_frames: int = 0
    orientation: Orientation = field(default_factory=Orientation)

    def estimated_frames(self, fps: float) -> int:
        """Target frames of the announced duration: instants (k-1)/fps before its end."""
        return max(0, math.ceil(self.duration_s * fps - 1e-6))


@dataclass(frozen=True)
class VideoScan:
    """What :func:`scan_videos` found: the videos, and the other (non-hidden) files."""

    videos: list[VideoFile]
    ignored: list[Path]


def scan_videos(root: str | Path, *, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> VideoScan:
    """Videos under ``root`` (recursively; hidden files and folders skipped), or ``root``
    itself when it is a video file, plus the files ignored for their extension. The video id
    is the file name without its extension; two videos with the same id raise ``ValueError``."""
    root = Path(root)
    allowed = {ext.lower() for ext in extensions}
    if root.is_file():
        candidates = [root]
    elif root.is_dir():
        candidates = sorted(
            path
            for path in root.rglob("*")
            if path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(root).parts)
        )
    else:
        raise FileNotFoundError(f"video folder not found: {root}")
    videos: dict[str, VideoFile] = {}
    ignored: list[Path] = []
    for path in candidates:
        if path.suffix.lower() not in allowed:
            ignored.append(path)
            continue
        video_id = path.stem
        if video_id in videos:
            raise ValueError(
                f"two videos have the id {video_id!r}: {videos[video_id].path} and {path}; "
                "video ids (file names without extension) must be unique"
            )
        videos[video_id] = VideoFile(video_id, path)
    return VideoScan(list(videos.values()), ignored)


def find_videos(
    root: str | Path, *, extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> list[VideoFile]:
    """The videos of :func:`scan_videos`."""
    return scan_videos(root, extensions=extensions).videos


def check_video_file(path: Path) -> None:
    """Raises :class:`VideoError` naming ``path`` when it is missing or empty."""
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame rate, duration, upright size, announced frame count and
    orientation from its container (PyAV; decodes only the first frame).

    Raises :class:`VideoError` naming the file when it is not a readable video."""
    import av

    path = Path(path)
    check_video_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise VideoError(f"{path}: unknown frame rate")
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000  # av.time_base is microseconds
            else:
                duration = (stream.frames or 0) / float(rate)
            announced = int(stream.frames or 0) or round(duration * float(rate))
            width, height = stream.codec_context.width, stream.codec_context.height
            orientation = Orientation()
            try:
                first = next(container.decode(stream), None)
            except av.FFmpegError:
                first = None  # decoding reports it
            if first is not None:
                orientation = orientation_of(display_matrix(first), path=path)
            if orientation.swaps_sides:
                width, height = height, width
            return VideoInfo(
                path=path,
                native_fps=float(rate),
                duration_s=duration,
                width=width,
                height=height,
                announced_frames=announced,
                orientation=orientation,
            )
    except VideoError:
        raise
    except Exception as error:  # PyAV raises many error types for broken files
        raise VideoError(f"{path}: cannot open as a video ({error})") from error
