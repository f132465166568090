"""``/metrics`` bodies encoded once per snapshot, in every format, before a scrape asks.

Run data changes only when a snapshot is published, yet encoding 10,000 runs costs hundreds of
milliseconds; so publishing encodes the snapshot part in both formats Prometheus asks for
(text and OpenMetrics, each plain and gzipped) in a worker thread, and a scrape is a lookup.
Every name the exporter writes is a legal classic Prometheus name, so the ``escaping`` that an
``Accept`` header may ask for never changes the bytes: the cache key is the format alone.

The small live part (request counters, budget, process metrics) is encoded at most once per
``live_ttl`` (one second): fresher than any scrape interval, yet a burst of scrapers gets the
same bytes. Text bodies are the two parts back to back; OpenMetrics bodies drop the first
part's ``# EOF``. Gzip bodies are two gzip members back to back, which RFC 1952 allows and
every decoder used by Prometheus reads as one stream.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import CollectorRegistry

from exporter.collectors import registry_for
from exporter.core.snapshot import Snapshot

#: What Prometheus 3 sends by default: OpenMetrics first, so this is the format to have ready.
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
GZIP_LEVEL = 6
OPENMETRICS_EOF = b"# EOF\n"
LIVE_TTL_SECONDS = 1.0
Format = Literal["text", "openmetrics"]
FORMATS: tuple[Format, ...] = ("text", "openmetrics")


def openmetrics_bytes(registry: CollectorRegistry) -> bytes:
    encoded: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
    return encoded


@dataclass(frozen=True)
class EncodedSnapshot:
    """One snapshot's run part in every format and encoding a scrape may ask for."""

    version: int
    bodies: dict[tuple[Format, bool], bytes]

    @staticmethod
    def of(snapshot: Snapshot) -> EncodedSnapshot:
        registry = registry_for(snapshot)
        plain = {
            "text": generate_latest(registry),
            "openmetrics": openmetrics_bytes(registry).removesuffix(OPENMETRICS_EOF),
        }
        bodies: dict[tuple[Format, bool], bytes] = {}
        for fmt in FORMATS:
            bodies[(fmt, False)] = plain[fmt]
            bodies[(fmt, True)] = gzip.compress(plain[fmt], compresslevel=GZIP_LEVEL)
        return EncodedSnapshot(snapshot.version, bodies)


@dataclass
class _Live:
    """The live part as last encoded for one format and encoding."""

    version: int
    rendered_at: float
    parts: tuple[bytes, bytes]


def negotiate(accept: str) -> tuple[Format, str, Callable[[CollectorRegistry], bytes]]:
    """The format, content type and live-part encoder for a client's ``Accept``."""
    encoder, content_type = choose_encoder(accept)
    fmt: Format = (
        "openmetrics" if content_type.startswith("application/openmetrics-text") else "text"
    )
    return fmt, content_type, encoder


@dataclass
class ExpositionCache:
    """Serves ``/metrics`` from the prepared snapshot part plus a briefly cached live part."""

    live_registry: CollectorRegistry
    live_ttl: float = LIVE_TTL_SECONDS
    clock: Callable[[], float] = time.monotonic
    renders: int = 0
    live_renders: int = 0
    _encoded: EncodedSnapshot = field(default_factory=lambda: EncodedSnapshot.of(Snapshot()))
    _live: dict[tuple[Format, bool], _Live] = field(default_factory=dict)

    def prepare(self, snapshot: Snapshot) -> None:
        """Encode ``snapshot`` in every format; runs in a worker thread before the snapshot is
        published, so neither a scrape nor the event loop pays for encoding thousands of runs.
        """
        encoded = EncodedSnapshot.of(snapshot)
        self._encoded = encoded  # one assignment: a scrape sees the old part or the new
        self.renders += 1

    def body(self, accept: str, use_gzip: bool) -> tuple[bytes, str]:
        """The whole body in one piece (for tools and tests; the server sends the parts)."""
        parts, content_type = self.parts(accept, use_gzip)
        return b"".join(parts), content_type

    def parts(self, accept: str, use_gzip: bool) -> tuple[tuple[bytes, bytes], str]:
        """The body as the prepared run part and the live part, never joined into a copy,
        and its content type, for a client's ``Accept``, gzipped or not."""
        fmt, content_type, encoder = negotiate(accept)
        encoded = self._encoded
        now = self.clock()
        cached = self._live.get((fmt, use_gzip))
        if (
            cached is not None
            and cached.version == encoded.version
            and now - cached.rendered_at < self.live_ttl
        ):
            return cached.parts, content_type
        live = encoder(self.live_registry)
        self.live_renders += 1
        if use_gzip:
            live = gzip.compress(live, compresslevel=GZIP_LEVEL)
        parts = (encoded.bodies[(fmt, use_gzip)], live)
        self._live[(fmt, use_gzip)] = _Live(encoded.version, now, parts)
        return parts, content_type
