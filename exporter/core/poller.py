"""One provider's poll loop: a fixed schedule, auth backoff, and a snapshot part per cycle.

Calls cost money, so a cycle reads only what is due (active runs every cycle, finished ones once
and then rarely), the run list only every ``--poll.discovery-interval``, and after a rejected
key whole cycles wait 1, 2, 4... intervals. A long cycle publishes what it has every few
seconds, so a big account shows runs long before its first cycle ends.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from types import MappingProxyType

from exporter.core.concurrency import bounded
from exporter.core.discovery import Discovery
from exporter.core.problems import ProblemLog
from exporter.core.provider import Provider
from exporter.core.runbook import RunBook
from exporter.core.snapshot import ProviderPart
from exporter.core.state import StateStore
from exporter.core.tracker import RunTracker
from exporter.settings import Settings
from exporter.upstream.errors import ApiError, ApiTransportError, is_auth_failure

log = logging.getLogger(__name__)
MAX_AUTH_BACKOFF_SECONDS = 900.0
PROGRESS_SECONDS = 5.0
Publish = Callable[[ProviderPart], Awaitable[None]]


class Poller:
    """Polls one provider; its only output is the parts it hands to ``publish``."""

    def __init__(
        self,
        provider: Provider,
        discovery: Discovery,
        book: RunBook,
        *,
        settings: Settings,
        requests_per_minute: int,
        problems: ProblemLog,
        publish: Publish,
        prepare_seconds: Callable[[], float] = lambda: 0.0,
        state: StateStore | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider, self.discovery, self.book = provider, discovery, book
        self._settings, self._per_minute = settings, requests_per_minute
        self._problems, self._publish, self._state = problems, publish, state
        self._prepare_seconds = prepare_seconds
        self._monotonic, self._wall = monotonic, wall_clock
        self._discovered_at: float | None = None
        self._up, self._ready = False, False
        self._finished_at: float | None = None
        self._auth_failures, self._auth_retry_at = 0, 0.0
        self.dropped: Counter[str] = Counter()

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Run cycles on a fixed grid of ``--poll.interval``; an overrun skips missed slots."""
        start, slot, interval = self._monotonic(), 0, self._settings.poll_interval
        while True:
            try:
                await self.run_cycle()
            except Exception:  # a bug must not stop polling for good; the next slot retries
                log.exception("poll cycle crashed", extra={"provider": self.provider.name})
            slot = max(slot + 1, math.floor((self._monotonic() - start) / interval) + 1)
            await sleep(max(0.0, start + slot * interval - self._monotonic()))

    async def run_cycle(self) -> None:
        """One cycle: maybe discover, read what is due, publish the part."""
        started = self._monotonic()
        if started < self._auth_retry_at:
            await self._publish_part(started)  # rejected key: wait
            return
        outcomes: list[ApiError | None] = []
        if self._discovered_at is None or (
            started - self._discovered_at >= self._settings.poll_discovery_interval
        ):
            outcomes.append(await self._discover())
        due = self.book.due(started, self._settings.poll_final_refresh_interval)
        work = asyncio.ensure_future(bounded(self._poll, due, self._settings.poll_concurrency))
        try:
            while not (await asyncio.wait({work}, timeout=self._progress_interval()))[0]:
                await self._publish_part(started)  # a long cycle shows what it has so far
        finally:
            work.cancel()
        outcomes.extend(work.result())
        self._judge(outcomes)
        if self._state is not None:
            self._state.save(self.provider.name, self.book.saved())
        self._ready, self._finished_at = True, self._wall()
        await self._publish_part(started)

    def _progress_interval(self) -> float:
        return progress_interval(self._prepare_seconds())

    async def _publish_part(self, started: float) -> None:
        part = ProviderPart(
            name=self.provider.name,
            runs=self.book.views(),
            up=self._up,
            poll_duration=self._monotonic() - started,
            finished_at=self._finished_at,
            ready=self._ready,
            dropped=MappingProxyType(dict(self.dropped)),
        )
        await self._publish(part)

    async def _discover(self) -> ApiError | None:
        """Refresh which runs exist and their status; on failure keep what we had."""
        try:
            found = await self.discovery.discover()
        except ApiError as exc:
            self.discovery.report(self._problems, exc)
            return exc
        self.dropped["runs"] += found.dropped
        self.book.apply(found)
        self._discovered_at = self._monotonic()
        self.discovery.report(self._problems, None)
        self.book.check_budget(self._per_minute, self._settings.poll_interval)
        return None

    async def _poll(self, tracker: RunTracker) -> ApiError | None:
        try:
            steps = await self.provider.steps_after(tracker.run, tracker.position, tracker.cursor)
        except ApiError as exc:
            tracker.lost()
            self.book.report(tracker.run.id, exc.describe())
            return exc
        self.dropped["metric_names"] += tracker.absorb(steps)
        tracker.succeeded(self._wall(), self._monotonic())
        self.book.report(tracker.run.id, None)
        return None

    def _judge(self, outcomes: list[ApiError | None]) -> None:
        """Up when the API was reached and authorised (a cycle that asked nothing keeps the
        last verdict); after 401/403, wait 1, 2, 4... poll intervals before asking again."""
        if any(is_auth_failure(o) for o in outcomes):
            self._up = False
            delay = min(
                MAX_AUTH_BACKOFF_SECONDS, self._settings.poll_interval * 2**self._auth_failures
            )
            self._auth_failures += 1
            self._auth_retry_at = self._monotonic() + delay
            if self._auth_failures == 1:
                log.error(
                    "the API rejected the key; retrying with backoff",
                    extra={"provider": self.provider.name, "next_try_seconds": round(delay, 1)},
                )
            return
        if not outcomes:
            return
        self._auth_failures, self._auth_retry_at = 0, 0.0
        self._up = self._discovered_at is not None and any(
            not isinstance(o, ApiTransportError) for o in outcomes
        )


def progress_interval(prepare_seconds: float) -> float:
    """How often a long cycle publishes what it has: every few seconds, but never so often that
    preparing the publications (encoding thousands of runs) takes more than a tenth of the time.
    """
    return max(PROGRESS_SECONDS, 10 * prepare_seconds)
