"""Simulated time, so that a training run of minutes can be watched (or tested) in seconds."""

from __future__ import annotations

import math
import threading
import time


class SimClock:
    """Simulated time in Unix seconds.

    With ``speed > 0`` simulated time runs at ``speed`` times wall-clock time from ``start_unix``:
    ``now = start_unix + (monotonic - start_mono) * speed`` (monotonic so that a wall-clock jump
    on the host cannot make training steps go backwards). ``freeze()`` stops the automatic
    progress, which tests use to get exact, repeatable answers; ``advance()`` moves simulated
    time forward whether frozen or not. A lock keeps ``now()`` consistent when the simulator
    and a test drive the clock from different threads.
    """

    def __init__(
        self, *, speed: float = 1.0, start_unix: float | None = None, frozen: bool = False
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must not be negative, got {speed}")
        self._lock = threading.Lock()
        self._speed = speed
        self._base = time.time() if start_unix is None else float(start_unix)
        self._mono = time.monotonic()
        self._frozen = frozen or speed == 0

    @property
    def speed(self) -> float:
        """How many simulated seconds pass per wall-clock second while not frozen."""
        return self._speed

    @property
    def frozen(self) -> bool:
        """Whether simulated time only moves through ``advance()``."""
        return self._frozen

    def _now_locked(self) -> float:
        if self._frozen:
            return self._base
        return self._base + (time.monotonic() - self._mono) * self._speed

    def now(self) -> float:
        """The current simulated time in Unix seconds."""
        with self._lock:
            return self._now_locked()

    def advance(self, seconds: float) -> None:
        """Move simulated time forward; it never goes backwards, so negative values are refused."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"cannot move the clock by {seconds} s")
        with self._lock:
            self._base += seconds

    def freeze(self) -> None:
        """Stop automatic progress at the current simulated instant."""
        with self._lock:
            self._base = self._now_locked()
            self._frozen = True
