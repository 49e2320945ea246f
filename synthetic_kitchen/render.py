"""OpenCV rendering of the synthetic first-person kitchen.

A frame shows a low-saturation textured counter under a wall, seen by a slightly shaking
camera. During an action, its noun's object (a flat shape in the noun's saturated palette
colour) is on the counter, the verb's prop is next to it (take: none; put: a mat; open: a
lid; cut: a board and a knife; pour: a target bowl and a stream; stir: a pot and a spoon;
wash: a sink, a tap and drops) and a skin-coloured hand makes the verb's motion:

=====  ============================================================================
take   reaches the object, then carries it to the bottom of the frame (it grows)
put    the reverse, onto a mat, then the hand withdraws
open   swings a lid open and shut in a wide arc (1.2 s period)
cut    a knife chops up and down fast over a board (0.4 s period)
pour   holds the object tilted and rocking (1 s period) over a bowl, with a stream
stir   moves a spoon in circles inside a pot (0.8 s period)
wash   scrubs the object side to side fast (0.33 s period) in a sink, under drops
=====  ============================================================================

Between actions the counter is empty and the hand rests at the bottom right. Nothing of an
action is drawn before its first frame, so the frames before an action carry no
information about it (the premise of the Bayes bound in :mod:`synthetic_kitchen.recipe`).

Colour guarantee for the colour-blob detector: palette colours have HSV saturation 1 and
value 0.9; every other drawn colour (counter, wall, hand, props) has saturation <= 0.3.

Geometry is written for a 128 x 96 "design" frame and scaled to the output size.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

DESIGN_WIDTH, DESIGN_HEIGHT = 128.0, 96.0
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing, smooth motion at low resolution
_ONE = 1 << _SHIFT
_SUBPIXEL = 4  # camera-shake positions per pixel

Colour = tuple[int, int, int]


def palette_rgb(num_nouns: int) -> list[Colour]:
    """One saturated colour per noun: hues evenly spaced around the circle (45 degrees
    apart for 8 nouns), saturation 1, value 0.9, as RGB 0..255."""
    colours = []
    for noun in range(num_nouns):
        r, g, b = colorsys.hsv_to_rgb(noun / num_nouns, 1.0, 0.9)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def _bgr(rgb: Colour) -> Colour:
    return (rgb[2], rgb[1], rgb[0])


# Non-palette colours (RGB), all with HSV saturation <= 0.3.
_SKIN = (226, 196, 178)
_MAT = (92, 86, 80)
_LID = (72, 74, 80)
_BOARD = (204, 188, 166)
_BLADE = (226, 226, 232)
_DARK = (44, 44, 46)
_TARGET_BOWL = (122, 122, 128)
_STREAM = (206, 214, 226)
_POT = (62, 62, 68)
_SPOON = (112, 98, 84)
_SINK = (150, 158, 168)
_DROP = (236, 240, 246)


@dataclass(frozen=True)
class RenderSettings:
    """Output size and appearance. ``jitter`` is the camera shake amplitude and ``noise`` the
    pixel-noise standard deviation, both in design units / grey levels."""

    width: int = 128
    height: int = 96
    fps: int = 30
    jitter: float = 2.0
    noise: float = 3.0
    crf: int = 23

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or self.width < 32 or self.height < 24:
            raise ValueError(
                f"width and height must be even and at least 32 x 24 (yuv420p), "
                f"got {self.width} x {self.height}"
            )


@dataclass(frozen=True)
class ScheduledAction:
    """One action to draw: frames are 1-based and inclusive (frame f is the f-th decoded
    frame), ``verb``/``noun`` index the names passed to :func:`render_video`."""

    verb: int
    noun: int
    start_frame: int
    end_frame: int


# ------------------------------------------------------------------------------ shapes


def _polygon(points: Sequence[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _ellipse(rx: float, ry: float, *, start: int = 0, end: int = 360) -> np.ndarray:
    angles = np.deg2rad(np.arange(start, end + 1, 15))
    return np.stack([rx * np.cos(angles), ry * np.sin(angles)], axis=1)


# Object outlines in design units around the object's centre; a distinct shape per noun
# (cycled if there are more nouns than shapes).
_SHAPES: tuple[np.ndarray, ...] = (
    _ellipse(12, 12),  # round
    _polygon([(-11, -11), (11, -11), (11, 11), (-11, 11)]),  # square
    _ellipse(13, 13)[::4],  # hexagon
    _ellipse(17, 7),  # long
    _polygon([(-7, -8), (-3, -8), (-3, -15), (3, -15), (3, -8), (7, -8), (7, 14), (-7, 14)]),
    np.concatenate([_ellipse(12, 12, start=20, end=340), [(22, 3), (22, -3)]]),  # with handle
    _polygon([(-10, -12), (10, -12), (12, -9), (12, 12), (-12, 12), (-12, -9)]),  # jar
    _ellipse(15, 11, start=0, end=180),  # half disc
)


def _transform(
    points: np.ndarray, *, centre: tuple[float, float], scale: float = 1.0, angle: float = 0.0
) -> np.ndarray:
    """(P, 2) local design points -> (P, 2) design points, rotated by ``angle`` degrees."""
    radians = math.radians(angle)
    rotation = np.array(
        [[math.cos(radians), -math.sin(radians)], [math.sin(radians), math.cos(radians)]]
    )
    return points @ rotation.T * scale + np.asarray(centre)


class _Canvas:
    """Drawing in design units onto a frame; ``offset`` (x, y) is added in pixels after
    scaling (the camera shake, sub-pixel)."""

    def __init__(self, image: np.ndarray, *, scale: float, offset: np.ndarray) -> None:
        self.image = image
        self.scale = scale
        self.offset = offset

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        # (P, 2) design units -> (P, 2) int32 fixed-point pixels
        return np.round((points * self.scale + self.offset) * _ONE).astype(np.int32)

    def fill(self, points: np.ndarray, rgb: Colour) -> None:
        cv2.fillPoly(self.image, [self._fixed(points)], _bgr(rgb), cv2.LINE_AA, _SHIFT)

    def line(self, a: Sequence[float], b: Sequence[float], rgb: Colour, width: float) -> None:
        ends = self._fixed(np.array([a, b], dtype=np.float64))
        thickness = max(1, round(width * self.scale))
        cv2.line(self.image, ends[0], ends[1], _bgr(rgb), thickness, cv2.LINE_AA, _SHIFT)

    def disc(
        self, centre: Sequence[float], radius: float, rgb: Colour, *, smooth: bool = True
    ) -> None:
        """A filled circle; ``smooth=False`` skips anti-aliasing (4x cheaper, for drops)."""
        point = self._fixed(np.array([centre], dtype=np.float64))[0]
        line_type = cv2.LINE_AA if smooth else cv2.LINE_8
        cv2.circle(
            self.image, point, round(radius * self.scale * _ONE), _bgr(rgb), -1, line_type, _SHIFT
        )

    def ring(self, centre: Sequence[float], radius: float, rgb: Colour, width: float) -> None:
        point = self._fixed(np.array([centre], dtype=np.float64))[0]
        thickness = max(1, round(width * self.scale))
        cv2.circle(
            self.image,
            point,
            round(radius * self.scale * _ONE),
            _bgr(rgb),
            thickness,
            cv2.LINE_AA,
            _SHIFT,
        )

    def rect(self, centre: Sequence[float], width: float, height: float, rgb: Colour) -> None:
        cx, cy = centre
        w, h = width / 2, height / 2
        self.fill(
            _polygon([(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)]), rgb
        )


# ---------------------------------------------------------------------------- motions


@dataclass(frozen=True)
class _ActionContext:
    """What a verb's drawing needs: the object, where it rests and the motion phase."""

    shape: np.ndarray
    colour: Colour
    rest: tuple[float, float]  # design units
    phase: float  # in [0, 1): desynchronises the periodic motions


_REST_HAND = (108.0, 90.0)


def _ease(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * x)


def _lerp(a: Sequence[float], b: Sequence[float], x: float) -> tuple[float, float]:
    return (a[0] + (b[0] - a[0]) * x, a[1] + (b[1] - a[1]) * x)


def _wave(t: float, period: float, phase: float) -> float:
    return math.sin(2 * math.pi * (t / period + phase))


_HAND_SHAPE = _transform(_ellipse(8, 6), centre=(0.0, 0.0), angle=-30)
_BOWL_SHAPE = _ellipse(18, 8, start=0, end=180)


def _hand(canvas: _Canvas, at: Sequence[float]) -> None:
    """A forearm from the bottom edge and a hand at ``at``."""
    x, y = at
    canvas.line((x, y), (x + 26, DESIGN_HEIGHT + 14), _SKIN, 9)
    canvas.fill(_HAND_SHAPE + np.array([x, y]), _SKIN)


def _idle(canvas: _Canvas, t: float) -> None:
    _hand(canvas, (_REST_HAND[0] + 2 * math.sin(t * math.pi), _REST_HAND[1]))


def _draw_take(canvas: _Canvas, ctx: _ActionContext, t: float, duration: float) -> None:
    progress = t / duration
    cx, cy = ctx.rest
    carry = _ease((progress - 0.2) / 0.8)
    centre = _lerp((cx, cy), (cx + 14, 94), carry)
    canvas.fill(_transform(ctx.shape, centre=centre, scale=1 + 0.7 * carry), ctx.colour)
    grip = (centre[0] + 5, centre[1] + 8)
    _hand(canvas, _lerp(_REST_HAND, grip, _ease(progress / 0.2)) if progress < 0.2 else grip)


def _draw_put(canvas: _Canvas, ctx: _ActionContext, t: float, duration: float) -> None:
    progress = t / duration
    cx, cy = ctx.rest
    canvas.rect((cx, cy + 9), 44, 12, _MAT)
    place = _ease(progress / 0.8)
    centre = _lerp((cx + 14, 94), (cx, cy), place)
    canvas.fill(_transform(ctx.shape, centre=centre, scale=1.7 - 0.7 * place), ctx.colour)
    grip = (centre[0] + 5, centre[1] + 8)
    _hand(
        canvas, grip if progress < 0.8 else _lerp(grip, _REST_HAND, _ease((progress - 0.8) / 0.2))
    )


def _draw_open(canvas: _Canvas, ctx: _ActionContext, t: float, duration: float) -> None:
    cx, cy = ctx.rest
    canvas.fill(_transform(ctx.shape, centre=(cx, cy)), ctx.colour)
    angle = 110 * (0.5 - 0.5 * _wave(t, 1.2, ctx.phase + 0.25))  # 0 = shut, 110 = open
    hinge = (cx - 13, cy - 13)
    radians = math.radians(-angle)
    tip = (hinge[0] + 30 * math.cos(radians), hinge[1] + 30 * math.sin(radians))
    canvas.line(hinge, tip, _LID, 7)
    canvas.disc(hinge, 3, _DARK)
    _hand(canvas, tip)


def _draw_cut(canvas: _Canvas, ctx: _ActionContext, t: float, duration: float) -> None:
    cx, cy = ctx.rest
    canvas.rect((cx, cy + 3), 66, 36, _BOARD)
    canvas.fill(_transform(ctx.shape, centre=(cx, cy)), ctx.colour)
    edge = cy + 1 + 10 * _wave(t, 0.4, ctx.phase)  # the blade's lower end
    x = cx + 3
    canvas.line((x, edge), (x, edge - 22), _BLADE, 6)
    canvas.line((x, edge - 22), (x, edge - 34), _DARK, 6)
    _hand(canvas, (x + 3, edge - 30))


def _draw_pour(canvas: _Canvas, ctx: _ActionContext, t: float, duration: float) -> None:
    cx, cy = ctx.rest
    bowl = (cx + 6, cy + 24)
    canvas.fill(_BOWL_SHAPE + np.array(bowl), _TARGET_BOWL)
    angle = 60 + 15 * _wave(t, 1.0, ctx.phase)
    held = (cx - 10, cy - 14)
    canvas.fill(_transform(ctx.shape, centre=held, angle=angle), ctx.colour)
    lip = _transform(np.array([[0.0, -13.0]]), centre=held, angle=angle)[0]
    fall = bowl[1] - lip[1]
    for k in range(8):
        # drops fall at 4 design units per frame, evenly spaced along the stream
        y = (t * 120 + k * fall / 8) % fall
        canvas.disc((lip[0] + 0.08 * y, lip[1] + y), 2, _STREAM, smooth=False)
    _hand(canvas, (held[0] + 12, held[1] + 4))


def _draw_stir(canvas: _Canvas, ctx: _ActionContext, t: float, duration: float) -> None:
    cx, cy = ctx.rest
    canvas.ring((cx, cy), 22, _POT, 5)
    canvas.fill(_transform(ctx.shape, centre=(cx, cy), scale=0.8), ctx.colour)
    turn = 2 * math.pi * (t / 0.8 + ctx.phase)
    tip = (cx + 11 * math.cos(turn), cy + 8 * math.sin(turn))
    end = (tip[0] + 16, tip[1] - 24)
    canvas.line(tip, end, _SPOON, 4)
    canvas.disc(tip, 3.5, _SPOON)
    _hand(canvas, end)


def _draw_wash(canvas: _Canvas, ctx: _ActionContext, t: float, duration: float) -> None:
    cx, cy = ctx.rest
    canvas.rect((cx, cy + 2), 84, 50, _SINK)
    tap = (cx - 6, cy - 26)
    canvas.line((tap[0] - 10, tap[1] - 8), (tap[0], tap[1] - 8), _DARK, 4)
    canvas.line((tap[0], tap[1] - 8), (tap[0], tap[1]), _DARK, 4)
    centre = (cx + 8 * _wave(t, 0.33, ctx.phase), cy + 4)
    canvas.fill(_transform(ctx.shape, centre=centre), ctx.colour)
    for k in range(5):
        y = (t * 150 + k * 6) % 30
        canvas.disc((tap[0] + (k % 2) * 2, tap[1] + 2 + y), 1.5, _DROP, smooth=False)
    _hand(canvas, (centre[0] + 6, centre[1] + 7))


_MOTIONS: dict[str, Callable[[_Canvas, _ActionContext, float, float], None]] = {
    "take": _draw_take,
    "put": _draw_put,
    "open": _draw_open,
    "cut": _draw_cut,
    "pour": _draw_pour,
    "stir": _draw_stir,
    "wash": _draw_wash,
}
SUPPORTED_VERBS: tuple[str, ...] = tuple(_MOTIONS)


# --------------------------------------------------------------------------- the video


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width, 3) BGR uint8: a tiled wall over a wood-grain counter, all with
    saturation <= 0.2, each kitchen slightly different."""
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    horizon = int(height * (0.26 + 0.06 * rng.random()))
    smooth = cv2.GaussianBlur(rng.normal(0, 1, (height, width)), (0, 0), max(1.0, width / 40))
    smooth /= smooth.std() + 1e-9
    grain = np.sin(ys * (0.9 + 0.3 * rng.random()) + 3 * smooth) * 9 + smooth * 6  # (H, W)
    counter = np.array([128, 138, 150], dtype=np.float64) * (0.9 + 0.2 * rng.random())  # BGR
    wall = np.array([184, 180, 176], dtype=np.float64) * (0.9 + 0.15 * rng.random())
    tile = max(4, width // 10)
    grout = ((ys % tile == 0) | (xs % tile == 0)) * -22.0  # (H, W)
    image = np.where(
        (ys < horizon)[..., None],
        wall + (grout + 3 * smooth)[..., None],
        counter + grain[..., None],
    )
    image[horizon : horizon + max(1, height // 48)] = (70, 72, 74)  # the counter's edge
    return np.clip(image, 0, 255).astype(np.uint8)


def _jitter_path(
    rng: np.random.Generator, num_frames: int, amplitude: float, fps: float
) -> np.ndarray:
    """(num_frames, 2) camera offsets within [-amplitude, amplitude]: a slow sway (two
    sinusoids per axis, periods 2-6 s). Rendered sub-pixel, so the camera's own motion is a
    smooth drift of a few hundredths of a pixel per frame that does not swamp the hand's
    optical flow (integer jumps would move the whole frame by a pixel at once)."""
    time = np.arange(num_frames)[:, None] / fps  # (F, 1) seconds
    periods = rng.uniform(2.0, 6.0, (2, 2))  # (component, axis)
    phases = rng.uniform(0, 2 * np.pi, (2, 2))
    sway = sum(
        np.sin(2 * np.pi * time / periods[c] + phases[c]) for c in range(2)
    )  # (F, 2) in [-2, 2]
    return amplitude * sway / 2


def render_frames(
    actions: Sequence[ScheduledAction],
    num_frames: int,
    *,
    verbs: Sequence[str],
    noun_colours: Sequence[Colour],
    settings: RenderSettings,
    rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """Yield ``num_frames`` (height, width, 3) BGR uint8 frames of one video.

    ``verbs`` names the verb ids of ``actions`` (each must be in :data:`SUPPORTED_VERBS`);
    ``noun_colours`` gives each noun id's RGB palette colour.
    """
    unknown = sorted(set(verbs) - set(_MOTIONS))
    if unknown:
        raise ValueError(f"no motion for the verbs {unknown}; supported: {SUPPORTED_VERBS}")
    scale = settings.height / DESIGN_HEIGHT
    margin = math.ceil(settings.jitter * scale) + 1
    background = _background(rng, settings.height + 2 * margin, settings.width + 2 * margin)
    # The camera shake, quantised to 1/4 pixel: the background is pre-shifted once per
    # quarter-pixel phase (a per-frame warp would cost as much as all the drawing), each
    # frame crops it at the integer part, and the scene is drawn with the exact sub-pixel
    # offset.
    jitter = _jitter_path(rng, num_frames, settings.jitter, settings.fps) * scale  # (F, 2)
    origins = np.round((margin + jitter) * _SUBPIXEL) / _SUBPIXEL  # (F, 2) crop origins
    shifted = {
        (qx, qy): cv2.warpAffine(
            background,
            np.float32([[1, 0, qx / _SUBPIXEL], [0, 1, qy / _SUBPIXEL]]),
            background.shape[1::-1],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        for qx in range(_SUBPIXEL)
        for qy in range(_SUBPIXEL)
    }
    # A bank of noise frames reused at random (drawing fresh Gaussian noise per frame would
    # cost more than the rest of the rendering), split into its positive and negative parts
    # for OpenCV's saturating add/subtract.
    noise_bank = np.round(rng.normal(0, settings.noise, (8, settings.height, settings.width, 3)))
    noise_up = np.clip(noise_bank, 0, 255).astype(np.uint8)
    noise_down = np.clip(-noise_bank, 0, 255).astype(np.uint8)
    noise_choice = rng.integers(0, len(noise_bank), num_frames)
    contexts = [
        _ActionContext(
            shape=_SHAPES[a.noun % len(_SHAPES)],
            colour=noun_colours[a.noun],
            rest=(float(rng.uniform(58, 70)), float(rng.uniform(53, 58))),
            phase=float(rng.random()),
        )
        for a in actions
    ]
    ordered = sorted(range(len(actions)), key=lambda i: actions[i].start_frame)
    cursor = 0
    fps = settings.fps
    for index in range(num_frames):
        frame_number = index + 1
        while cursor < len(ordered) and actions[ordered[cursor]].end_frame < frame_number:
            cursor += 1
        origin = origins[index]
        whole = np.floor(origin).astype(int)
        phase = np.round((origin - whole) * _SUBPIXEL).astype(int)
        image = shifted[phase[0], phase[1]][
            whole[1] : whole[1] + settings.height, whole[0] : whole[0] + settings.width
        ].copy()
        canvas = _Canvas(image, scale=scale, offset=margin - origin)
        current = actions[ordered[cursor]] if cursor < len(ordered) else None
        if current is not None and current.start_frame <= frame_number:
            t = (frame_number - current.start_frame) / fps
            duration = (current.end_frame - current.start_frame + 1) / fps
            _MOTIONS[verbs[current.verb]](canvas, contexts[ordered[cursor]], t, duration)
        else:
            _idle(canvas, index / fps)
        choice = noise_choice[index]
        yield cv2.subtract(cv2.add(image, noise_up[choice]), noise_down[choice])


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, settings: RenderSettings) -> int:
    """Encode BGR frames to an H.264 (libx264, yuv420p) mp4 at ``settings.fps``; returns the
    number of frames. Single-threaded and without B-frames, so that the bytes are
    reproducible and every decoder (PyAV, decord) seeks simply. Written to a temporary name
    and renamed, so an interrupted run never leaves a truncated video under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    with av.open(str(partial), mode="w", format="mp4") as container:
        stream = container.add_stream(
            "libx264",
            rate=settings.fps,
            options={"crf": str(settings.crf), "preset": "ultrafast", "bf": "0", "g": "60"},
        )
        stream.width, stream.height = settings.width, settings.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = Fraction(1, settings.fps)
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = count
            frame.time_base = Fraction(1, settings.fps)
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    partial.replace(path)
    return count


def render_video(
    path: str | Path,
    actions: Sequence[ScheduledAction],
    num_frames: int,
    *,
    verbs: Sequence[str],
    noun_colours: Sequence[Colour],
    settings: RenderSettings,
    rng: np.random.Generator,
) -> int:
    """Render and encode one video (see :func:`render_frames`); returns its frame count."""
    frames = render_frames(
        actions, num_frames, verbs=verbs, noun_colours=noun_colours, settings=settings, rng=rng
    )
    return write_video(path, frames, settings=settings)
