"""``/metrics`` bodies rendered once per snapshot, not once per scrape.

Model data changes only when a poll cycle ends, yet encoding 10,000 series costs hundreds of
milliseconds; so the snapshot part is encoded (and gzipped) once per snapshot version and
reused, and only the small live part (request counters, budget, process metrics) is encoded
per scrape. Text bodies are the two parts back to back; OpenMetrics bodies drop the first
part's ``# EOF``. Gzip bodies are two gzip members back to back, which RFC 1952 allows and
every decoder used by Prometheus reads as one stream.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

GZIP_LEVEL = 6
OPENMETRICS_EOF = b"# EOF\n"


@dataclass
class _Rendered:
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
    """Builds ``/metrics`` bodies from a cached snapshot part and a fresh live part."""

    snapshot_registry: CollectorRegistry
    live_registry: CollectorRegistry
    version: Callable[[], int]
    renders: int = 0
    _cache: dict[str, _Rendered] = field(default_factory=dict)

    def body(self, accept: str, use_gzip: bool) -> tuple[bytes, str]:
        """The body and its content type for a client's ``Accept``, gzipped or not."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        key = "openmetrics" if openmetrics else "text"
        version = self.version()
        cached = self._cache.get(key)
        if cached is None or cached.version != version:
            plain = encoder(self.snapshot_registry)
            if openmetrics:
                plain = plain.removesuffix(OPENMETRICS_EOF)
            cached = self._cache[key] = _Rendered(version, plain)
            self.renders += 1
        live = encoder(self.live_registry)
        if use_gzip:
            return cached.gzipped() + gzip.compress(live, compresslevel=GZIP_LEVEL), content_type
        return cached.plain + live, content_type
