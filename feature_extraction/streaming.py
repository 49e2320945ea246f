"""Frame-by-frame feature extraction for live use (the demo).

:class:`StreamingExtractor` computes, for each frame pushed, the same features the batch
extraction stores for that frame (same models, resizing, causal flow stack and object
vector), keeping the flow history internally::

    config = load_config("configs/extract/quickstart.yaml", ["--obj.palette", "palette.yaml"])
    extractor = StreamingExtractor(config)
    for decoded in decode_video(path, fps=config.fps):
        features = extractor.push(decoded.image)  # {"rgb": (D,), "flow": (D,), "obj": (C,)}
        boxes = extractor.last_detections          # for drawing

Frames must be pushed at the config's fps, in order; :meth:`reset` starts a new video.

Frame folders (:mod:`feature_extraction.frames`) hold their flow as images: an extractor made
with ``flow_from_images=True`` estimates no flow, and :meth:`push_stored` takes a frame with its
stored flow stack, any frame in any order (nothing is kept between frames)::

    extractor = StreamingExtractor(config, flow_from_images=True)
    reader = FrameReader(video, fps=config.fps, rgb=True, flow=True, stack=config.flow.stack)
    features = extractor.push_stored(reader.rgb_image(7), flow=reader.flow_stack(7))
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from feature_extraction.config import ExtractConfig, Modality
from feature_extraction.detectors import Detections
from feature_extraction.flow import FlowStream
from feature_extraction.models import (
    ExtractionModels,
    FeatureComputer,
    build_models,
    resolve_device,
    resolve_precision,
)
from feature_extraction.resizing import output_size, resize_frame


class StreamingExtractor:
    """Per-frame features of a video pushed one frame at a time (see the module docstring)."""

    def __init__(
        self,
        config: ExtractConfig,
        *,
        device: str | torch.device | None = None,
        models: ExtractionModels | None = None,
        flow_from_images: bool = False,
    ) -> None:
        self.config = config
        self.device = torch.device(device) if device is not None else resolve_device(config.device)
        self.flow_from_images = flow_from_images
        #: The Lightning precision the models run at (``auto`` resolved for the device).
        self.precision = resolve_precision(config.precision, self.device)
        self.models = (
            models
            if models is not None
            else build_models(config, device=self.device, flow_from_images=flow_from_images)
        )
        self.computer = FeatureComputer.from_models(self.models).to(self.device).eval()
        source = self.models.flow_source
        # Flow estimated frame by frame (CPU or RAFT); None for stored flow images or no flow.
        self._flow: FlowStream | None = (
            self.computer.new_flow_stream() if source is not None and source.estimated else None
        )
        # A video RGB backbone's causal clips: a ring buffer of the recent frames.
        self._clips = (
            self.computer.new_clip_buffer() if self.computer.rgb_clip is not None else None
        )
        self.reset()

    @property
    def modalities(self) -> list[Modality]:
        return list(self.config.modalities)

    @property
    def dims(self) -> dict[Modality, int]:
        return self.models.dims

    @property
    def class_names(self) -> Sequence[str]:
        """The object classes (the entries of the ``obj`` vector); empty without obj."""
        return self.models.detector.class_names if self.models.detector is not None else ()

    @property
    def frame_number(self) -> int:
        """1-based number of the last pushed frame (0 before the first)."""
        return self._frame

    def reset(self) -> None:
        """Forget the previous video (flow history, frame count, detections)."""
        self._frame = 0
        self.last_detections: Detections | None = None
        self.last_image: np.ndarray | None = None
        if self._flow is not None:
            self._flow.reset()
        if self._clips is not None:
            self._clips.reset()

    def _autocast(self) -> contextlib.AbstractContextManager:
        """What the batch extraction's Lightning precision does: bf16 autocast for
        ``bf16-mixed`` (CPU or GPU), float16 autocast for ``16-mixed`` on a GPU."""
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision == "16-mixed" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def push(
        self, frame: np.ndarray, *, compute: bool = True, flow: bool = True
    ) -> dict[str, np.ndarray]:
        """Features of the next frame: RGB uint8 (H, W, 3) at the config's fps, any size
        (resized like the batch extraction). Returns ``{modality: (dim,) float32}``.

        ``compute=False`` only advances the frame count and the flow history (returns ``{}``;
        ``last_detections`` keeps the last computed frame's). ``flow=False`` also skips the
        flow field of this frame: the caller must keep ``flow=True`` on the ``stack`` frames
        before any computed frame (the stack of frame k reads the fields of k-stack+1 .. k).
        """
        _check_image(frame, "push")
        if self.flow_from_images and self.computer.flow is not None:
            raise ValueError(
                "this extractor reads stored flow images (flow_from_images=True): use push_stored"
            )
        self._frame += 1
        size = output_size(
            frame.shape[1],
            frame.shape[0],
            target_width=self.config.decode.width,
            target_height=self.config.decode.height,
        )
        image = np.ascontiguousarray(resize_frame(frame, size))
        self.last_image = image
        batch = torch.from_numpy(image)[None].to(self.device)  # (H, W, 3) -> (1, H, W, 3)
        features: dict[str, np.ndarray] = {}
        if self._clips is not None:
            self._clips.push(self._frame, batch[0])
        if not compute:
            if self._flow is not None:
                with self._autocast():
                    self._flow.push_frames([self._frame], batch, [False], estimate=flow)
            return features
        with self._autocast():
            if self.computer.rgb is not None:
                rgb_input = batch
                if self._clips is not None:  # (T, H, W, 3) -> (1, T, H, W, 3)
                    rgb_input = self._clips.clip(self._frame)[None]
                features["rgb"] = self.computer.rgb_features(rgb_input)[0].float().cpu().numpy()
            if self.computer.flow is not None:
                assert self._flow is not None
                stacks = self._flow.push_frames([self._frame], batch, [True])
                stacks = torch.as_tensor(stacks).to(self.device)  # (1, 2L, H, W)
                features["flow"] = self.computer.flow_features(stacks)[0].float().cpu().numpy()
            if self.computer.detector is not None:
                vectors, detections = self.computer.object_features(batch)
                features["obj"] = vectors[0]
                self.last_detections = detections[0]
        return features

    @torch.no_grad()
    def push_stored(
        self, image: np.ndarray, *, flow: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Features of one frame of a frame folder, computed as ``rulstm-extract --frames``
        does: ``image`` RGB uint8 (H, W, 3) as stored (not resized: the backbones resize to
        their input size), ``flow`` its stored stack, uint8 (2 * stack, H, W) with 128 = no
        motion (:meth:`feature_extraction.frames.FrameReader.flow_stack`), required when the
        config has flow. Returns ``{modality: (dim,) float32}``; sets ``last_image`` and
        ``last_detections``. Raises ``ValueError`` on a wrong image or stack."""
        _check_image(image, "push_stored")
        if self._clips is not None:
            raise ValueError(
                f"push_stored: {self.config.rgb.backbone} is a video backbone whose features read "
                "the frames before; push the frames in order with push"
            )
        stack = 2 * self.config.flow.stack
        if self.computer.flow is not None:
            if flow is None:
                raise ValueError("push_stored: the config has flow, give the frame's flow stack")
            if flow.ndim != 3 or flow.shape[0] != stack or flow.dtype != np.uint8:
                raise ValueError(
                    f"push_stored expects a uint8 ({stack}, H, W) flow stack, got "
                    f"{flow.dtype} {flow.shape}"
                )
        # JPEG readers give read-only arrays, which torch.from_numpy warns about: copy those.
        image = np.require(image, requirements=["C", "W"])  # frame_number stays: any order
        self.last_image = image
        batch = torch.from_numpy(image)[None].to(self.device)  # (H, W, 3) -> (1, H, W, 3)
        features: dict[str, np.ndarray] = {}
        with self._autocast():
            if self.computer.rgb is not None:
                features["rgb"] = self.computer.rgb_features(batch)[0].float().cpu().numpy()
            if self.computer.flow is not None:
                assert flow is not None
                # (2 * stack, H, W) -> (1, 2 * stack, H, W)
                stacks = torch.from_numpy(np.require(flow, requirements=["C", "W"]))[None]
                stacks = stacks.to(self.device)
                features["flow"] = self.computer.flow_features(stacks)[0].float().cpu().numpy()
            if self.computer.detector is not None:
                vectors, detections = self.computer.object_features(batch)
                features["obj"] = vectors[0]
                self.last_detections = detections[0]
        return features


def _check_image(image: np.ndarray, method: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{method} expects an RGB uint8 (H, W, 3) frame, got {image.dtype} {image.shape}"
        )
