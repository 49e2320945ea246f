"""Browser-playable H.264 MP4 output with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np


class H264Writer:
    """Writes RGB uint8 frames of one size to an H.264 (libx264, yuv420p) MP4 whose index is
    at the front (``+faststart``), the combination browsers play.

    Use as a context manager; the file is complete only after ``close()``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float,
        width: int,
        height: int,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        import av

        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        try:
            self._container = av.open(
                str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
        except Exception as error:  # PyAV raises OSError subclasses and others
            raise OSError(f"{self.path}: cannot write the video ({error})") from error
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset}
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        import av

        if image.shape != (self.height, self.width, 3):
            raise ValueError(
                f"frame of shape {image.shape}, expected {(self.height, self.width, 3)}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():  # flush the encoder
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
