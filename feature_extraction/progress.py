"""How long an extraction takes: the throughput meter, measured on the run's own batches after
the warm-up, and the wording of rates and estimates (:class:`feature_extraction.loop.StagingSink`
prints them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

#: Runs estimated to take longer than this (seconds) are announced with the estimate.
LONG_RUN_SECONDS = 120.0
#: Wall time (seconds) measured after the warm-up batch before the run is estimated.
MEASURE_SECONDS = 10.0
#: A first batch at least this long (seconds) gives a rough estimate at once: a very slow
#: model (a video foundation model on a CPU) would otherwise say nothing for a second batch.
ROUGH_SECONDS = 30.0


def format_estimate(seconds: float) -> str:
    """``"about 40 s"``, ``"about 7 min"``, ``"about 2.5 h"``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def format_rate(per_second: float, unit: str = "frame") -> str:
    """``"18 frames/s"``, ``"2.4 frames/s"``, ``"0.35 frames/s"``, ``"0.084 clips/s"`` (two
    significant digits below 1)."""
    if per_second >= 10:
        return f"{per_second:.0f} {unit}s/s"
    if per_second >= 1:
        return f"{per_second:.1f} {unit}s/s"
    return f"{float(f'{per_second:.2g}')} {unit}s/s"


class ThroughputMeter:
    """A run's speed in frames/s, measured on its real work after the warm-up.

    The first batch that computes frames is the warm-up and is not counted: oneDNN and cuDNN
    build their kernels for each new shape, memory is allocated and lazy modules initialise on
    the first forward (one frame computed alone before the first batch overestimated a
    ``make quickstart`` run about 14x: 2.9 h announced, 12.8 min taken). From the end of the
    warm-up batch, the wall time (decoding, flow, models and writing together) over the frames
    computed since gives the rate, once at least one more batch and ``measure_seconds`` of
    wall time have passed.

    A first batch that took at least ``rough_seconds`` (from :meth:`batch_started` to its
    end) gives a rough rate at once, warm-up included (so rather too slow): with a very slow
    model that batch is mostly model time, and the measured rate would come only one more
    such batch later.

    Args:
        clock: seconds from an arbitrary origin (``time.perf_counter``; tests pass a fake).
        measure_seconds: the least wall time measured after the warm-up batch.
        rough_seconds: the least duration of the first batch for a rough rate (``inf``: none).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.perf_counter,
        measure_seconds: float,
        rough_seconds: float = float("inf"),
    ) -> None:
        self.clock = clock
        self.measure_seconds = measure_seconds
        self.rough_seconds = rough_seconds
        #: Frames per second, once measured.
        self.rate: float | None = None
        #: The frames the rate was measured over (those after the warm-up batch).
        self.measured_frames = 0.0
        #: The rough rate of the first batch (frames/s, warm-up included), if it was long.
        self.rough_rate: float | None = None
        #: The first batch's frames and duration (seconds), once it ended.
        self.first_batch: tuple[float, float] | None = None
        #: The clock when the run began (:meth:`begin`) and when the rate became known.
        self.began_at: float | None = None
        self.measured_at = 0.0
        self._start: tuple[float, float] | None = None  # (time, frames) after the warm-up
        self._first_started: float | None = None

    def begin(self) -> None:
        """The run begins (before the decoding workers start): the origin of its elapsed time."""
        self.began_at = self.clock()

    def batch_started(self) -> None:
        """A batch begins (its chunk decoded): the first call starts the first batch's time."""
        if self._first_started is None:
            self._first_started = self.clock()

    def batch_done(self, frames: float) -> Literal["rough", "measured"] | None:
        """Told after each batch with the frames computed so far in the run; ``"rough"`` the
        one time the rough rate becomes known (:attr:`rough_rate`), ``"measured"`` the one
        time the rate does (:attr:`rate`), else None."""
        if self.rate is not None or frames <= 0:
            return None
        now = self.clock()
        if self._start is None:  # the end of the warm-up batch
            self._start = (now, frames)
            started = now if self._first_started is None else self._first_started
            self.first_batch = (frames, now - started)
            if now - started >= self.rough_seconds:
                self.rough_rate, self.measured_at = frames / (now - started), now
                return "rough"
            return None
        began, before = self._start
        seconds, counted = now - began, frames - before
        if counted <= 0 or seconds <= 0 or seconds < self.measure_seconds:
            return None
        self.rate, self.measured_frames, self.measured_at = counted / seconds, counted, now
        return "measured"

    def estimate(self, *, done: float, planned: float) -> float:
        """Seconds the whole run takes: the time since :meth:`begin` (the batch that measured
        the rate if never begun) plus the ``planned - done`` frames left at :attr:`rate`
        (:attr:`rough_rate` before it is measured)."""
        rate = self.rate if self.rate is not None else self.rough_rate
        assert rate is not None, "estimate() before the rate was measured"
        began = self.measured_at if self.began_at is None else self.began_at
        return self.measured_at - began + max(0.0, planned - done) / rate
