"""Optical flow: estimators, TSN-style quantisation and the causal stack of fields.

Field ``k`` is the flow from frame ``k-1`` to frame ``k`` (``u`` then ``v``, in pixels of the
decoded frame). The network input of frame ``k`` stacks the fields ``k-4 .. k`` (oldest
first) as 10 channels ``[u_{k-4}, v_{k-4}, ..., u_k, v_k]``, like TSN. Frame 1 has no
previous frame: its stack is all zero motion. Near the start, positions before field 2 (the
first real field) repeat field 2, so the stack of frame 3 is ``[f2, f2, f2, f2, f3]``. Every
stack only uses frames up to its own, so streaming and batch extraction agree.

Fields are stored as "flow images" in ``[0, 1]``: ``(clip(f, -bound, bound) + bound) /
(2 * bound)``, quantised to uint8 (``round(255 * x)``) when ``quantize`` is set, as TSN
stored TV-L1 flow as JPEG images with ``bound = 20``.

Where the flow comes from is chosen once, by the model builder
(:func:`feature_extraction.models.build_models`), as a :class:`FlowSource`: a CPU estimator
(TV-L1, DIS), which runs where frames are decoded (the data workers, or the streaming
extractor's thread), RAFT, which runs on the models' device, or the stored flow images of a
frame folder (nothing estimated). Its :meth:`FlowSource.new_stream` gives the one
:class:`FlowStream` interface the batch extraction and the streaming extractor both push
frames to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from torch import nn

CpuFlowMethod = Literal["tvl1", "dis"]
FlowMethod = Literal["auto", "raft_small", "raft_large", "tvl1", "dis"]

RAFT_METHODS = ("raft_small", "raft_large")
FLOW_FROM_IMAGES = "images"  # the method of frame-folder input: read, not estimated


def resolve_flow_method(method: str, device: torch.device) -> str:
    """'auto' is raft_small on CUDA and DIS on the CPU."""
    if method == "auto":
        return "raft_small" if device.type == "cuda" else "dis"
    return method


class FlowEstimator(Protocol):
    """Dense flow between two RGB uint8 frames (H, W, 3) -> (2, H, W) float32 (u, v)."""

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray: ...


class DISFlow:
    """OpenCV's DIS optical flow (fast; about 2 ms per 456x256 pair at the 'medium' preset)."""

    _PRESETS = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }

    def __init__(self, *, preset: Literal["ultrafast", "fast", "medium"] = "medium") -> None:
        self.preset = preset
        self._flow = cv2.DISOpticalFlow_create(self._PRESETS[preset])

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        flow = self._flow.calc(_gray(previous), _gray(current), None)  # (H, W, 2)
        return np.ascontiguousarray(flow.transpose(2, 0, 1))  # (H, W, 2) -> (2, H, W)

    def __getstate__(self) -> dict:
        return {"preset": self.preset}  # OpenCV objects do not pickle (DataLoader workers)

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


class TVL1Flow:
    """OpenCV's dual TV-L1 optical flow, the reference's method (slow: ~0.5 s per pair on CPU)."""

    def __init__(self) -> None:
        self._flow = cv2.optflow.DualTVL1OpticalFlow_create()

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        flow = self._flow.calc(_gray(previous), _gray(current), None)  # (H, W, 2)
        return np.ascontiguousarray(flow.transpose(2, 0, 1))  # (H, W, 2) -> (2, H, W)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def make_cpu_flow(
    method: CpuFlowMethod, *, dis_preset: Literal["ultrafast", "fast", "medium"] = "medium"
) -> FlowEstimator:
    if method == "dis":
        return DISFlow(preset=dis_preset)
    if method == "tvl1":
        return TVL1Flow()
    raise ValueError(f"unknown CPU flow method {method!r} (choose 'dis' or 'tvl1')")


class RaftFlow(nn.Module):
    """A torchvision RAFT model on uint8 frame pairs.

    RAFT needs sides that are multiples of 8 and at least 128 pixels: smaller frames are
    upsampled (and the flow scaled back to the frame's pixels), then padded to a multiple of 8.
    """

    MIN_SIDE = 128

    def __init__(self, *, raft: nn.Module, num_flow_updates: int = 12) -> None:
        super().__init__()
        self.raft = raft
        self.num_flow_updates = num_flow_updates

    def forward(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 pairs -> (B, 2, H, W) float32 flow from previous to current."""
        height, width = previous.shape[-2:]
        pair = torch.cat([previous, current]).float() / 127.5 - 1.0  # (2B, 3, H, W) in [-1, 1]
        scale = max(1.0, self.MIN_SIDE / min(height, width))
        if scale > 1.0:
            size = (
                max(self.MIN_SIDE, round(height * scale)),
                max(self.MIN_SIDE, round(width * scale)),
            )
            pair = nn.functional.interpolate(pair, size=size, mode="bilinear", align_corners=False)
        inner_h, inner_w = pair.shape[-2:]
        pad_h, pad_w = (-inner_h) % 8, (-inner_w) % 8
        if pad_h or pad_w:
            pair = nn.functional.pad(pair, (0, pad_w, 0, pad_h), mode="replicate")
        first, second = pair.chunk(2)  # (2B, 3, H', W') -> 2 x (B, 3, H', W')
        # RAFT's iterative refinement is not meant for float16: keep it out of mixed precision.
        with torch.autocast(device_type=pair.device.type, enabled=False):
            flows = self.raft(first, second, num_flow_updates=self.num_flow_updates)
        flow = flows[-1][..., :inner_h, :inner_w].float()  # last refinement, unpadded
        if scale > 1.0:
            flow = nn.functional.interpolate(
                flow, size=(height, width), mode="bilinear", align_corners=False
            )
            ratios = torch.tensor([width / inner_w, height / inner_h], device=flow.device)
            flow = flow * ratios.view(1, 2, 1, 1)  # back to the frame's pixels (u: x, v: y)
        return flow


def flow_to_unit(field: np.ndarray, *, bound: float, quantize: bool) -> np.ndarray:
    """(2, H, W) flow in pixels -> flow image in [0, 1]: uint8 (x255) or float16."""
    unit = (np.clip(field, -bound, bound) + bound) / (2.0 * bound)
    if quantize:
        return np.round(unit * 255.0).astype(np.uint8)
    return unit.astype(np.float16)


def flow_to_unit_tensor(field: torch.Tensor, *, bound: float, quantize: bool) -> torch.Tensor:
    """:func:`flow_to_unit` for tensors (RAFT output stays on its device)."""
    unit = (field.clamp(-bound, bound) + bound) / (2.0 * bound)
    if quantize:
        return torch.round(unit * 255.0).to(torch.uint8)
    return unit.to(torch.float16)


def zero_field(height: int, width: int, *, quantize: bool) -> np.ndarray:
    """The flow image of no motion (the middle of the range)."""
    if quantize:
        return np.full((2, height, width), 128, np.uint8)  # round(0.5 * 255)
    return np.full((2, height, width), 0.5, np.float16)


class FlowStacker:
    """Causal stacks of the last ``length`` fields of one video (see the module docstring).

    Push every decoded frame in order with its field (the flow from the previous frame, or
    ``None`` when the previous frame was not decoded, e.g. frame 1 or a gap in sparse mode);
    :meth:`stack` then gives the input of the last pushed frame.
    """

    def __init__(self, *, length: int = 5) -> None:
        if length < 1:
            raise ValueError(f"the flow stack length must be >= 1, got {length}")
        self.length = length
        self.reset()

    def reset(self) -> None:
        self._fields: deque[tuple[int, np.ndarray]] = deque(maxlen=self.length)
        self._frame: int | None = None
        self._shape: tuple[int, ...] | None = None
        self._zero: np.ndarray | None = None

    def push(self, frame: int, field: np.ndarray | None, *, zero: np.ndarray) -> None:
        """Record frame ``frame``'s field; ``zero`` is the no-motion field used for frame 1."""
        if self._frame is not None and frame <= self._frame:
            raise ValueError(
                f"frames must be pushed in increasing order ({frame} after {self._frame})"
            )
        if field is not None:
            if self._fields and self._fields[-1][0] != frame - 1:
                self._fields.clear()  # a gap: older fields are not the ones this frame needs
            self._fields.append((frame, field))
        elif frame != 1:
            self._fields.clear()
        self._frame = frame
        self._zero = zero

    def stack(self) -> np.ndarray:
        """(2 * length, H, W) input of the last pushed frame, oldest field first."""
        if self._frame is None or self._zero is None:
            raise RuntimeError("push a frame before asking for its flow stack")
        frame = self._frame
        if frame == 1:
            return _concat([self._zero] * self.length)  # (2*L, H, W)
        by_frame = dict(self._fields)
        picked = []
        for position in range(frame - self.length + 1, frame + 1):
            source = max(position, 2)  # before field 2 (the first one), repeat field 2
            if source not in by_frame:
                raise RuntimeError(
                    f"the flow stack of frame {frame} needs field {source}, which was not "
                    "computed: decode the frames before it (sparse extraction adds them)"
                )
            picked.append(by_frame[source])
        return _concat(picked)  # length x (2, H, W) -> (2*L, H, W)


def _concat(fields: list) -> np.ndarray | torch.Tensor:
    """Concatenate fields along channels; fields are numpy arrays or tensors (RAFT, on GPU)."""
    if isinstance(fields[0], torch.Tensor):
        return torch.cat(fields)
    return np.concatenate(fields)


class CausalFlow:
    """Fields and stacks for one video on the CPU: push decoded frames, get stacks."""

    def __init__(
        self, *, estimator: FlowEstimator, length: int, bound: float, quantize: bool
    ) -> None:
        self.estimator = estimator
        self.bound, self.quantize = bound, quantize
        self.stacker = FlowStacker(length=length)
        self._previous: tuple[int, np.ndarray] | None = None

    def reset(self) -> None:
        self.stacker.reset()
        self._previous = None

    def push(self, frame: int, image: np.ndarray, *, estimate: bool = True) -> None:
        """Add a decoded frame. ``estimate=False`` skips its field (cheaper); the stacks of the
        next ``length - 1`` frames then cannot be built."""
        height, width = image.shape[:2]
        field = None
        if estimate and self._previous is not None and self._previous[0] == frame - 1:
            raw = self.estimator(self._previous[1], image)  # (2, H, W) pixels
            field = flow_to_unit(raw, bound=self.bound, quantize=self.quantize)
        zero = zero_field(height, width, quantize=self.quantize)
        self.stacker.push(frame, field, zero=zero)
        self._previous = (frame, image)

    def stack(self) -> np.ndarray:
        return self.stacker.stack()

    def push_frames(
        self,
        frames: Sequence[int],
        images: np.ndarray | torch.Tensor,
        keep: Sequence[bool],
        *,
        estimate: bool = True,
    ) -> np.ndarray | None:
        """:meth:`FlowStream.push_frames` on the CPU: stacks (K, 2L, H, W) of the kept rows
        (numpy), ``None`` when no row is kept."""
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        stacks = []
        for frame, image, kept in zip(frames, images, keep, strict=True):
            self.push(int(frame), image, estimate=estimate or bool(kept))
            if kept:
                stacks.append(self.stack())
        return np.stack(stacks) if stacks else None  # K x (2L, H, W) -> (K, 2L, H, W)


class RaftStream:
    """Causal flow stacks of one video with RAFT (on the models' device), fed batches of
    consecutive decoded frames."""

    def __init__(self, *, raft: RaftFlow, length: int, bound: float, quantize: bool) -> None:
        self.raft, self.bound, self.quantize = raft, bound, quantize
        self.stacker = FlowStacker(length=length)
        self._last: tuple[int, torch.Tensor] | None = None

    def reset(self) -> None:
        self.stacker.reset()
        self._last = None

    @torch.no_grad()
    def push_frames(
        self,
        frames: Sequence[int],
        images: np.ndarray | torch.Tensor,
        keep: Sequence[bool],
        *,
        estimate: bool = True,
    ) -> torch.Tensor | None:
        """``images`` (B, H, W, 3) uint8 of ``frames`` -> stacks (K, 2L, H, W) of kept rows
        (on RAFT's device), ``None`` when no row is kept. ``estimate=False`` (no row kept)
        records the frames without estimating their fields."""
        if not isinstance(images, torch.Tensor):
            images = torch.from_numpy(np.ascontiguousarray(images)).to(self._device())
        if not estimate and not any(keep):
            for frame, image in zip(frames, images, strict=True):
                self._skip(int(frame), image)
            return None
        chw = images.permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
        frames = [int(f) for f in frames]
        previous_frames = [self._last[0] if self._last else None, *frames[:-1]]
        pairs = [i for i, f in enumerate(frames) if previous_frames[i] == f - 1]
        fields: dict[int, torch.Tensor] = {}
        if pairs:
            previous_images = torch.cat(
                [self._last[1][None] if self._last else chw[:1], chw[:-1]]
            )  # (B, 3, H, W): row i holds the image before row i
            index = torch.tensor(pairs, device=chw.device)
            raw = self.raft(previous_images[index], chw[index])  # (P, 2, H, W)
            units = flow_to_unit_tensor(raw, bound=self.bound, quantize=self.quantize)
            fields = {row: units[n] for n, row in enumerate(pairs)}
        height, width = chw.shape[-2:]
        zero = flow_to_unit_tensor(
            torch.zeros(2, height, width, device=chw.device),
            bound=self.bound,
            quantize=self.quantize,
        )
        stacks = []
        for row, frame in enumerate(frames):
            self.stacker.push(frame, fields.get(row), zero=zero)
            if keep[row]:
                stacks.append(self.stacker.stack())
        self._last = (frames[-1], chw[-1])
        return torch.stack(stacks) if stacks else None

    def _skip(self, frame: int, image: torch.Tensor) -> None:
        """Record a frame without estimating its field: (H, W, 3) uint8."""
        zero = flow_to_unit_tensor(
            torch.zeros(2, *image.shape[:2], device=image.device),
            bound=self.bound,
            quantize=self.quantize,
        )
        self.stacker.push(frame, None, zero=zero)
        self._last = (frame, image.permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)

    def _device(self) -> torch.device:
        return next(self.raft.parameters(), torch.empty(0)).device


class FlowStream(Protocol):
    """Causal flow stacks of one video, fed its decoded frames in increasing order
    (:class:`CausalFlow` on the CPU, :class:`RaftStream` with RAFT)."""

    def reset(self) -> None:
        """Start a new video."""

    def push_frames(
        self,
        frames: Sequence[int],
        images: np.ndarray | torch.Tensor,
        keep: Sequence[bool],
        *,
        estimate: bool = True,
    ) -> np.ndarray | torch.Tensor | None:
        """Push ``frames`` (1-based, increasing) with their ``images`` (B, H, W, 3) uint8 RGB;
        returns the stacks (K, 2 * stack, H, W) of the ``keep`` rows (``None`` when none is
        kept). ``estimate=False`` skips the fields of rows that are not kept (cheaper; the
        stacks of the next ``stack - 1`` frames then cannot be built)."""


@dataclass(frozen=True)
class FlowSource:
    """Where an extraction's optical flow comes from, chosen once by the model builder.

    ``method``: the resolved method (``dis``, ``tvl1``, ``raft_small``, ``raft_large``, or
    :data:`FLOW_FROM_IMAGES`); ``estimator``: the CPU estimator, ``raft``: the RAFT module
    (one of them, or neither for stored flow images); ``length``, ``bound``, ``quantize``:
    the stack length and the flow-image encoding (config ``flow.*``)."""

    method: str
    length: int
    bound: float
    quantize: bool
    estimator: FlowEstimator | None = None
    raft: RaftFlow | None = None

    @property
    def on_device(self) -> bool:
        """RAFT: fields are estimated beside the models (the main process), from batches of
        images; otherwise the CPU estimates them where frames are decoded."""
        return self.method in RAFT_METHODS

    @property
    def estimated(self) -> bool:
        """False for stored flow images (frame folders): nothing to estimate."""
        return self.method != FLOW_FROM_IMAGES

    def for_workers(self) -> FlowSource:
        """This source without the RAFT module (data workers never run it)."""
        return replace(self, raft=None)

    def new_stream(self) -> FlowStream:
        """A fresh :class:`FlowStream` for one video. Raises ``RuntimeError`` for stored
        flow images, or for RAFT after :meth:`for_workers`."""
        if self.estimator is not None:
            return CausalFlow(
                estimator=self.estimator,
                length=self.length,
                bound=self.bound,
                quantize=self.quantize,
            )
        if self.raft is not None:
            return RaftStream(
                raft=self.raft, length=self.length, bound=self.bound, quantize=self.quantize
            )
        raise RuntimeError(f"flow method {self.method!r} has no estimator here to stream")
