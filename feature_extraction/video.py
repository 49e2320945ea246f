"""Decoding videos at a target frame rate, upright and complete (finding videos and reading
their containers: :mod:`feature_extraction.video_files`; the output size and resizing:
:mod:`feature_extraction.resizing`).

Frame numbering (one rule for every backend)
--------------------------------------------
Frames are numbered 1-based at the target ``fps``, like the RU-LSTM split CSVs. **Target frame
``k`` shows the latest source frame whose presentation time is at or before ``(k-1)/fps``**
(what is on screen at the start of its interval; times relative to the first frame). The
comparison is exact: source times are the container's integer timestamps (ticks of the
stream's time base, read by PyAV for both backends, never decord's float32 seconds), and the
instant ``(k-1)/fps`` is converted to ticks in rational arithmetic and rounded to the nearest
tick, as a muxer rounds the time it stores (Matroska stores milliseconds: 0, 33, 67 ms at
30 fps are frames 1, 2, 3). Variable frame-rate streams follow the same rule on their raw
times; nothing is snapped to a grid guessed from the average rate. A video has the target
frames whose instants lie before the end of its last frame (its time plus its duration; less
one tick when the nominal frame duration is not a whole number of ticks, i.e. the container
rounded both).

For a constant-rate source at ``native_fps`` target frame ``k`` is source frame
``n = floor((k-1) * native_fps / fps) + 1``, and a video of ``M`` source frames has
``ceil(M * fps / native_fps)`` target frames. With ``fps == native_fps`` frame ``k`` is source
frame ``k``. The annotations' conversion ``max(1, floor(n * fps / native_fps))``
(:func:`epic_protocol.convert_frame`) lands within one target frame of this rule.

Display rotation
----------------
Phones store portrait video as landscape pictures plus a display matrix. Every decoded frame
is turned upright (multiples of 90 degrees, with the mirror the matrix may add) before
resizing, so a portrait clip gives portrait frames. decord 0.6 ignores or garbles the matrix,
so rotated videos are decoded with PyAV (logged).

Truncated files
---------------
A file cut short still announces its full length (the MP4 index, the Matroska duration). The
container's packets are counted before decoding; when the decodable frames end more than
:data:`TRUNCATION_TOLERANCE` source frames before the announced end, decoding raises
:class:`TruncatedVideoError` naming the file and both counts, unless ``allow_truncated`` is
set (then the decoded frames are used and the counts are reported in :class:`DecodeReport`).
The tolerance absorbs containers whose duration counts a last frame's display time or rounds
it; a real cut loses far more.

Decoding uses decord when it is installed and PyAV otherwise, when decord fails on a file
(PyAV then resumes after the last frame decord produced), or when decord cannot honour the
file (rotation, frame count or timestamps disagreeing with the container's packets).

The three rules above meet in :func:`decode_video` and are checked against each other for
both backends, so they are kept in this one module.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from feature_extraction.resizing import SizeRule, resize_frame
from feature_extraction.video_files import (
    Orientation,
    VideoError,
    VideoInfo,
    check_video_file,
    probe_video,
)

#: Source frames a video may end before its announced end without counting as truncated.
TRUNCATION_TOLERANCE = 2

DecoderBackend = Literal["auto", "decord", "pyav"]
Payload = TypeVar("Payload")

log = logging.getLogger(__name__)


class TruncatedVideoError(VideoError):
    """A file that decodes to fewer frames than its container announces (cut short)."""

    def __init__(self, path: Path, *, decoded: int, announced: int, detail: str = "") -> None:
        self.path, self.decoded, self.announced = path, decoded, announced
        message = (
            f"{path}: truncated: {decoded} frames decoded of {announced} announced by the "
            "container (use --allow-truncated to keep the decoded part)"
        )
        super().__init__(message + (f"; {detail}" if detail else ""))


def exact_rate(fps: float | Fraction) -> Fraction:
    """A frame rate as a fraction (29.97 -> 2997/100, 30000/1001 stays exact)."""
    return Fraction(fps).limit_denominator(1001)


class TimestampResampler:
    """Assigns source frames, fed in presentation order, to target frame numbers.

    ``push(pts, payload, duration)`` takes the frame's presentation time and duration in
    integer ticks of ``time_base`` and returns the target frames whose source frame became
    known (the previous one, once this frame's time shows where it stops being the latest);
    ``finish()`` returns the rest, up to the video's last target frame. See the module
    docstring for the rule. ``frame_ticks``: the nominal frame duration (1 / average rate, in
    ticks), for frames without one; when it is not a whole number of ticks the container must
    have rounded the times, and the end gets one tick of margin.
    """

    def __init__(
        self,
        *,
        fps: float | Fraction,
        time_base: Fraction,
        frame_ticks: Fraction | int | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = exact_rate(fps)
        self.time_base = Fraction(time_base)
        nominal = Fraction(frame_ticks) if frame_ticks and frame_ticks > 0 else None
        self.frame_ticks = max(1, round(nominal)) if nominal is not None else None
        self._margin = 1 if nominal is not None and nominal.denominator != 1 else 0
        self._first: int | None = None
        self._previous: tuple[int, object] | None = None
        self._duration = 0  # of the previous frame, in ticks
        self._next = 1

    def instant(self, frame: int) -> int:
        """Ticks after the first frame of target frame ``frame``'s instant (frame-1)/fps,
        rounded to the nearest tick (halves up)."""
        exact = Fraction(frame - 1) / (self.fps * self.time_base)
        return math.floor(exact + Fraction(1, 2))

    def push(
        self, pts: int | None, payload: Payload, duration: int | None = None
    ) -> list[tuple[int, Payload]]:
        if pts is None:  # no timestamp: one frame after the previous one
            position = 0 if self._previous is None else self._previous[0] + self._duration
        else:
            if self._first is None:
                self._first = int(pts)
            position = int(pts) - self._first
        emitted: list[tuple[int, Payload]] = []
        if self._previous is not None:
            previous_position, previous_payload = self._previous
            if position <= previous_position:
                return emitted  # out-of-order or duplicate timestamp: keep the earlier frame
            # Target frame k takes the previous frame while this one starts after its instant.
            while self.instant(self._next) < position:
                emitted.append((self._next, previous_payload))  # type: ignore[arg-type]
                self._next += 1
            interval = position - previous_position
        else:
            interval = 0
        self._duration = (
            int(duration) if duration and duration > 0 else (self.frame_ticks or interval or 1)
        )
        self._previous = (position, payload)
        return emitted

    def finish(self) -> list[tuple[int, Payload]]:
        if self._previous is None:
            return []
        position, payload = self._previous
        end = position + self._duration
        emitted: list[tuple[int, Payload]] = []
        # In rounded time bases (Matroska's milliseconds) the last frame's time and duration
        # are each off by up to half a tick: one tick of margin. At least frame 1, as the
        # annotations' conversion max(1, floor(...)) clamps to it.
        while self._next == 1 or self.instant(self._next) < end - self._margin:
            emitted.append((self._next, payload))  # type: ignore[arg-type]
            self._next += 1
        return emitted


def resample(
    timed: Iterable[tuple[int | None, int | None, Payload]],
    *,
    fps: float | Fraction,
    time_base: Fraction,
    frame_ticks: Fraction | int | None = None,
) -> Iterator[tuple[int, Payload]]:
    """``(target frame, payload)`` for a stream of ``(pts, duration, payload)`` in ticks of
    ``time_base`` (see :class:`TimestampResampler`)."""
    resampler = TimestampResampler(fps=fps, time_base=time_base, frame_ticks=frame_ticks)
    for pts, duration, payload in timed:
        yield from resampler.push(pts, payload, duration)
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


@dataclass(frozen=True)
class DecodedFrame:
    frame: int  # 1-based at the target fps
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright
    keep: bool  # False for context frames decoded only for optical flow


@dataclass
class DecodeReport:
    """What :func:`decode_video` found, filled in as it runs (pass one to read it).

    ``decoded_frames``: source frames the file holds (its packets), or fewer when decoding
    stopped on an error; ``announced_frames``: the container's count (see :class:`VideoInfo`).
    """

    backend: str = ""
    announced_frames: int = 0
    decoded_frames: int = 0
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Packets:
    """The video stream's packet times: the exact presentation times of its frames."""

    pts: list[int]  # sorted, in ticks of time_base
    durations: list[int]  # per packet of ``pts`` (0: unknown)
    time_base: Fraction
    frame_ticks: Fraction | None  # nominal duration of a frame (1 / average rate)

    def seconds(self) -> float:
        """Presentation time from the first frame to the end of the last one."""
        if not self.pts:
            return 0.0
        last = self.durations[-1] or self.frame_ticks or 0
        return float((self.pts[-1] - self.pts[0] + last) * self.time_base)


def _frame_ticks(stream) -> Fraction | None:  # av.VideoStream
    rate = stream.average_rate or stream.guessed_rate
    if not rate or not stream.time_base:
        return None
    return 1 / (Fraction(rate) * Fraction(stream.time_base))


def _scan_packets(path: Path) -> _Packets | None:
    """Demux (no decoding) the video stream's packets; ``None`` when some have no time."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            timed: list[tuple[int, int]] = []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue  # the final flush packet; frames an edit list cuts away
                if packet.pts is None:
                    return None
                timed.append((int(packet.pts), int(packet.duration or 0)))
            timed.sort()
            return _Packets(
                pts=[t for t, _ in timed],
                durations=[d for _, d in timed],
                time_base=Fraction(stream.time_base),
                frame_ticks=_frame_ticks(stream),
            )
    except Exception as error:  # PyAV raises many error types for broken files
        raise VideoError(f"{path}: cannot read its packets ({error})") from error


class _Unsuitable(Exception):
    """decord cannot decode this file correctly; PyAV is used (the message says why)."""


def _decode_with_decord(
    path: Path,
    *,
    fps: float,
    wanted: np.ndarray | None,
    context: int,
    size_of: SizeRule,
    start_after: int,
    packets: _Packets | None,
    orientation: Orientation,
    batch: int = 16,
) -> Iterator[DecodedFrame]:
    import decord

    if not orientation.identity:
        raise _Unsuitable("decord 0.6 does not apply the display rotation (it garbles it)")
    if packets is None:
        raise _Unsuitable("the container's packets lack timestamps")
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    count = len(reader)
    if count == 0:
        raise VideoError(f"{path}: the video has no frames")
    if count != len(packets.pts):
        raise _Unsuitable(f"decord indexes {count} frames, the container has {len(packets.pts)}")
    # decord's float32 seconds only confirm that its frame i is the packet of i-th time.
    starts = reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64)  # (count,)
    exact = np.array([float(t * packets.time_base) for t in packets.pts])  # (count,) seconds
    if np.abs(starts - exact).max() > 2e-3:
        raise _Unsuitable("decord's frame times disagree with the container's timestamps")
    timed = zip(packets.pts, packets.durations, range(count))
    plan = [
        (frame, index, keep)
        for frame, index, keep in select_frames(
            resample(timed, fps=fps, time_base=packets.time_base, frame_ticks=packets.frame_ticks),
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


@dataclass
class _PyavProgress:
    decoded: int = 0
    finished: bool = False  # reached the end of the stream (or a decoding error)
    error: str = ""


def _decode_with_pyav(
    path: Path,
    *,
    fps: float,
    wanted: np.ndarray | None,
    context: int,
    size_of: SizeRule,
    start_after: int,
    orientation: Orientation,
    progress: _PyavProgress,
) -> Iterator[DecodedFrame]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"

        def timed() -> Iterator[tuple[int | None, int | None, av.VideoFrame]]:
            frames = container.decode(stream)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.FFmpegError as error:
                    if progress.decoded == 0:
                        raise
                    progress.error = str(error)  # a damaged or cut tail: the frames so far
                    break
                progress.decoded += 1
                yield frame.pts, frame.duration, frame
            progress.finished = True

        size: tuple[int, int] | None = None
        resampled = resample(
            timed(), fps=fps, time_base=Fraction(stream.time_base), frame_ticks=_frame_ticks(stream)
        )
        for frame, source, keep in select_frames(resampled, wanted=wanted, context=context):
            if frame <= start_after:
                continue
            image = orientation.apply(source.to_ndarray(format="rgb24"))  # (H, W, 3) uint8
            if size is None:
                size = size_of(image.shape[1], image.shape[0])
            yield DecodedFrame(frame, resize_frame(image, size), keep)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _is_truncated(decoded: int, seconds: float, info: VideoInfo) -> bool:
    """Fewer frames than announced, and ending early, by more than the tolerance (both, so
    that a rate guessed from a variable-rate stream's first frames does not count)."""
    short_by_count = decoded + TRUNCATION_TOLERANCE < info.announced_frames
    short_by_time = seconds < info.duration_s - TRUNCATION_TOLERANCE / info.native_fps
    return short_by_count and short_by_time


def decode_video(
    path: str | Path,
    *,
    fps: float,
    width: int | None = None,
    height: int | None = None,
    backend: DecoderBackend = "auto",
    wanted: np.ndarray | None = None,
    context: int = 0,
    allow_truncated: bool = False,
    report: DecodeReport | None = None,
) -> Iterator[DecodedFrame]:
    """Decode ``path`` at ``fps`` (see the module docstring for the frame rule), upright,
    resized to ``width`` x ``height`` (one of them alone keeps the aspect ratio).

    ``wanted`` (1-based target frames) restricts decoding to those frames plus ``context``
    frames before each (see :func:`select_frames`). Raises :class:`TruncatedVideoError` for a
    file cut short (see the module docstring) unless ``allow_truncated``, and
    :class:`VideoError` naming the file when no decoder can read it. ``report`` is filled in
    with the backend used and the frame counts.
    """
    path = Path(path)
    check_video_file(path)
    report = report if report is not None else DecodeReport()
    info = probe_video(path)
    packets = _scan_packets(path)
    report.announced_frames = info.announced_frames
    if packets is not None:
        report.decoded_frames = len(packets.pts)
        if not packets.pts:
            raise VideoError(f"{path}: the video has no frames")
        if _is_truncated(len(packets.pts), packets.seconds(), info):
            _truncated(path, report, allow_truncated)
    size_of = SizeRule(width, height)
    options = {"fps": fps, "wanted": wanted, "context": context, "size_of": size_of}
    options["orientation"] = info.orientation
    last = 0
    decord_error: Exception | None = None
    if backend == "decord" or (backend == "auto" and decord_available()):
        report.backend = "decord"
        try:
            for decoded in _decode_with_decord(path, start_after=0, packets=packets, **options):
                last = decoded.frame
                yield decoded
            return
        except _Unsuitable as why:
            note = f"{path}: decoded with PyAV: {why}"
            report.notes.append(note)
            log.warning(note)
        except Exception as error:  # decord raises its own DECORDError and others
            if backend == "decord":
                raise VideoError(f"{path}: decord cannot decode it ({error})") from error
            decord_error = error
    report.backend = "pyav"
    progress = _PyavProgress()
    try:
        produced = False
        for decoded in _decode_with_pyav(path, start_after=last, progress=progress, **options):
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
    if progress.finished and progress.decoded < report.decoded_frames:
        # Decoding stopped before the packets did: count what was decoded.
        report.decoded_frames = progress.decoded
        seconds = progress.decoded / info.native_fps
        if not report.truncated and _is_truncated(progress.decoded, seconds, info):
            _truncated(path, report, allow_truncated, detail=progress.error)


def _truncated(path: Path, report: DecodeReport, allow: bool, *, detail: str = "") -> None:
    error = TruncatedVideoError(
        path, decoded=report.decoded_frames, announced=report.announced_frames, detail=detail
    )
    if not allow:
        raise error
    report.truncated = True
    note = (
        f"{path}: truncated: {report.decoded_frames} frames decoded of "
        f"{report.announced_frames} announced; keeping them (--allow-truncated)"
    )
    report.notes.append(note)
    log.warning(note)
