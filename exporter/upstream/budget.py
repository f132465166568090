"""A client-side ceiling on requests per minute, shared by every request and every retry.

The API allows 500 requests a minute and trial keys 1,000 a month, so the ceiling is enforced
where requests are sent, not where they are planned: no retry loop, discovery walk or burst of
new models can exceed it. A 429 ``hold`` pauses every request, so the whole poller slows down
instead of each task hammering on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW_SECONDS = 60.0


class RequestBudget:
    """Sliding one-minute window of request start times, plus a shared pause after a 429."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._hold_until = 0.0
        self._lock = asyncio.Lock()

    def _forget_old(self, now: float) -> None:
        # ``start + WINDOW <= now``, the very sum ``acquire`` waits for: written as
        # ``now - start >= WINDOW`` it can round the other way and admit one request early.
        while self._starts and self._starts[0] + WINDOW_SECONDS <= now:
            self._starts.popleft()

    @property
    def remaining(self) -> int:
        """Requests that could start right now without waiting (0 while on hold)."""
        now = self._clock()
        self._forget_old(now)
        if now < self._hold_until:
            return 0
        return self.per_minute - len(self._starts)

    @property
    def hold_remaining(self) -> float:
        return max(0.0, self._hold_until - self._clock())

    def hold(self, seconds: float) -> None:
        """Pause every request for ``seconds`` (never shortens a longer pause already set)."""
        self._hold_until = max(self._hold_until, self._clock() + max(0.0, seconds))

    async def acquire(self) -> None:
        """Wait until a request may start, then count it. Waiters are served in order."""
        async with self._lock:
            while True:
                now = self._clock()
                self._forget_old(now)
                wait = self._hold_until - now
                if wait <= 0 and len(self._starts) >= self.per_minute:
                    wait = self._starts[0] + WINDOW_SECONDS - now
                if wait <= 0:
                    self._starts.append(now)
                    return
                await self._sleep(wait)
