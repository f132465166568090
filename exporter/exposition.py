"""``/metrics`` bodies rendered once per snapshot, not once per scrape.

Model data changes only when a poll cycle ends, yet encoding 10,000 series costs hundreds of
milliseconds; so the snapshot part is encoded (and gzipped) once per snapshot version and
reused. The small live part (request counters, budget, process metrics) is encoded at most
once per ``live_ttl`` (one second): fresher than any scrape interval, yet a burst of scrapers
gets the very same bytes. Text bodies are the two parts back to back; OpenMetrics bodies drop
the first part's ``# EOF``. Gzip bodies are two gzip members back to back, which RFC 1952 allows
and every decoder used by Prometheus reads as one stream.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

GZIP_LEVEL = 6
OPENMETRICS_EOF = b"# EOF\n"
LIVE_TTL_SECONDS = 1.0


@dataclass
class _Body:
    """A finished body for one format and encoding, and what it was built from."""

    version: int
    rendered_at: float
    parts: tuple[bytes, bytes]


@dataclass
class _SnapshotPart:
    """One snapshot version's encoded model part, plain and (on demand) gzipped."""

    version: int
    plain: bytes
    zipped: bytes | None = None

    def gzipped(self) -> bytes:
        if self.zipped is None:
            self.zipped = gzip.compress(self.plain, compresslevel=GZIP_LEVEL)
        return self.zipped


@dataclass
class ExpositionCache:
    """Builds ``/metrics`` bodies from a cached snapshot part and a briefly cached live part."""

    snapshot_registry: CollectorRegistry
    live_registry: CollectorRegistry
    version: Callable[[], int]
    live_ttl: float = LIVE_TTL_SECONDS
    clock: Callable[[], float] = time.monotonic
    renders: int = 0
    live_renders: int = 0
    _parts: dict[str, _SnapshotPart] = field(default_factory=dict)
    _bodies: dict[tuple[str, bool], _Body] = field(default_factory=dict)

    def prepare(self, snapshot_registry: CollectorRegistry, version: int) -> None:
        """Encode a snapshot's text part (plain and gzip) ahead of its first scrape.

        Runs in a worker thread before the poller swaps the snapshot in, so that neither a
        scrape nor the event loop pays for encoding thousands of series.
        """
        encoder, _ = choose_encoder("")
        part = _SnapshotPart(version, encoder(snapshot_registry))
        part.gzipped()
        self._parts["text"] = part  # one assignment: a scrape sees the old part or the new
        self.renders += 1

    def body(self, accept: str, use_gzip: bool) -> tuple[bytes, str]:
        """The whole body in one piece (for tools and tests; the server sends the parts)."""
        parts, content_type = self.parts(accept, use_gzip)
        return b"".join(parts), content_type

    def parts(self, accept: str, use_gzip: bool) -> tuple[tuple[bytes, bytes], str]:
        """The body as the cached model part and the live part, never joined into a copy,
        and its content type, for a client's ``Accept``, gzipped or not."""
        encoder, content_type = choose_encoder(accept)
        fmt = "openmetrics" if content_type.startswith("application/openmetrics-text") else "text"
        version = self.version()
        now = self.clock()
        cached = self._bodies.get((fmt, use_gzip))
        if (
            cached is not None
            and cached.version == version
            and now - cached.rendered_at < self.live_ttl
        ):
            return cached.parts, content_type
        part = self._parts.get(fmt)
        if part is None or part.version != version:
            plain = encoder(self.snapshot_registry)
            if fmt == "openmetrics":
                plain = plain.removesuffix(OPENMETRICS_EOF)
            part = self._parts[fmt] = _SnapshotPart(version, plain)
            self.renders += 1
        live = encoder(self.live_registry)
        self.live_renders += 1
        if use_gzip:
            parts = (part.gzipped(), gzip.compress(live, compresslevel=GZIP_LEVEL))
        else:
            parts = (part.plain, live)
        self._bodies[(fmt, use_gzip)] = _Body(version, now, parts)
        return parts, content_type
