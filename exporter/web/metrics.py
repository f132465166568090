"""``/metrics``: the prepared bytes for the client's format, written so slow readers stay cheap.

A large body goes out in chunks, each written once the previous one has drained: handing the
transport the whole body would give every slow scraper a copy of its own. What a slow reader
can still hold on to is bounded twice: at most ``MAX_STREAMS`` large bodies are being written
at once (a further scraper gets 503 with ``Retry-After``), and a body that has not been taken
within ``WRITE_DEADLINE_SECONDS`` is abandoned and its connection closed, so no reader keeps
an old snapshot's bytes alive for longer than that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator

from aiohttp import web

from exporter.exposition import ExpositionCache

log = logging.getLogger(__name__)
WRITE_CHUNK_BYTES = 256 * 1024
#: Small parts are joined into writes of at most this, below glibc's mapping threshold.
JOIN_BYTES = 64 * 1024
MAX_STREAMS = 16
WRITE_DEADLINE_SECONDS = 30.0


def wants_gzip(accept_encoding: str) -> bool:
    """True when the client lists gzip without ``q=0``."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in {"gzip", "*"}:
            return params.replace(" ", "").lower() not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


def write_chunks(parts: Iterable[bytes]) -> Iterator[bytes | memoryview]:
    """The parts as few writes: a large part in slices of itself (no copy), small ones joined
    into writes of at most ``JOIN_BYTES``. A hundred gzip members are a few writes, not a
    hundred sends; and a joined write stays below the size at which the C library maps fresh
    pages for it (exporter.core.heap), which would cost more than the sends it saves."""
    pending: list[bytes] = []
    pending_bytes = 0
    for part in parts:
        if pending and pending_bytes + len(part) > JOIN_BYTES:
            yield b"".join(pending)
            pending, pending_bytes = [], 0
        if len(part) >= JOIN_BYTES:
            view = memoryview(part)
            for start in range(0, len(part), WRITE_CHUNK_BYTES):
                yield view[start : start + WRITE_CHUNK_BYTES]
            continue
        pending.append(part)
        pending_bytes += len(part)
    if pending:
        yield b"".join(pending)


class MetricsEndpoint:
    """The ``/metrics`` handler over one exposition cache."""

    def __init__(self, cache: ExpositionCache) -> None:
        self._cache = cache
        self.streaming = 0
        self.abandoned = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        use_gzip = wants_gzip(request.headers.get("Accept-Encoding", ""))
        parts, content_type = self._cache.parts(request.headers.get("Accept", ""), use_gzip)
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
        length = sum(len(part) for part in parts)
        if length <= JOIN_BYTES:
            return web.Response(body=b"".join(parts), headers=headers)
        if length <= WRITE_CHUNK_BYTES:  # too small to count against MAX_STREAMS
            return await self._stream(request, parts, headers, length)
        if self.streaming >= MAX_STREAMS:
            return web.Response(
                status=503,
                text=f"more than {MAX_STREAMS} scrapes in flight; retry\n",
                headers={"Retry-After": "1"},
            )
        self.streaming += 1
        try:
            return await self._stream(request, parts, headers, length)
        finally:
            self.streaming -= 1

    async def _stream(
        self,
        request: web.Request,
        parts: tuple[bytes, ...],
        headers: dict[str, str],
        length: int,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        response.content_length = length
        try:
            async with asyncio.timeout(WRITE_DEADLINE_SECONDS):
                await response.prepare(request)
                for chunk in write_chunks(parts):
                    await response.write(chunk)
                await response.write_eof()
        except TimeoutError:
            self.abandoned += 1
            log.debug("a scrape was too slow to read its body; its connection is closed")
            if request.transport is not None:
                request.transport.abort()
        return response
