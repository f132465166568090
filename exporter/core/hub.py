"""Where every provider's poller publishes: the one current ``Snapshot`` and its swap.

Each publication joins the newest part of every provider, has it prepared (encoded for
``/metrics``) in a worker thread, and only then swaps it in, so a scrape never pays for
encoding and never sees half of a change. Publications are serialised: two pollers finishing
at once cannot publish an older join over a newer one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from exporter.core.heap import release_free_memory
from exporter.core.snapshot import ProviderPart, Snapshot

Prepare = Callable[[Snapshot], None]


class SnapshotHub:
    """Holds the current snapshot; readers take ``hub.snapshot`` and nothing else."""

    def __init__(self, providers: Sequence[str], prepare: Prepare) -> None:
        self._parts = {name: ProviderPart(name) for name in providers}
        self._prepare = prepare
        self._lock = asyncio.Lock()
        self.snapshot = Snapshot.join(list(self._parts.values()), 0)
        self.prepare_seconds = 0.0  # how long the last publication took to prepare
        prepare(self.snapshot)

    async def publish(self, part: ProviderPart) -> None:
        async with self._lock:
            self._parts[part.name] = part
            snapshot = Snapshot.join(list(self._parts.values()), self.snapshot.version + 1)
            started = time.monotonic()
            await asyncio.to_thread(self._prepare, snapshot)
            self.prepare_seconds = time.monotonic() - started
            self.snapshot = snapshot
            await asyncio.to_thread(release_free_memory)  # the snapshot before is freed now
