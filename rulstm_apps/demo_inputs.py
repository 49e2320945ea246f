"""What ``rulstm-demo`` streams: the model (one or several checkpoints, through
:meth:`rulstm.OnlineAnticipator.from_checkpoint`), the feature sources (the streaming
extractor, detection files) and the two inputs (a video, a JPEG frame folder), stepped every
``alpha`` seconds by :class:`StepClock`.

Kept apart from :mod:`rulstm_apps.demo`, which renders, writes the predictions and parses the
command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epic_protocol.errors import DataError

log = logging.getLogger(__name__)


class DemoError(DataError, ValueError):
    """Unusable input (video, checkpoint, configuration); the message names the culprit."""


# --------------------------------------------------------------------------- checkpoint
@dataclass(frozen=True)
class LoadedModel:
    anticipator: Any  # rulstm.OnlineAnticipator
    dims: dict[str, int]  # modality -> feature size the model reads
    alpha: float
    note: str | None = None  # how the branches are fused when it is not the model's own way


def load_model(
    path: Path | Sequence[Path],
    *,
    device: torch.device,
    alpha: float | None = None,
    modality: str | Sequence[str] | None = None,
    available: Sequence[str] | None = None,
    horizon: float = 1.0,
    optional: Sequence[str] = ("obj",),
    weights: str = "fp32",
) -> LoadedModel:
    """The online anticipator of RU-LSTM checkpoints, through
    :meth:`rulstm.OnlineAnticipator.from_checkpoint` (branch, fusion, or several branches
    averaged).

    ``alpha`` and a branch's ``modality`` come from the checkpoint's hyper-parameters when it
    was written by ``rulstm fit``; otherwise from the arguments; ``weights`` is the
    anticipator's precision mode (``auto``, ``fp32``, ``bf16``, ``int8``). A fusion checkpoint whose
    ``optional`` modalities are not ``available`` runs its other branches averaged, with a
    ``note`` saying so; any other missing modality is an error.
    """
    from rulstm import OnlineAnticipator

    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    name = " + ".join(map(str, paths))
    if isinstance(modality, str | None):
        modalities = modality
    else:
        modalities = list(modality)
        if len(modalities) == 1:
            modalities = modalities[0]
    try:
        anticipator = OnlineAnticipator.from_checkpoint(
            paths,
            modality=modalities,
            available=available,
            alpha=alpha,
            horizon=horizon,
            device=device,
            weights=weights,
        )
    except FileNotFoundError as error:
        raise DemoError(str(error)) from None
    except (ValueError, KeyError) as error:
        message = str(error.args[0] if isinstance(error, KeyError) else error)
        if "not a multiple of alpha" in message:
            message = f"--horizon {horizon}: {message}"
        raise DemoError(message) from None
    if anticipator.fusion is None and anticipator.modality is None:
        raise DemoError(
            f"{name} is a single-branch checkpoint that does not record its modality; "
            "pass --modality rgb|flow|obj"
        )
    note = None
    if anticipator.left_out:
        required = [m for m in anticipator.left_out if m not in optional]
        if required:
            wanted = [*anticipator.modalities, *anticipator.left_out]
            raise DemoError(
                f"{name} reads modalities {wanted}, but the extraction config produces "
                f"{list(available or ())} (missing {list(anticipator.left_out)})"
            )
        used = "+".join(anticipator.modalities)
        note = f"no {'/'.join(anticipator.left_out)}: {used} averaged"
        log.warning(
            "%s fuses %s with MATT, but there are no %s features (no --detections, and the "
            "extraction config has no such modality): fusing %s by averaging their scores "
            "instead",
            name,
            list(anticipator.modalities) + list(anticipator.left_out),
            "/".join(anticipator.left_out),
            ", ".join(anticipator.modalities),
        )
    elif len(paths) > 1:
        note = f"{'+'.join(anticipator.modalities)} averaged"
        log.info("fusing %s by averaging their scores", name)
    return LoadedModel(
        anticipator=anticipator,
        dims=anticipator.feature_dims,
        alpha=anticipator.alpha,
        note=note,
    )


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


class FramePusher:
    """Pushes every frame to the extractor, computing features only on step frames.

    Between steps, ``push(frame, compute=False)`` only advances the flow history, and
    ``flow=False`` skips the optical flow too on frames the next step's flow stack will not
    read (it reads the fields of its last ``stack`` frames). Extractors without these keywords
    compute everything on every frame (same features, slower).
    """

    def __init__(self, extractor: Any, clock: StepClock) -> None:
        self.extractor, self.clock = extractor, clock
        try:
            keywords = inspect.signature(extractor.push).parameters
        except (TypeError, ValueError):
            keywords = {}
        self.can_skip = "compute" in keywords
        self.can_skip_flow = "flow" in keywords
        self.stack = extractor.config.flow.stack

    def push(self, image: np.ndarray, *, frame: int, due: bool) -> dict[str, np.ndarray]:
        """Push frame ``frame`` (the next one); its features when ``due`` (a step falls on
        it), else ``{}``."""
        if due or not self.can_skip:
            return self.extractor.push(image)
        if not self.can_skip_flow:
            return self.extractor.push(image, compute=False)
        # clock.next_frame is the next step's frame (steps_at has been asked for this one).
        needed = self.clock.next_frame - frame < self.stack
        return self.extractor.push(image, compute=False, flow=needed)


class StepClock:
    """Step ``j = 1, 2, ...`` falls on frame ``floor(j * alpha * fps)`` (1-based frames)."""

    def __init__(self, *, alpha: float, fps: float) -> None:
        self.alpha, self.fps = alpha, fps
        self._next = 1

    def _frame_of(self, step: int) -> int:
        # The epsilon absorbs float error (0.25 * 30 * 4 must be frame 30, not 29).
        return math.floor(step * self.alpha * self.fps + 1e-6)

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


# --------------------------------------------------------------------------- inputs
class VideoInput:
    """``--video``: decoded at the extractor's fps; every frame is pushed (the flow history),
    features are computed on step frames (:class:`FramePusher`)."""

    option = "--video"

    def __init__(self, path: Path, extractor: Any) -> None:
        self.path, self.extractor = Path(path), extractor
        self._pusher: FramePusher | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def start(self, clock: StepClock) -> None:
        self.extractor.reset()
        self._pusher = FramePusher(self.extractor, clock)
        if not self._pusher.can_skip:
            log.info("the extractor computes features on every frame (no push(compute=False))")

    def images(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(frame, (H, W, 3) uint8 RGB)``, frames 1-based at the extractor's fps."""
        from feature_extraction import VideoError, decode_video

        try:
            for decoded in decode_video(self.path, fps=self.extractor.config.fps):
                yield decoded.frame, decoded.image
        except VideoError as error:
            raise DemoError(f"--video: {error}") from None

    def features(self, image: np.ndarray, *, frame: int, due: bool) -> dict[str, np.ndarray]:
        assert self._pusher is not None
        return self._pusher.push(image, frame=frame, due=due)


class FrameFolderInput:
    """``--frames``: one video of a frame folder (:mod:`feature_extraction.frames`). Its RGB
    JPEGs are shown; on step frames, the features of the RGB JPEG and of the stored flow stack
    are computed as ``rulstm-extract --frames`` does.

    Raises :class:`DemoError` (naming the file) on a gap in the numbering, a flow image without
    its partner, an unreadable JPEG, or a video that is not in the folder."""

    option = "--frames"

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
        self.extractor: Any = None

    @property
    def name(self) -> str:
        return self.video_id

    def start(self, clock: StepClock) -> None:
        assert self.extractor is not None
        self.extractor.reset()

    def images(self) -> Iterator[tuple[int, np.ndarray]]:
        from feature_extraction import FrameError

        try:
            for frame in range(1, self.total + 1):
                yield frame, self.reader.rgb_image(frame)
        except FrameError as error:
            raise DemoError(f"--frames: {error}") from None

    def features(self, image: np.ndarray, *, frame: int, due: bool) -> dict[str, np.ndarray]:
        from feature_extraction import FrameError

        if not due:
            return {}  # nothing to keep between frames: the flow history is on disk
        try:
            flow = self.reader.flow_stack(frame) if self.flow else None
        except FrameError as error:
            raise DemoError(f"--frames: {error}") from None
        return self.extractor.push_stored(image, flow=flow)


# --------------------------------------------------------------------------- the run
def _boxes(
    extractor: Any, threshold: float, limit: int = 12
) -> tuple[list, tuple[int, int] | None]:
    from rulstm_apps.overlay import Box

    detections = getattr(extractor, "last_detections", None)
    image = getattr(extractor, "last_image", None)
    if detections is None or image is None or len(detections) == 0:
        return [], None
    names = list(extractor.class_names)
    order = np.argsort(-detections.scores)[:limit]
    boxes = [
        Box(
            *map(float, detections.boxes[i]),
            label=names[int(detections.labels[i])]
            if 0 <= int(detections.labels[i]) < len(names)
            else str(int(detections.labels[i])),
            score=float(detections.scores[i]),
        )
        for i in order
        if detections.scores[i] >= threshold
    ]
    return boxes, (image.shape[1], image.shape[0])
