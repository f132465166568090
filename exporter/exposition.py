"""``/metrics`` bodies encoded once per snapshot, in every format, before a scrape asks.

Run data changes only when a snapshot is published; so publishing encodes the snapshot part
(``exporter.families``, written straight to text) in both formats Prometheus asks for (text
and OpenMetrics, each plain and gzipped) in a worker thread, and a scrape is a lookup. The two
plain bodies share their sample bytes; only the family headers differ.
Every name the exporter writes is a legal classic Prometheus name, so the ``escaping`` that an
``Accept`` header may ask for never changes the bytes: the cache key is the format alone.

The small live part (request counters, budget, process metrics) is encoded at most once per
``live_ttl`` (one second): fresher than any scrape interval, yet a burst of scrapers gets the
same bytes. A body is the run part's chunks and then the live part, whose OpenMetrics form
brings the one ``# EOF``. Gzip bodies are two gzip members back to back, which RFC 1952 allows and
every decoder used by Prometheus reads as one stream.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter.core.snapshot import Snapshot
from exporter.encoding import FORMATS, Format, chunks
from exporter.families import blocks_for

#: What Prometheus 3 sends by default: OpenMetrics first, so this is the format to have ready.
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
GZIP_LEVEL = 6
LIVE_TTL_SECONDS = 1.0


def gzipped(chunks: Iterable[bytes]) -> bytes:
    """One gzip member of the chunks, compressed as they come (no joined copy of the body)."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    out = [packer.compress(chunk) for chunk in chunks]
    out.append(packer.flush())
    return b"".join(out)


@dataclass(frozen=True)
class EncodedSnapshot:
    """One snapshot's run part in every format a scrape may ask for.

    The plain bodies are chunks, each family's header followed by its sample bytes, which the
    two formats share; the gzipped bodies are one member each.
    """

    version: int
    plain: dict[Format, tuple[bytes, ...]]
    zipped: dict[Format, bytes]

    @staticmethod
    def of(snapshot: Snapshot) -> EncodedSnapshot:
        families = blocks_for(snapshot)
        plain = {fmt: tuple(chunks(families, fmt)) for fmt in FORMATS}
        return EncodedSnapshot(
            snapshot.version, plain, {fmt: gzipped(plain[fmt]) for fmt in FORMATS}
        )


@dataclass
class _Live:
    """The live part as last encoded for one format and encoding."""

    version: int
    rendered_at: float
    parts: tuple[bytes, ...]


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

    def parts(self, accept: str, use_gzip: bool) -> tuple[tuple[bytes, ...], str]:
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
            parts: tuple[bytes, ...] = (encoded.zipped[fmt], gzipped([live]))
        else:
            parts = (*encoded.plain[fmt], live)
        self._live[(fmt, use_gzip)] = _Live(encoded.version, now, parts)
        return parts, content_type
