"""What ``rulstm-demo`` streams: the two input sources (a video, a JPEG frame folder), each
yielding one :class:`FrameRecord` per frame (frame number, image, the features of the steps
due on it, detections included), stepped every ``alpha`` seconds by :class:`StepClock`; and the
feature sources behind them (the streaming extractor, the authors' detection files).

Nothing here draws, steps a model or parses the command line: the loop
(:mod:`rulstm_apps.demo_loop`) reads the records, the overlay draws their detections.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from epic_protocol.errors import UsageError
from epic_protocol.sampling import step_frame
from rulstm_apps.demo_errors import ClipTooLongError, DemoError

log = logging.getLogger(__name__)

__all__ = [
    "DemoError",
    "DetectionFeatures",
    "FrameDetections",
    "FrameFolder",
    "FrameFolderSource",
    "FramePusher",
    "FrameRecord",
    "StepClock",
    "VideoSource",
    "build_extractor",
    "load_extract_config",
]


class DetectionFeatures:
    """Obj features from the authors' per-frame detections of one video (``<video>.npy``,
    entry ``i`` = frame ``i + 1`` at 30 fps), summed per class exactly as
    ``rulstm-import detections`` does."""

    FPS = 30.0  # the rate of the authors' frame entries

    def __init__(self, path: Path, *, num_classes: int) -> None:
        from rulstm.compat.detections import (
            DetectionImportError,
            detection_features,
            load_detection_file,
        )

        self.path = Path(path)
        try:
            frames = load_detection_file(self.path)
            self.features = detection_features(
                frames, num_classes=num_classes, source=str(self.path)
            )  # (F, C)
        except (FileNotFoundError, DetectionImportError) as error:
            raise DemoError(f"--detections: {error}") from None

    def at(self, frame: int, fps: float) -> np.ndarray:
        """The feature of ``frame`` (1-based at ``fps``): the latest detection frame at or
        before its time."""
        entry = math.floor((frame - 1) * self.FPS / fps + 1e-6)  # 0-based entry
        if entry >= len(self.features):
            raise DemoError(
                f"--detections {self.path}: holds {len(self.features)} frames, but the video "
                f"reaches frame {frame} ({(frame - 1) / fps:.2f} s); is it this video's file?"
            )
        return self.features[entry]


# --------------------------------------------------------------------------- extraction
def check_extraction_options(overrides: Sequence[str], *, prog: str) -> None:
    """Options ``prog`` (``rulstm-demo``, ``rulstm-web``) passes on to the extraction: one
    that is no extraction option either is a usage error (exit status 2), found before any
    file is read. Bad values are left to :func:`load_extract_config` (they may depend on
    ``--extract-config``).

    Raises:
        UsageError: an unrecognized option, named with where to look.
    """
    from feature_extraction import load_config

    try:
        load_config(None, overrides)
    except Exception as error:  # jsonargparse reports with several error types
        message = " ".join(str(error).split())
        if "unrecognized arguments" in message:
            raise UsageError(
                f"{message}: neither a {prog} option nor an extraction option (see "
                f"{prog} --help and rulstm-extract --help)"
            ) from None


def load_extract_config(
    config_path: Path | None, overrides: Sequence[str], *, fps: float | None = None
) -> Any:
    """The ExtractConfig of ``--extract-config`` and the extraction options."""
    from feature_extraction import load_config

    if config_path is not None and not Path(config_path).is_file():
        raise DemoError(f"extraction config not found: {config_path}")
    extra = list(overrides) + (["--fps", str(fps)] if fps is not None else [])
    try:
        return load_config(config_path, extra)
    except Exception as error:  # jsonargparse reports bad options with several error types
        raise DemoError(f"extraction config {config_path or '(defaults)'}: {error}") from None


def build_extractor(
    config: Any,
    *,
    needed: Mapping[str, int],
    device: torch.device | None,
    checkpoint: Path | str,
    config_name: str,
    flow_from_images: bool = False,
) -> Any:
    """A StreamingExtractor computing only the modalities the model reads, after checking
    that the config produces them with the model's feature sizes. ``flow_from_images``: the
    flow comes from stored flow images (frame folders), none is estimated."""
    from feature_extraction import StreamingExtractor

    missing = [m for m in needed if m not in config.modalities]
    if missing:
        raise DemoError(
            f"{checkpoint} reads modalities {list(needed)}, but the extraction config "
            f"{config_name} produces {list(config.modalities)} (missing {missing})"
        )
    # Only extract what the model reads (a single RGB branch needs no flow nor detector).
    config = dataclasses.replace(config, modalities=[m for m in config.modalities if m in needed])
    extractor = StreamingExtractor(config, device=device, flow_from_images=flow_from_images)
    wrong = {m: (extractor.dims[m], dim) for m, dim in needed.items() if extractor.dims[m] != dim}
    if wrong:
        details = ", ".join(
            f"{m}: extractor {got}, model {want}" for m, (got, want) in wrong.items()
        )
        raise DemoError(
            f"{checkpoint} does not fit the extraction config {config_name}: "
            f"feature sizes differ ({details}); extract with the backbones/detector the model "
            "was trained on"
        )
    return extractor


class StepClock:
    """Step ``j = 1, 2, ...`` falls on frame ``floor(j * alpha * fps)`` (1-based frames;
    :func:`epic_protocol.sampling.step_frame`)."""

    def __init__(self, *, alpha: float, fps: float) -> None:
        self.alpha, self.fps = alpha, fps
        self._next = 1

    def _frame_of(self, step: int) -> int:
        return step_frame(step, alpha=self.alpha, fps=self.fps)

    @property
    def next_frame(self) -> int:
        """The frame of the next step not yet returned by :meth:`steps_at`."""
        return self._frame_of(self._next)

    def steps_at(self, frame: int) -> int:
        """How many steps fall on ``frame`` (0 or 1 unless alpha * fps < 1); frames must be
        asked in increasing order."""
        count = 0
        while self._frame_of(self._next) <= frame:
            self._next += 1
            count += 1
        return count


class Clock(Protocol):
    """What a source asks of its step clock (:class:`StepClock`)."""

    @property
    def next_frame(self) -> int: ...

    def steps_at(self, frame: int) -> int: ...


class FramePusher:
    """Pushes every frame to a :class:`~feature_extraction.StreamingExtractor`, computing
    features only on step frames.

    Between steps, ``push(frame, compute=False)`` only advances the flow history, and
    ``flow=False`` skips the optical flow too on frames the next step's flow stack will not
    read (it reads the fields of its last ``stack`` frames).
    """

    def __init__(self, extractor: Any, clock: Clock) -> None:
        self.extractor, self.clock = extractor, clock
        self.stack = extractor.config.flow.stack

    def push(self, image: np.ndarray, *, frame: int, due: bool) -> dict[str, np.ndarray]:
        """Push frame ``frame`` (the next one); its features when ``due`` (a step falls on
        it), else ``{}``."""
        if due:
            return self.extractor.push(image)
        # clock.next_frame is the next step's frame (steps_at has been asked for this one).
        needed = self.clock.next_frame - frame < self.stack
        return self.extractor.push(image, compute=False, flow=needed)


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class FrameDetections:
    """The object detector's latest detections when a frame is shown (those of the last frame
    it ran on): ``boxes`` (M, 4) ``x1, y1, x2, y2`` in pixels of an ``image_size`` =
    (width, height) image, ``labels`` (M,) indices into ``class_names``, ``scores`` (M,);
    ``threshold``: the detector's score threshold (config ``obj.threshold``)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    threshold: float


@dataclass(frozen=True)
class FrameRecord:
    """One frame of a source, in order.

    ``frame``: 1-based at the source's fps; ``image``: (H, W, 3) uint8 RGB, as shown;
    ``steps``: how many anticipation steps fall on it (:class:`StepClock`); ``features``:
    ``{modality: (dim,) float32}`` for those steps (Obj from ``--detections`` included), ``{}``
    when ``steps == 0``; ``detections``: what the extraction's detector last saw (``None``
    without a detector or before its first detection); ``extract_s``: seconds spent computing
    the features of this frame (decoding not included).
    """

    frame: int
    image: np.ndarray
    steps: int
    features: dict[str, np.ndarray] = field(default_factory=dict)
    detections: FrameDetections | None = None
    extract_s: float = 0.0


def _detections_of(extractor: Any) -> FrameDetections | None:
    """The extractor's last detections (its detector's, when it runs one)."""
    if "obj" not in extractor.modalities:
        return None
    detections = getattr(extractor, "last_detections", None)
    image = getattr(extractor, "last_image", None)
    if detections is None or image is None or len(detections) == 0:
        return None
    return FrameDetections(
        boxes=detections.boxes,
        labels=detections.labels,
        scores=detections.scores,
        class_names=tuple(extractor.class_names),
        image_size=(image.shape[1], image.shape[0]),
        threshold=extractor.config.obj.threshold,
    )


class _Source:
    """What both sources share: the extractor, the detection file, the records loop."""

    option: str
    path: Path

    def __init__(self, extractor: Any, detections: DetectionFeatures | None) -> None:
        self.extractor, self.detections = extractor, detections

    @property
    def fps(self) -> float:
        return self.extractor.config.fps

    def records(
        self, clock: Clock, *, last_frame: int | None = None, max_seconds: float | None = None
    ) -> Iterator[FrameRecord]:
        """One :class:`FrameRecord` per frame, in order, up to ``last_frame`` (all without);
        ``clock`` says which frames are step frames. Raises :class:`DemoError` naming the input
        on an unreadable frame, :class:`ClipTooLongError` on a frame past ``max_seconds``
        (counted, not announced: raw streams announce no duration)."""
        import time

        fps = self.fps
        limit = math.ceil(max_seconds * fps - 1e-6) if max_seconds else None
        self.extractor.reset()
        for frame, image in self._images():
            if last_frame is not None and frame > last_frame:
                return
            if limit is not None and frame > limit:
                raise ClipTooLongError(
                    f"{self.option} {self.path}: longer than {max_seconds:g} s "
                    f"(decoding stopped at frame {frame} at {fps:g} fps)"
                )
            steps = clock.steps_at(frame)
            tick = time.perf_counter()
            features = self._features(image, frame=frame, due=steps > 0, clock=clock)
            if steps and self.detections is not None:
                features = {**features, "obj": self.detections.at(frame, self.fps)}
            yield FrameRecord(
                frame=frame,
                image=image,
                steps=steps,
                features=features,
                detections=_detections_of(self.extractor),
                extract_s=time.perf_counter() - tick,
            )

    def _images(self) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def _features(
        self, image: np.ndarray, *, frame: int, due: bool, clock: Clock
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError


# --------------------------------------------------------------------------- inputs
class VideoSource(_Source):
    """``--video``: decoded at the extractor's fps; every frame is pushed (the flow history),
    features are computed on step frames (:class:`FramePusher`)."""

    option = "--video"

    def __init__(
        self, path: Path, extractor: Any, *, detections: DetectionFeatures | None = None
    ) -> None:
        super().__init__(extractor, detections)
        self.path = Path(path)
        self._pusher: FramePusher | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def records(
        self, clock: Clock, *, last_frame: int | None = None, max_seconds: float | None = None
    ) -> Iterator[FrameRecord]:
        self._pusher = FramePusher(self.extractor, clock)
        return super().records(clock, last_frame=last_frame, max_seconds=max_seconds)

    def _images(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(frame, (H, W, 3) uint8 RGB)``, frames 1-based at the extractor's fps."""
        from feature_extraction import VideoError, decode_video

        try:
            for decoded in decode_video(self.path, fps=self.fps):
                yield decoded.frame, decoded.image
        except VideoError as error:
            raise DemoError(f"--video: {error}") from None

    def _features(
        self, image: np.ndarray, *, frame: int, due: bool, clock: Clock
    ) -> dict[str, np.ndarray]:
        assert self._pusher is not None
        return self._pusher.push(image, frame=frame, due=due)


class FrameFolder:
    """``--frames``: one video of a frame folder (:mod:`feature_extraction.frames`), checked
    when made (before any model is built, so that a bad folder is reported at once).

    Raises :class:`DemoError` (naming the file) on a gap in the numbering, a flow image without
    its partner, an unreadable JPEG, or a video that is not in the folder."""

    def __init__(
        self,
        root: Path,
        *,
        video_id: str | None,
        video_info: Path | None,
        fps: float,
        flow: bool,
        stack: int,
    ) -> None:
        from epic_protocol.annotations import read_video_info
        from feature_extraction import FrameError, FrameReader, find_frame_videos

        self.path = Path(root)
        try:
            rates = read_video_info(video_info) if video_info is not None else None
        except (OSError, ValueError) as error:
            raise DemoError(f"--video_info: {error}") from None
        try:
            videos = find_frame_videos(self.path, video_info=rates)
        except (FileNotFoundError, ValueError) as error:
            raise DemoError(f"--frames: {error}") from None
        if not videos:
            raise DemoError(
                f"--frames {self.path}: no frames found (expected <video>_frame_<10 digits>.jpg "
                "or rgb_frames/<video>/frame_<10 digits>.jpg)"
            )
        ids = [video.video_id for video in videos]
        if video_id is None and len(videos) > 1:
            raise DemoError(
                f"--frames {self.path} holds {len(videos)} videos ({', '.join(ids[:5])}"
                f"{', ...' if len(ids) > 5 else ''}): choose one with --video_id"
            )
        if video_id is not None and video_id not in ids:
            raise DemoError(
                f"--frames {self.path}: no frames of video {video_id} (found {', '.join(ids[:5])}"
                f"{', ...' if len(ids) > 5 else ''})"
            )
        video = videos[ids.index(video_id)] if video_id is not None else videos[0]
        if video.layout == "flat" and abs(fps - 30.0) > 1e-6:
            raise DemoError(
                f"--frames {self.path}: the frames of {video.video_id} are at 30 fps (the "
                f"authors' layout); they cannot be shown at --fps {fps:g}"
            )
        self.video_id, self.fps = video.video_id, fps
        try:
            self.reader = FrameReader(video, fps=fps, rgb=True, flow=flow, stack=stack)
            first = self.reader.rgb_image(1)
        except FrameError as error:
            raise DemoError(f"--frames: {error}") from None
        self.width, self.height = first.shape[1], first.shape[0]
        self.total = self.reader.total
        self.flow = flow


class FrameFolderSource(_Source):
    """The records of a :class:`FrameFolder`: its RGB JPEGs are shown; on step frames, the
    features of the RGB JPEG and of the stored flow stack are computed as
    ``rulstm-extract --frames`` does (``extractor`` made with ``flow_from_images=True``)."""

    option = "--frames"

    def __init__(
        self, folder: FrameFolder, extractor: Any, *, detections: DetectionFeatures | None = None
    ) -> None:
        super().__init__(extractor, detections)
        self.folder, self.path = folder, folder.path

    @property
    def name(self) -> str:
        return self.folder.video_id

    def _images(self) -> Iterator[tuple[int, np.ndarray]]:
        from feature_extraction import FrameError

        try:
            for frame in range(1, self.folder.total + 1):
                yield frame, self.folder.reader.rgb_image(frame)
        except FrameError as error:
            raise DemoError(f"--frames: {error}") from None

    def _features(
        self, image: np.ndarray, *, frame: int, due: bool, clock: Clock
    ) -> dict[str, np.ndarray]:
        from feature_extraction import FrameError

        if not due:
            return {}  # nothing to keep between frames: the flow history is on disk
        try:
            flow = self.folder.reader.flow_stack(frame) if self.folder.flow else None
        except FrameError as error:
            raise DemoError(f"--frames: {error}") from None
        return self.extractor.push_stored(image, flow=flow)
