"""``/metrics`` bodies encoded once per snapshot, in every format, before a scrape asks.

Run data changes only when a snapshot is published; so publishing encodes the snapshot part
(``exporter.families``, written straight to text) in both formats Prometheus asks for (text
and OpenMetrics, each plain and gzipped) in a worker thread, and a scrape is a lookup. The two
formats share their sample bytes; only the family headers differ. A group of families whose
runs read the same as at the publication before keeps that publication's bytes, plain and
gzipped: a cycle with nothing new costs the last-success times, not the whole exposition.
Every name the exporter writes is a legal classic Prometheus name, so the ``escaping`` that an
``Accept`` header may ask for never changes the bytes: the cache key is the format alone.

The small live part (request counters, budget, process metrics) is encoded at most once per
``live_ttl`` (one second): fresher than any scrape interval, yet a burst of scrapers gets the
same bytes. A body is the run part's chunks and then the live part, whose OpenMetrics form
brings the one ``# EOF``. A gzip body is gzip members back to back (each family header, each
family's samples, the live part), which RFC 1952 allows and every decoder used by Prometheus
reads as one stream.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter.contract import Family
from exporter.core.snapshot import Snapshot
from exporter.encoding import FORMATS, Block, Format, header
from exporter.families import (
    CONCERNS,
    Concern,
    merge,
    provider_blocks,
    provider_snapshots,
    run_labels_of,
)

#: What Prometheus 3 sends by default: OpenMetrics first, so this is the format to have ready.
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
GZIP_LEVEL = 6
#: Run parts up to this size are also kept joined, so a scrape writes them in one piece.
JOINED_BODY_BYTES = 1024 * 1024
LIVE_TTL_SECONDS = 1.0


def gzipped(chunks: Iterable[bytes]) -> bytes:
    """One gzip member of the chunks, compressed as they come (no joined copy of the body)."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    out = [packer.compress(chunk) for chunk in chunks]
    out.append(packer.flush())
    return b"".join(out)


@dataclass(frozen=True)
class EncodedConcern:
    """One concern's families as last written: what they read of each run, and their bytes.

    Each block's samples are one gzip member of their own, shared by both formats like the
    plain samples, so a family kept from one publication to the next keeps its gzip too.
    """

    reads: list[object] | None
    blocks: tuple[Block, ...]
    zipped: tuple[bytes, ...]

    @staticmethod
    def of(
        concern: Concern,
        snapshot: Snapshot,
        run_labels: Callable[[], Mapping[int, str]],
        previous: EncodedConcern | None,
    ) -> EncodedConcern:
        reads = None
        if concern.reads is not None:
            read = concern.reads
            reads = [value for view in snapshot.runs for value in read(view)]
            if previous is not None and previous.reads == reads:
                return previous
        blocks = tuple(b for b in concern.write(snapshot, run_labels()) if b is not None)
        return EncodedConcern(reads, blocks, tuple(gzipped([b.samples]) for b in blocks))


HeaderKey = tuple[str, str, Format]
Concerns = tuple[EncodedConcern, ...]


@dataclass(frozen=True)
class EncodedSnapshot:
    """One snapshot's run part in every format a scrape may ask for.

    Each concern is written per provider (``provider_snapshots``), so a publication by one
    provider keeps the other's bytes. A body is each family's header (per format) followed by
    every provider's sample bytes of it (shared by the formats); gzipped, each of those is a
    gzip member, which RFC 1952 allows back to back.
    """

    version: int
    health: EncodedConcern
    by_provider: Mapping[str, Concerns]
    headers: Mapping[HeaderKey, tuple[bytes, bytes]]  # plain and gzipped
    plain: dict[Format, tuple[bytes, ...]]
    zipped: dict[Format, tuple[bytes, ...]]

    @property
    def concerns(self) -> tuple[EncodedConcern, ...]:
        """Every encoded concern: the health part, then each provider's."""
        return (self.health, *(item for part in self.by_provider.values() for item in part))

    @staticmethod
    def of(snapshot: Snapshot, previous: EncodedSnapshot | None = None) -> EncodedSnapshot:
        before = previous.by_provider if previous is not None else {}
        by_provider = {
            part.providers[0].name: _encode_part(part, before.get(part.providers[0].name, ()))
            for part in provider_snapshots(snapshot)
        }
        no_run_labels = dict  # the health families are per provider, not per run
        health = EncodedConcern.of(
            PROVIDERS, snapshot, no_run_labels, previous.health if previous is not None else None
        )
        sections = [[(health.blocks, health.zipped)]] + [
            [(part[i].blocks, part[i].zipped) for part in by_provider.values()]
            for i in range(len(CONCERNS))
        ]
        known = previous.headers if previous is not None else {}
        headers: dict[HeaderKey, tuple[bytes, bytes]] = {}
        plain: dict[Format, tuple[bytes, ...]] = {}
        zipped: dict[Format, tuple[bytes, ...]] = {}
        for fmt in FORMATS:
            plain_parts: list[bytes] = []
            zipped_parts: list[bytes] = []
            for section in sections:
                lists = [blocks for blocks, _ in section]
                for family, help_text, positions in merge(lists):
                    key = (family.name, help_text, fmt)
                    if key not in headers:
                        headers[key] = known.get(key) or _header(family, help_text, fmt)
                    text, packed = headers[key]
                    plain_parts.append(text)
                    zipped_parts.append(packed)
                    for i, k in positions:
                        plain_parts.append(section[i][0][k].samples)
                        zipped_parts.append(section[i][1][k])
            plain[fmt], zipped[fmt] = _served(plain_parts), _served(zipped_parts)
        return EncodedSnapshot(snapshot.version, health, by_provider, headers, plain, zipped)


def _served(parts: list[bytes]) -> tuple[bytes, ...]:
    """The parts as a scrape gets them: joined when the body is small, as they are otherwise.

    A body of a few hundred kilobytes in a hundred parts costs a scrape more in writes than in
    bytes; joined once per publication (at most ``JOINED_BODY_BYTES`` more per format and
    encoding) it goes out like a static file's. A large body stays in its parts, which the
    next publication shares instead of copying.
    """
    if sum(len(part) for part in parts) <= JOINED_BODY_BYTES:
        return (b"".join(parts),)
    return tuple(parts)


def _encode_part(part: Snapshot, before: Concerns) -> Concerns:
    """One provider's concerns, each kept from ``before`` where its runs read the same."""
    labelled: list[Mapping[int, str]] = []

    def run_labels() -> Mapping[int, str]:  # written once, and only if a family needs them
        if not labelled:
            labelled.append(run_labels_of(part))
        return labelled[0]

    return tuple(
        EncodedConcern.of(concern, part, run_labels, before[i] if i < len(before) else None)
        for i, concern in enumerate(CONCERNS)
    )


def _header(family: Family, help_text: str, fmt: Format) -> tuple[bytes, bytes]:
    text = header(family, help_text, fmt).encode()
    return text, gzipped([text])


PROVIDERS = Concern(lambda snapshot, _: provider_blocks(snapshot), None)


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
        encoded = EncodedSnapshot.of(snapshot, self._encoded)
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
            parts: tuple[bytes, ...] = (*encoded.zipped[fmt], gzipped([live]))
        else:
            parts = (*encoded.plain[fmt], live)
        self._live[(fmt, use_gzip)] = _Live(encoded.version, now, parts)
        return parts, content_type
