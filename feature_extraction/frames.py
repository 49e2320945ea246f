"""Frame folders as extraction input: the RU-LSTM authors' flat layout and EPIC-KITCHENS' own.

Layouts (found recursively under the folder given to ``rulstm-extract --frames``):

* **flat** (the RU-LSTM authors' example data): ``<video>_frame_<n>.jpg`` RGB frames and
  ``<video>_flow_u_<n>.jpg`` / ``<video>_flow_v_<n>.jpg`` flow images, ``<n>`` 10 digits,
  1-based, already at the output rate (30 fps). Flow image ``n`` belongs to frame ``n``.
* **epic** (EPIC-KITCHENS' frame archives): ``rgb_frames/<video>/frame_<n>.jpg`` at the video's
  native rate, and ``flow_frames/<video>/u/frame_<n>.jpg``, ``.../v/frame_<n>.jpg`` at half of
  it. The native rate comes from the video-info CSV (``EPIC_100_video_info.csv``). Both are
  mapped onto the output numbering by the rule of video decoding
  (:mod:`feature_extraction.video`): source frame ``n`` starts at ``(n - 1) / rate`` and output
  frame ``k`` shows the latest source frame at or before ``(k - 1) / fps``, i.e.
  ``n = floor((k - 1) * rate / fps) + 1``; at 60 fps RGB frame ``2k - 1`` and flow image ``k``
  (30 fps), at 50 fps RGB ``floor(5(k - 1) / 3) + 1`` and flow ``floor(5(k - 1) / 6) + 1``.

Each video's frames run from output frame 1 to the last frame of its longest mapped sequence;
past the end of a shorter one (flow often has one image less), that one's last image is used
("latest at or before", as readers of the features do).

Flow stacks: the input of output frame ``k`` whose flow image is ``j`` stacks the (u, v)
images ``j - L + 1 .. j`` (``L`` = stack length, 5), oldest first, u before v, and repeats
image 1 before the start: frame 3 of the flat layout stacks images 1, 1, 1, 2, 3, as the
authors' script does. For the epic layout the stack holds consecutive flow images at their
own rate, as TSN was trained.

File names end in any spelling of the JPEG extension (``.jpg``, ``.jpeg``, ``.JPG``, ``.JPEG``,
mixed within a video: cameras and copies from Windows write upper case).

Errors: a gap in a sequence's numbering (including a missing frame 1), a flow image without its
partner, frames of one kind in two folders, a file named like a frame but with another extension
(``frame_0000000041.png``) or one frame under two spellings (``.jpg`` and ``.JPG``), or a video
missing from the video-info CSV fail that video (never a video cut short at the odd file), and
reading an unreadable JPEG fails it when it is reached; the messages name the file. Other videos
go on.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from epic_protocol.errors import DataError
from feature_extraction.video import exact_rate, resample

Layout = Literal["flat", "epic"]
Kind = Literal["rgb", "u", "v"]

# Names of the layouts with any extension; :data:`JPEG_SUFFIXES` are read, others fail the video.
_FLAT = re.compile(r"^(?P<video>.+)_(?P<kind>frame|flow_u|flow_v)_(?P<n>\d{10})(?P<ext>\.[^.]+)$")
_EPIC = re.compile(r"^frame_(?P<n>\d{10})(?P<ext>\.[^.]+)$")
#: Extensions of frame images, compared case-insensitively (``.JPG`` and ``.Jpeg`` too).
JPEG_SUFFIXES = (".jpg", ".jpeg")
_FLAT_KINDS: dict[str, Kind] = {"frame": "rgb", "flow_u": "u", "flow_v": "v"}


class FrameError(DataError, RuntimeError):
    """A frame folder that cannot be used; the message names the file."""


@dataclass(frozen=True)
class FrameSequence:
    """Images ``1 .. count`` of one kind of one video:
    ``folder / f"{prefix}{n:010d}{suffix}"``, where ``suffix`` is ``suffixes[n]`` for the
    images whose extension is spelled unlike the others (``.JPG`` among ``.jpg``)."""

    folder: Path
    prefix: str
    count: int
    suffix: str = ".jpg"
    suffixes: Mapping[int, str] = field(default_factory=dict, hash=False, compare=False)

    def path(self, number: int) -> Path:
        return self.folder / f"{self.prefix}{number:010d}{self.suffixes.get(number, self.suffix)}"


@dataclass(frozen=True)
class FrameVideo:
    """One video's frame folders.

    ``rgb_fps`` / ``flow_fps``: the sequences' rates (``None``: already at the output rate).
    ``problem``: why the video cannot be extracted (empty when fine); raised when it is read.
    """

    video_id: str
    layout: Layout
    rgb: FrameSequence | None
    flow_u: FrameSequence | None
    flow_v: FrameSequence | None
    rgb_fps: float | None = None
    flow_fps: float | None = None
    problem: str = ""

    @property
    def path(self) -> Path:
        """A folder that holds the video's frames (for messages)."""
        for sequence in (self.rgb, self.flow_u):
            if sequence is not None:
                return sequence.folder
        return Path(".")

    def output_frames(self, fps: float) -> int:
        """Frames at ``fps``: the longest of the mapped sequences (see the module docstring)."""
        counts = [
            _mapped_count(sequence.count, rate, fps)
            for sequence, rate in ((self.rgb, self.rgb_fps), (self.flow_u, self.flow_fps))
            if sequence is not None
        ]
        return max(counts, default=0)


def _mapped_count(count: int, rate: float | None, fps: float) -> int:
    """Output frames of ``count`` images at ``rate``: ``ceil(count * fps / rate)`` in exact
    arithmetic, what :func:`source_indices` gives, without walking every image (planning sees
    them all)."""
    if rate is None:
        return count
    return math.ceil(Fraction(count) * exact_rate(fps) / exact_rate(rate))


def source_indices(count: int, *, rate: float, fps: float) -> np.ndarray:
    """(K,) 1-based source image of output frames ``1 .. K`` for ``count`` images at ``rate``:
    the video decoding rule (:class:`feature_extraction.video.TimestampResampler`) applied to
    images that start at ``(n - 1) / rate`` and last ``1 / rate``, i.e.
    ``n = floor((k - 1) * rate / fps) + 1``."""
    source, target = exact_rate(rate), exact_rate(fps)
    # A tick in which both image starts and output instants are whole: the comparison is exact
    # (ticks of 1 / rate would round the instants to whole images).
    time_base = Fraction(1, source.numerator * target.numerator)
    step = int(source.denominator * target.numerator)  # one image, in ticks
    timed = (((n - 1) * step, step, n) for n in range(1, count + 1))
    frames = resample(timed, fps=target, time_base=time_base, frame_ticks=step)
    return np.array([n for _, n in frames], np.int64)


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """(folder, file name) of every file under ``root`` in name order, hidden folders and files
    skipped."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder), name


# Found images of one kind of one video: folder -> {image number: extension as spelled}.
_Found = dict[Path, dict[int, str]]


def _add(
    found: _Found,
    folder: Path,
    name: str,
    match: re.Match[str],
    problems: dict[str, str],
    video: str,
) -> None:
    """Record one file named like a frame, or the video's first problem with it: an extension
    that is not JPEG, or an image number present under two spellings."""
    number, suffix = int(match["n"]), match["ext"]
    if suffix.lower() not in JPEG_SUFFIXES:
        problems.setdefault(
            video,
            f"{folder / name}: named like a frame of {video} but not a JPEG (frames must end in "
            f"{', '.join(JPEG_SUFFIXES)}, in any case); rename or convert it",
        )
        return
    numbers = found.setdefault(folder, {})
    if number in numbers:
        other = name[: -len(suffix)] + numbers[number]
        problems.setdefault(
            video, f"{folder / name}: the same frame as {other}; keep one of the two files"
        )
        return
    numbers[number] = suffix


def _sequence(
    video: str, kind: str, found: Mapping[Path, Mapping[int, str]], prefix: str
) -> tuple[FrameSequence | None, str]:
    """The sequence of one kind, or a problem: two folders, or a gap in the numbering."""
    if not found:
        return None, ""
    if len(found) > 1:
        folders = ", ".join(str(f) for f in sorted(found)[:2])
        return None, f"{video}: {kind} images in more than one folder ({folders})"
    folder, spelled = next(iter(found.items()))
    numbers = sorted(spelled)
    suffix = Counter(spelled.values()).most_common(1)[0][0]
    others = {n: ext for n, ext in spelled.items() if ext != suffix}
    sequence = FrameSequence(folder, prefix, numbers[-1], suffix, others)
    if len(numbers) != numbers[-1] or numbers[0] != 1:
        present = set(numbers)
        missing = next(n for n in range(1, numbers[-1] + 1) if n not in present)
        after = next((n for n in numbers if n > missing), missing)
        return sequence, (
            f"{sequence.path(missing)}: missing; the {kind} images of {video} have a gap "
            f"in their numbering (next present: {sequence.path(after).name})"
        )
    return sequence, ""


def _pair_problem(u: FrameSequence | None, v: FrameSequence | None, video: str) -> str:
    if u is None and v is None:
        return ""
    if u is None or v is None:
        have, lack = ("u", "v") if v is None else ("v", "u")
        present = (u or v).path(1)  # type: ignore[union-attr]
        return f"{present}: flow {have} images of {video} have no {lack} images"
    if u.count != v.count:
        shorter, longer, kind = (u, v, "u") if u.count < v.count else (v, u, "v")
        return (
            f"{shorter.path(shorter.count + 1)}: missing; flow image "
            f"{longer.path(shorter.count + 1).name} has no {kind} partner"
        )
    return ""


def find_frame_videos(
    root: str | Path, *, video_info: Mapping[str, float] | None = None
) -> list[FrameVideo]:
    """The videos under ``root`` in either layout (see the module docstring), sorted by id.

    ``video_info``: native fps per video, needed for the epic layout (a video missing from it
    gets a ``problem``). Raises ``FileNotFoundError`` when ``root`` is not a folder,
    ``ValueError`` when epic-layout frames exist but ``video_info`` is ``None``, or when one
    video appears in both layouts."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"frame folder not found: {root}")
    flat: dict[str, dict[str, _Found]] = {}
    epic: dict[str, dict[str, _Found]] = {}
    problems: dict[str, str] = {}  # video -> its first file problem (see _add)
    for folder, name in _walk(root):
        match = _FLAT.match(name)
        if match:
            kinds = flat.setdefault(match["video"], {})
            kind = _FLAT_KINDS[match["kind"]]
            _add(kinds.setdefault(kind, {}), folder, name, match, problems, match["video"])
            continue
        match = _EPIC.match(name)
        if match is None:
            continue
        parts = folder.parts
        if len(parts) >= 2 and parts[-2] == "rgb_frames":
            video, kind = parts[-1], "rgb"
        elif len(parts) >= 3 and parts[-3] == "flow_frames" and parts[-1] in ("u", "v"):
            video, kind = parts[-2], parts[-1]
        else:
            continue
        _add(epic.setdefault(video, {}).setdefault(kind, {}), folder, name, match, problems, video)
    both = sorted(set(flat) & set(epic))
    if both:
        raise ValueError(f"video {both[0]} has frames in both the flat and the EPIC layout")
    if epic and video_info is None:
        raise ValueError(
            f"{root} holds EPIC-KITCHENS frame folders (rgb_frames/, flow_frames/): their native "
            "frame rates come from the video-info CSV, give --video_info EPIC_100_video_info.csv"
        )
    videos = [_flat_video(video, kinds, problems.get(video, "")) for video, kinds in flat.items()]
    videos += [
        _epic_video(video, kinds, video_info or {}, problems.get(video, ""))
        for video, kinds in epic.items()
    ]
    return sorted(videos, key=lambda v: v.video_id)


def _flat_video(video: str, kinds: Mapping[str, _Found], problem: str) -> FrameVideo:
    rgb, p1 = _sequence(video, "RGB", kinds.get("rgb", {}), f"{video}_frame_")
    u, p2 = _sequence(video, "flow u", kinds.get("u", {}), f"{video}_flow_u_")
    v, p3 = _sequence(video, "flow v", kinds.get("v", {}), f"{video}_flow_v_")
    problem = problem or p1 or p2 or p3 or _pair_problem(u, v, video)
    return FrameVideo(video, "flat", rgb, u, v, problem=problem)


def _epic_video(
    video: str, kinds: Mapping[str, _Found], video_info: Mapping[str, float], problem: str
) -> FrameVideo:
    rgb, p1 = _sequence(video, "RGB", kinds.get("rgb", {}), "frame_")
    u, p2 = _sequence(video, "flow u", kinds.get("u", {}), "frame_")
    v, p3 = _sequence(video, "flow v", kinds.get("v", {}), "frame_")
    problem = problem or p1 or p2 or p3 or _pair_problem(u, v, video)
    native = video_info.get(video)
    if native is None and not problem:
        problem = f"{video}: not in the video-info CSV (its native frame rate is needed)"
    rate = native or 60.0
    return FrameVideo(video, "epic", rgb, u, v, rate, rate / 2, problem)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a JPEG (PIL, as the reference). Raises :class:`FrameError`."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise FrameError(f"{path}: cannot read the JPEG ({error})") from error


def read_gray(path: Path) -> np.ndarray:
    """(H, W) uint8 of a grayscale flow JPEG (PIL ``convert('L')``, as the reference)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except Exception as error:
        raise FrameError(f"{path}: cannot read the JPEG ({error})") from error


@dataclass(frozen=True)
class FrameRow:
    frame: int  # 1-based at the output fps
    image: np.ndarray | None  # (H, W, 3) uint8 RGB, as stored
    flow: np.ndarray | None  # (2 * stack, H, W) uint8, 128 = no motion


class FrameReader:
    """Reads one frame video's rows at the output rate (see the module docstring).

    Args:
        video: The video's frame folders.
        fps: Output frame rate (30).
        rgb: Read RGB frames.
        flow: Read flow stacks of ``stack`` (u, v) pairs.

    Images keep their stored size (the reference feeds the JPEGs as they are; the backbones
    resize to their input size).
    """

    def __init__(
        self,
        video: FrameVideo,
        *,
        fps: float,
        rgb: bool,
        flow: bool,
        stack: int = 5,
    ) -> None:
        if video.problem:
            raise FrameError(video.problem)
        self.video, self.fps, self.stack = video, fps, stack
        if rgb and video.rgb is None:
            raise FrameError(
                f"{video.path}: no RGB frames of {video.video_id} ({_expected(video, 'rgb')})"
            )
        if flow and video.flow_u is None:
            raise FrameError(
                f"{video.path}: no flow images of {video.video_id} ({_expected(video, 'u')})"
            )
        self.total = video.output_frames(fps)
        self._rgb = self._mapping(video.rgb, video.rgb_fps) if rgb else None
        self._flow = self._mapping(video.flow_u, video.flow_fps) if flow else None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._shapes: dict[str, tuple[int, ...]] = {}

    def _mapping(self, sequence: FrameSequence | None, rate: float | None) -> np.ndarray:
        assert sequence is not None
        if rate is None:
            indices = np.arange(1, sequence.count + 1, dtype=np.int64)
        else:
            indices = source_indices(sequence.count, rate=rate, fps=self.fps)
        if len(indices) == 0:  # fewer images than one output frame: the first one
            indices = np.ones(1, np.int64)
        return indices

    @staticmethod
    def _at(mapping: np.ndarray, frame: int) -> int:
        return int(mapping[min(frame, len(mapping)) - 1])  # past the end: the last image

    def _check_shape(self, kind: str, path: Path, array: np.ndarray) -> np.ndarray:
        expected = self._shapes.setdefault(kind, array.shape)
        if array.shape != expected:
            raise FrameError(
                f"{path}: size {array.shape[1]}x{array.shape[0]} differs from the video's "
                f"other {kind} images ({expected[1]}x{expected[0]})"
            )
        return array

    def rgb_image(self, frame: int) -> np.ndarray:
        assert self._rgb is not None and self.video.rgb is not None
        path = self.video.rgb.path(self._at(self._rgb, frame))
        return self._check_shape("RGB", path, read_rgb(path))

    def _flow_image(self, number: int) -> np.ndarray:
        """(2, H, W) uint8 u, v of flow image ``number``, cached for the overlapping stacks."""
        cached = self._cache.get(number)
        if cached is not None:
            self._cache.move_to_end(number)
            return cached
        assert self.video.flow_u is not None and self.video.flow_v is not None
        pair = []
        for sequence in (self.video.flow_u, self.video.flow_v):
            path = sequence.path(number)
            pair.append(self._check_shape("flow", path, read_gray(path)))
        field = np.stack(pair)  # 2 x (H, W) -> (2, H, W)
        self._cache[number] = field
        if len(self._cache) > 2 * self.stack:
            self._cache.popitem(last=False)
        return field

    def flow_stack(self, frame: int) -> np.ndarray:
        """(2 * stack, H, W) uint8: u, v of images ``j - stack + 1 .. j`` (image 1 repeated
        before the start), ``j`` being the frame's flow image."""
        assert self._flow is not None
        last = self._at(self._flow, frame)
        numbers = [max(1, n) for n in range(last - self.stack + 1, last + 1)]
        return np.concatenate([self._flow_image(n) for n in numbers])  # -> (2 * stack, H, W)

    def frames(self, wanted: np.ndarray | None = None) -> list[int]:
        """The output frames to read: all, or the wanted ones (past the end: the last frame)."""
        if wanted is None:
            return list(range(1, self.total + 1))
        clamped = {min(int(k), self.total) for k in np.asarray(wanted).reshape(-1) if k >= 1}
        return sorted(clamped)

    def rows(self, wanted: np.ndarray | None = None) -> Iterator[FrameRow]:
        for frame in self.frames(wanted):
            yield FrameRow(
                frame,
                self.rgb_image(frame) if self._rgb is not None else None,
                self.flow_stack(frame) if self._flow is not None else None,
            )


def _expected(video: FrameVideo, kind: Kind) -> str:
    if video.layout == "flat":
        name = {"rgb": "frame", "u": "flow_u", "v": "flow_v"}[kind]
        return f"expected {video.video_id}_{name}_<10 digits>.jpg"
    where = "rgb_frames" if kind == "rgb" else "flow_frames"
    inner = f"{video.video_id}/" if kind == "rgb" else f"{video.video_id}/u/"
    return f"expected {where}/{inner}frame_<10 digits>.jpg"
