"""Drawing the demo's overlay: the video frame (scaled so that text is readable) beside a
panel with the anticipated actions, the MATT modality weights and the ground truth.

Everything here is pure drawing on copies of RGB uint8 arrays (OpenCV); the demo decides what
to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

# Layout at the reference output height; everything scales with the output height.
BASE_HEIGHT = 360
BASE_PANEL_WIDTH = 330
BASE_ROW = 20
BASE_MARGIN = 10
FONT = cv2.FONT_HERSHEY_SIMPLEX

# RGB colours.
BACKGROUND = (24, 26, 32)
TEXT = (235, 235, 235)
MUTED = (150, 155, 165)
ACCENT = (255, 196, 64)
BAR = (70, 110, 200)
HIT = (90, 220, 120)
WARNING = (255, 140, 90)
BOX = (255, 80, 200)
MODALITY_COLOURS = {"rgb": (230, 90, 80), "flow": (80, 170, 240), "obj": (240, 200, 60)}


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


@dataclass(frozen=True)
class Layout:
    """Sizes of the output frame: the video scaled to ``height`` (even), then the panel.

    The video is scaled up to ``min_height`` (tiny videos) or down to ``max_height`` (keeps
    1080p encoding cheap), keeping its aspect ratio.
    """

    video_width: int
    video_height: int
    height: int
    panel_width: int

    @classmethod
    def for_video(
        cls, width: int, height: int, *, min_height: int = BASE_HEIGHT, max_height: int = 1080
    ) -> Layout:
        if width < 1 or height < 1:
            raise ValueError(f"video size must be positive, got {width}x{height}")
        if min_height > max_height:
            raise ValueError(f"min_height {min_height} is above max_height {max_height}")
        out_height = _even(min(max(height, min_height), max_height))
        out_width = _even(width * out_height / height)
        panel = _even(BASE_PANEL_WIDTH * out_height / BASE_HEIGHT)
        return cls(
            video_width=out_width, video_height=out_height, height=out_height, panel_width=panel
        )

    @property
    def width(self) -> int:
        return self.video_width + self.panel_width

    @property
    def scale(self) -> float:
        """Text scale relative to the reference layout."""
        return self.height / BASE_HEIGHT


@dataclass(frozen=True)
class Box:
    """A detection to draw, in pixels of the image given to the detector (``image_size``)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    score: float


@dataclass(frozen=True)
class PanelContent:
    """What the panel shows at one output frame.

    ``predictions``: (name, probability) of the top actions ``horizon`` seconds ahead, best
    first; ``hits``: their indices that match the upcoming ground-truth action (drawn green);
    ``weights``: MATT weight per modality (fusion only); ``current`` / ``upcoming``: ground
    truth lines (None hides the section); ``status``: a note (e.g. waiting for the first step);
    ``fusion_note``: how the branches are fused when it is not the model's MATT (e.g. an
    average because a modality is missing), drawn under the predictions.
    """

    time_s: float
    horizon: float
    predictions: Sequence[tuple[str, float]] = ()
    hits: frozenset[int] = frozenset()
    weights: Mapping[str, float] | None = None
    current: str | None = None
    upcoming: str | None = None
    show_ground_truth: bool = False
    status: str | None = None
    steps: int = 0
    boxes: Sequence[Box] = field(default_factory=tuple)
    fusion_note: str | None = None


class _Writer:
    """Draws rows of text top to bottom in the panel, clipping at its bottom."""

    def __init__(self, canvas: np.ndarray, *, left: int, width: int, scale: float) -> None:
        self.canvas, self.left, self.width, self.scale = canvas, left, width, scale
        self.margin = round(BASE_MARGIN * scale)
        self.row = round(BASE_ROW * scale)
        self.font_scale = 0.46 * scale
        self.thickness = max(1, round(scale))
        self.y = self.margin

    @property
    def full(self) -> bool:
        return self.y + self.row > self.canvas.shape[0] - self.margin // 2

    def text_width(self, text: str, font_scale: float | None = None) -> int:
        (width, _), _ = cv2.getTextSize(text, FONT, font_scale or self.font_scale, self.thickness)
        return width

    def fit(self, text: str, width: int) -> str:
        """``text`` shortened with '..' so that it fits in ``width`` pixels."""
        if self.text_width(text) <= width:
            return text
        while text and self.text_width(text + "..") > width:
            text = text[:-1]
        return text.rstrip() + ".."

    def put(
        self,
        text: str,
        x: int,
        baseline: int,
        colour,
        font_scale: float | None = None,
        *,
        outline: bool = False,
    ) -> None:
        """Draw ``text``; ``outline`` first draws it thicker in black, so that light text
        stays readable over light bars."""
        scale = font_scale or self.font_scale
        if outline:
            cv2.putText(
                self.canvas,
                text,
                (x, baseline),
                FONT,
                scale,
                (0, 0, 0),
                self.thickness + 2,
                cv2.LINE_AA,
            )
        cv2.putText(
            self.canvas, text, (x, baseline), FONT, scale, colour, self.thickness, cv2.LINE_AA
        )

    def line(self, text: str, colour=TEXT, *, indent: int = 0) -> None:
        if self.full:
            return
        x = self.left + self.margin + indent
        text = self.fit(text, self.width - 2 * self.margin - indent)
        self.put(text, x, self.y + round(self.row * 0.72), colour)
        self.y += self.row

    def bar_row(
        self, label: str, value: float, colour, *, bar_colour=BAR, value_text: str | None = None
    ) -> None:
        """``label`` over a bar filled to ``value`` in [0, 1], with ``value_text`` on the right."""
        if self.full:
            return
        x0 = self.left + self.margin
        x1 = self.left + self.width - self.margin
        top = self.y + round(self.row * 0.12)
        bottom = self.y + round(self.row * 0.92)
        cv2.rectangle(self.canvas, (x0, top), (x1, bottom), (44, 48, 58), -1)
        filled = x0 + round((x1 - x0) * min(max(value, 0.0), 1.0))
        if filled > x0:
            cv2.rectangle(self.canvas, (x0, top), (filled, bottom), bar_colour, -1)
        value_text = value_text if value_text is not None else f"{value:.2f}"
        value_width = self.text_width(value_text)
        baseline = self.y + round(self.row * 0.72)
        self.put(value_text, x1 - value_width - self.margin // 2, baseline, colour, outline=True)
        room = x1 - x0 - value_width - 2 * self.margin  # a gap before the value
        self.put(self.fit(label, room), x0 + self.margin // 2, baseline, colour, outline=True)
        self.y += self.row

    def gap(self, fraction: float = 0.4) -> None:
        self.y += round(self.row * fraction)


def detection_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    class_names: Sequence[str],
    threshold: float,
    limit: int = 12,
) -> list[Box]:
    """The boxes to draw from one frame's detections: ``boxes`` (M, 4) ``x1, y1, x2, y2``
    pixels, ``labels`` (M,) class indices into ``class_names`` (an index outside it is shown
    as the number), ``scores`` (M,); the ``limit`` best scoring at least ``threshold``, best
    first."""
    order = np.argsort(-scores)[:limit]
    named = list(class_names)
    return [
        Box(
            *map(float, boxes[i]),
            label=named[int(labels[i])]
            if 0 <= int(labels[i]) < len(named)
            else str(int(labels[i])),
            score=float(scores[i]),
        )
        for i in order
        if scores[i] >= threshold
    ]


def _percent(probability: float) -> str:
    # Near-uniform scores over thousands of classes are ~0.04 %: keep two significant digits.
    percent = 100 * probability
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2g}%"


def _draw_boxes(
    video: np.ndarray, boxes: Sequence[Box], *, scale: float, sx: float, sy: float
) -> None:
    thickness = max(1, round(1.5 * scale))
    font_scale = 0.4 * scale
    for box in boxes:
        p1 = (round(box.x1 * sx), round(box.y1 * sy))
        p2 = (round(box.x2 * sx), round(box.y2 * sy))
        cv2.rectangle(video, p1, p2, BOX, thickness, cv2.LINE_AA)
        label = f"{box.label} {box.score:.2f}"
        (width, height), _ = cv2.getTextSize(label, FONT, font_scale, 1)
        top = max(0, p1[1] - height - 4)
        cv2.rectangle(video, (p1[0], top), (p1[0] + width + 4, top + height + 4), BOX, -1)
        cv2.putText(
            video, label, (p1[0] + 2, top + height + 1), FONT, font_scale, (0, 0, 0), 1, cv2.LINE_AA
        )


def render(
    frame: np.ndarray,
    content: PanelContent,
    layout: Layout,
    *,
    boxes_image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The output frame (layout.height, layout.width, 3) uint8 RGB: ``frame`` (RGB uint8,
    any size) scaled into the video area, the detections of ``content.boxes`` (given in
    pixels of an image of ``boxes_image_size`` = (width, height)) drawn on it, and the panel."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"render expects an RGB uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}"
        )
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BACKGROUND
    video = cv2.resize(
        frame,
        (layout.video_width, layout.video_height),
        interpolation=cv2.INTER_LINEAR if layout.video_height > frame.shape[0] else cv2.INTER_AREA,
    )
    if content.boxes and boxes_image_size is not None:
        sx = layout.video_width / boxes_image_size[0]
        sy = layout.video_height / boxes_image_size[1]
        _draw_boxes(video, content.boxes, scale=layout.scale, sx=sx, sy=sy)
    canvas[:, : layout.video_width] = video
    _draw_panel(canvas, content, layout)
    return canvas


def _draw_panel(canvas: np.ndarray, content: PanelContent, layout: Layout) -> None:
    writer = _Writer(canvas, left=layout.video_width, width=layout.panel_width, scale=layout.scale)
    writer.line(f"t = {content.time_s:6.2f} s    steps: {content.steps}", MUTED)
    writer.line(
        f"Next action in {content.horizon:g} s (top {len(content.predictions) or 5})", ACCENT
    )
    if content.predictions:
        for rank, (name, probability) in enumerate(content.predictions):
            colour = HIT if rank in content.hits else TEXT
            writer.bar_row(
                f"{rank + 1}. {name}",
                probability,
                colour,
                bar_colour=(50, 120, 70) if rank in content.hits else BAR,
                value_text=_percent(probability),
            )
    else:
        writer.line(content.status or "waiting for the first observation", MUTED, indent=4)
    if content.fusion_note:
        writer.gap()
        writer.line(content.fusion_note, WARNING)
    if content.weights:
        writer.gap()
        writer.line("Modality attention (MATT)", ACCENT)
        for name, weight in content.weights.items():
            writer.bar_row(name, weight, TEXT, bar_colour=MODALITY_COLOURS.get(name, BAR))
    if content.show_ground_truth:
        writer.gap()
        writer.line("Ground truth", ACCENT)
        writer.line(f"now:  {content.current or '-'}", TEXT, indent=4)
        writer.line(f"next: {content.upcoming or '-'}", HIT if content.hits else TEXT, indent=4)
