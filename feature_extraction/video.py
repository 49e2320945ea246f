"""Finding videos and decoding them at a target frame rate.

Frame numbering
---------------
Frames are numbered 1-based at the target ``fps``, like the RU-LSTM split CSVs. Target frame
``k`` stands for the interval ``[(k-1)/fps, k/fps)`` and shows **the last source frame whose
presentation time is before ``k/fps``** (times relative to the first frame). For a constant
frame-rate source whose frames ``n = 1, 2, ...`` start at ``(n-1)/native_fps`` this is source
frame ``n = ceil(k * native_fps / fps)``, the exact inverse of the annotations' conversion
``max(1, floor(n * fps / native_fps))`` (:func:`epic_protocol.convert_frame`): a segment
annotated at native frame ``n`` starts at target frame ``k = convert_frame(n)``, and the
frame extracted as ``k`` is converted back to ``k``. With ``fps == native_fps`` target frame
``k`` is source frame ``k``. A video of ``M`` source frames has ``floor(M * fps / native_fps)``
target frames (again ``convert_frame(M)``).

Container timestamps are often rounded (Matroska stores milliseconds: 33, 67, 100 ms at
30 fps), so times within a tenth of a source frame of the nominal grid are snapped to it;
genuinely variable frame-rate streams keep their raw times.

Decoding uses decord when it is installed and PyAV otherwise, or when decord fails on a file
(PyAV then resumes after the last frame decord produced).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, TypeVar

import cv2
import numpy as np

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

# Tolerance in target-frame units on "before k/fps": far below one frame, far above float error.
_TIME_EPSILON = 1e-6
# Source times within this fraction of a source frame of the nominal grid are snapped onto it.
_SNAP_TOLERANCE = 0.1

DecoderBackend = Literal["auto", "decord", "pyav"]
Payload = TypeVar("Payload")


class VideoError(RuntimeError):
    """A video that cannot be read; the message names the file."""


@dataclass(frozen=True)
class VideoFile:
    video_id: str
    path: Path


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata read without decoding."""

    path: Path
    native_fps: float
    duration_s: float
    width: int
    height: int

    def estimated_frames(self, fps: float) -> int:
        return max(0, math.floor(self.duration_s * fps + _TIME_EPSILON))


def find_videos(
    root: str | Path, *, extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> list[VideoFile]:
    """Videos under ``root`` (recursively; hidden files and folders skipped), or ``root``
    itself when it is a video file. The video id is the file name without its extension;
    files with other extensions are ignored."""
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
    for path in candidates:
        if path.suffix.lower() not in allowed:
            continue
        video_id = path.stem
        if video_id in videos:
            raise ValueError(
                f"two videos have the id {video_id!r}: {videos[video_id].path} and {path}; "
                "video ids (file names without extension) must be unique"
            )
        videos[video_id] = VideoFile(video_id, path)
    return list(videos.values())


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame rate, duration and size from its container (PyAV, no decoding)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
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
            return VideoInfo(
                path=path,
                native_fps=float(rate),
                duration_s=duration,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
            )
    except VideoError:
        raise
    except Exception as error:  # PyAV raises many error types for broken files
        raise VideoError(f"{path}: cannot open as a video ({error})") from error


class TimestampResampler:
    """Assigns source frames, fed in presentation order, to target frame numbers.

    ``push(time, payload)`` returns the target frames whose source frame became known (the
    previous one, once the next frame's time shows where it ends); ``finish()`` returns the
    rest, up to the video's last target frame. See the module docstring for the rule.
    """

    def __init__(self, *, fps: float, native_fps: float | Fraction | None) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.native_fps = float(native_fps) if native_fps and native_fps > 0 else None
        self._first_time: float | None = None
        self._previous: tuple[float, object] | None = None
        self._last_interval: float | None = None
        self._next = 1

    def _position(self, time_s: float | None) -> float:
        """Source time in target-frame units since the first frame, snapped to the grid."""
        if time_s is None:  # no timestamp: assume one nominal frame after the previous one
            if self._previous is None:
                return 0.0
            return self._previous[0] + (self._last_interval or 1.0)
        if self._first_time is None:
            self._first_time = time_s
        elapsed = time_s - self._first_time
        if self.native_fps is None:
            return elapsed * self.fps
        in_source_frames = elapsed * self.native_fps
        nearest = round(in_source_frames)
        if abs(in_source_frames - nearest) <= _SNAP_TOLERANCE:
            in_source_frames = nearest
        return in_source_frames * self.fps / self.native_fps

    def push(self, time_s: float | None, payload: Payload) -> list[tuple[int, Payload]]:
        position = self._position(time_s)
        emitted: list[tuple[int, Payload]] = []
        if self._previous is not None:
            previous_position, previous_payload = self._previous
            if position <= previous_position:
                return emitted  # out-of-order or duplicate timestamp: keep the earlier frame
            self._last_interval = position - previous_position
            # Target frame k takes the previous frame while this one starts at or after k/fps.
            while position >= self._next - _TIME_EPSILON:
                emitted.append((self._next, previous_payload))  # type: ignore[arg-type]
                self._next += 1
        self._previous = (position, payload)
        return emitted

    def finish(self) -> list[tuple[int, Payload]]:
        if self._previous is None:
            return []
        position, payload = self._previous
        frame_length = (
            self.fps / self.native_fps if self.native_fps else (self._last_interval or 1.0)
        )
        # At least frame 1, as the annotations' conversion max(1, floor(...)) clamps to it.
        last = max(1, math.floor(position + frame_length + _TIME_EPSILON))
        emitted = [(k, payload) for k in range(self._next, last + 1)]
        self._next = max(self._next, last + 1)
        return emitted  # type: ignore[return-value]


def resample(
    timed: Iterable[tuple[float | None, Payload]],
    *,
    fps: float,
    native_fps: float | Fraction | None,
) -> Iterator[tuple[int, Payload]]:
    """``(target frame, payload)`` for a stream of ``(source time, payload)``."""
    resampler = TimestampResampler(fps=fps, native_fps=native_fps)
    for time_s, payload in timed:
        yield from resampler.push(time_s, payload)
    yield from resampler.finish()


def select_frames(
    frames: Iterable[tuple[int, Payload]],
    *,
    wanted: np.ndarray | None,
    context: int = 0,
) -> Iterator[tuple[int, Payload, bool]]:
    """Filter a resampled stream to the frames a sparse extraction needs.

    Yields ``(frame, payload, keep)``: ``keep`` marks the ``wanted`` frames, and the
    ``context`` frames before each of them are yielded with ``keep=False`` (optical flow needs
    them). Wanted frames past the end of the video are clamped to its last frame, which is
    what readers return for them anyway ("latest stored frame at or before"). ``wanted=None``
    keeps every frame. Stops reading once nothing more can be wanted.
    """
    if wanted is None:
        for frame, payload in frames:
            yield frame, payload, True
        return
    wanted_set = {int(k) for k in np.asarray(wanted).reshape(-1) if k >= 1}
    if not wanted_set:
        return
    last_wanted = max(wanted_set)
    emit = {k - offset for k in wanted_set for offset in range(context + 1)}
    # The last context+1 frames are held back until the end is known: if wanted frames lie past
    # the end they all become the clamped frame's context.
    held: deque[tuple[int, Payload]] = deque()
    for frame, payload in frames:
        held.append((frame, payload))
        if len(held) > context + 1:
            old_frame, old_payload = held.popleft()
            if old_frame in emit:
                yield old_frame, old_payload, old_frame in wanted_set
        if frame >= last_wanted:
            break
    if not held:
        return
    last_frame = held[-1][0]
    clamped = last_wanted > last_frame
    for frame, payload in held:
        if frame in emit or clamped:
            yield frame, payload, frame in wanted_set or (clamped and frame == last_frame)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize an HxWx3 frame to ``size = (width, height)`` (area interpolation when shrinking)."""
    if size is None:
        return frame
    width, height = size
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    shrinking = width * height < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interpolation)


def output_size(
    width: int, height: int, *, target_width: int | None, target_height: int | None
) -> tuple[int, int] | None:
    """The decoded frame size: both given, one given (aspect kept, rounded to even), or none."""
    if target_width is None and target_height is None:
        return None
    if target_width is not None and target_height is not None:
        return int(target_width), int(target_height)
    if target_width is not None:
        return int(target_width), max(2, 2 * round(height * target_width / width / 2))
    assert target_height is not None
    return max(2, 2 * round(width * target_height / height / 2)), int(target_height)


@dataclass(frozen=True)
class DecodedFrame:
    frame: int  # 1-based at the target fps
    image: np.ndarray  # (H, W, 3) uint8 RGB
    keep: bool  # False for context frames decoded only for optical flow


def _decode_with_decord(
    path: Path,
    *,
    fps: float,
    wanted: np.ndarray | None,
    context: int,
    size_of: _SizeRule,
    start_after: int,
    batch: int = 16,
) -> Iterator[DecodedFrame]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    count = len(reader)
    if count == 0:
        raise VideoError(f"{path}: the video has no frames")
    starts = reader.get_frame_timestamp(np.arange(count))[:, 0]  # (count,) seconds
    native_fps = reader.get_avg_fps()
    # Map target frames to source indices from timestamps alone, then decode only those.
    plan = [
        (frame, index, keep)
        for frame, index, keep in select_frames(
            resample(zip(starts.tolist(), range(count)), fps=fps, native_fps=native_fps),
            wanted=wanted,
            context=context,
        )
        if frame > start_after
    ]
    size: tuple[int, int] | None = None
    for begin in range(0, len(plan), batch):
        part = plan[begin : begin + batch]
        indices = sorted({index for _, index, _ in part})
        images = reader.get_batch(indices).asnumpy()  # (U, H, W, 3) uint8 RGB
        by_index = dict(zip(indices, images))
        for frame, index, keep in part:
            image = by_index[index]
            if size is None:
                size = size_of(image.shape[1], image.shape[0])
            yield DecodedFrame(frame, resize_frame(image, size), keep)


def _decode_with_pyav(
    path: Path,
    *,
    fps: float,
    wanted: np.ndarray | None,
    context: int,
    size_of: _SizeRule,
    start_after: int,
) -> Iterator[DecodedFrame]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        native_fps = stream.average_rate or stream.guessed_rate
        timed = ((frame.time, frame) for frame in container.decode(stream))
        size: tuple[int, int] | None = None
        for frame, source, keep in select_frames(
            resample(timed, fps=fps, native_fps=native_fps), wanted=wanted, context=context
        ):
            if frame <= start_after:
                continue
            if size is None:
                size = size_of(source.width, source.height)
            image = source.to_ndarray(format="rgb24")  # (H, W, 3) uint8
            yield DecodedFrame(frame, resize_frame(image, size), keep)


class _SizeRule:
    def __init__(self, width: int | None, height: int | None) -> None:
        self.width, self.height = width, height

    def __call__(self, width: int, height: int) -> tuple[int, int] | None:
        return output_size(width, height, target_width=self.width, target_height=self.height)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def decode_video(
    path: str | Path,
    *,
    fps: float,
    width: int | None = None,
    height: int | None = None,
    backend: DecoderBackend = "auto",
    wanted: np.ndarray | None = None,
    context: int = 0,
) -> Iterator[DecodedFrame]:
    """Decode ``path`` at ``fps`` (see the module docstring for the frame rule), resized to
    ``width`` x ``height`` (one of them alone keeps the aspect ratio).

    ``wanted`` (1-based target frames) restricts decoding to those frames plus ``context``
    frames before each (see :func:`select_frames`). Raises :class:`VideoError` naming the
    file when no decoder can read it.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    size_of = _SizeRule(width, height)
    options = {"fps": fps, "wanted": wanted, "context": context, "size_of": size_of}
    last = 0
    decord_error: Exception | None = None
    if backend == "decord" or (backend == "auto" and decord_available()):
        try:
            for decoded in _decode_with_decord(path, start_after=0, **options):
                last = decoded.frame
                yield decoded
            return
        except Exception as error:  # decord raises its own DECORDError and others
            if backend == "decord":
                raise VideoError(f"{path}: decord cannot decode it ({error})") from error
            decord_error = error
    try:
        produced = False
        for decoded in _decode_with_pyav(path, start_after=last, **options):
            produced = True
            yield decoded
        if not produced and last == 0:
            raise VideoError(f"{path}: no frames could be decoded")
    except VideoError:
        raise
    except Exception as error:
        detail = f"PyAV: {error}"
        if decord_error is not None:
            detail = f"decord: {decord_error}; {detail}"
        raise VideoError(f"{path}: cannot decode ({detail})") from error
