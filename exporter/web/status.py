"""``/`` and ``/api/runs``: each rendered once per snapshot and selection, off the event loop.

A request reads the current snapshot; if the run part for that snapshot (and that ``?all``) is
cached, only the small per-request head (exporter health, request budgets, the time) is
rendered, and the answer is the head followed by the cached bytes. Otherwise the run part is
rendered in a worker thread (``asyncio.to_thread``) while the event loop goes on serving
scrapes; requests that arrive meanwhile wait for the same render, and a request that gives up
does not cancel it for the others. So a page of 2,000 runs costs one render per poll cycle, not
one per reader.

Gzip costs no more per request than the head: the cached part is also kept as a finished raw
deflate stream, and a request deflates its head with a sync flush (which ends on a byte
boundary without ending the stream) and splices the two into one gzip member. The CRC of the
whole is the cached part's bytes run on from the head's CRC.
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from exporter.core.snapshot import Snapshot
from exporter.upstream.budget import RequestBudget
from exporter.web.api import ProviderDoc, RunsDocument, head_json, runs_json
from exporter.web.assets import CONTENT_SECURITY_POLICY
from exporter.web.metrics import wants_gzip
from exporter.web.page import Budget, head_html, runs_html
from exporter.web.runs import Selection, select

SnapshotSource = Callable[[], Snapshot]
MIN_REFRESH_SECONDS: Final = 2.0
GZIP_LEVEL: Final = 6
#: A page asked for within this many refresh intervals is rendered ahead with each publication.
WATCHED_REFRESHES: Final = 3
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Rendered:
    """A cached run part: its bytes, the same as a finished raw deflate stream, and the
    selection it shows."""

    body: bytes
    deflated: bytes
    selection: Selection


def deflate_tail(data: bytes) -> bytes:
    """``data`` as a raw deflate stream that ends the stream (its last block is final)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)


def gzip_joined(head: bytes, tail: bytes, tail_deflated: bytes) -> bytes:
    """One gzip member of ``head + tail``, deflating only ``head``.

    A fresh compressor's sync flush ends ``head`` on a byte boundary with no final block; the
    tail's stream was started fresh too (no back references before it), so the concatenation
    is one valid deflate stream.
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = compressor.compress(head) + compressor.flush(zlib.Z_SYNC_FLUSH)
    crc = zlib.crc32(tail, zlib.crc32(head))
    size = (len(head) + len(tail)) & 0xFFFFFFFF
    return b"".join((_GZIP_HEADER, start, tail_deflated, struct.pack("<II", crc, size)))


def show_all(request: web.Request) -> bool:
    return request.query.get("all", "").lower() in {"1", "true", "yes"}


class RenderCache:
    """The newest render of each selection, keyed by the snapshot object it was made from.

    A selection someone has asked for within ``watched_seconds`` is rendered again with each
    publication, before the new snapshot is swapped in (``prepare``, in the publishing worker
    thread), so a page that reloads itself every poll interval finds its render ready instead
    of waiting for it. A selection nobody asked for that long is dropped then, and with it the
    snapshot it was made from.
    """

    def __init__(
        self,
        render: Callable[[Snapshot, bool], Rendered],
        watched_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self._watched_seconds = watched_seconds
        self._clock = clock
        self._entries: dict[bool, tuple[Snapshot, Rendered | asyncio.Future[Rendered]]] = {}
        self._asked: dict[bool, float] = {}
        self.renders = 0

    async def get(self, snapshot: Snapshot, all_runs: bool) -> Rendered:
        self._asked[all_runs] = self._clock()
        entry = self._entries.get(all_runs)
        if entry is None or entry[0] is not snapshot:
            self.renders += 1
            task = asyncio.ensure_future(asyncio.to_thread(self._render, snapshot, all_runs))
            task.add_done_callback(lambda done: self._forget_failure(all_runs, done))
            entry = (snapshot, task)
            self._entries[all_runs] = entry
        found = entry[1]
        if isinstance(found, Rendered):
            return found
        return await asyncio.shield(found)

    def prepare(self, snapshot: Snapshot) -> None:
        """Render the watched selections of ``snapshot`` (about to be published); forget the
        others."""
        now = self._clock()
        for all_runs in (False, True):
            asked = self._asked.get(all_runs)
            if asked is not None and now - asked <= self._watched_seconds:
                self.renders += 1
                self._entries[all_runs] = (snapshot, self._render(snapshot, all_runs))
            else:
                self._entries.pop(all_runs, None)

    def _forget_failure(self, all_runs: bool, task: asyncio.Future[Rendered]) -> None:
        """A render that failed is not kept: the next request tries again."""
        if task.cancelled() or task.exception() is not None:
            current = self._entries.get(all_runs)
            if current is not None and current[1] is task:
                del self._entries[all_runs]


class StatusPages:
    """The handlers of ``/`` and ``/api/runs`` over one snapshot source."""

    def __init__(
        self,
        snapshot_source: SnapshotSource,
        *,
        budgets: Mapping[str, RequestBudget] | None = None,
        telemetry_path: str = "/metrics",
        finished_runs: int = 50,
        refresh_seconds: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = snapshot_source
        self._budgets = dict(budgets or {})
        self._telemetry_path = telemetry_path
        self._finished_runs = finished_runs
        self.refresh_seconds = max(MIN_REFRESH_SECONDS, refresh_seconds)
        self._wall = wall_clock
        watched = WATCHED_REFRESHES * self.refresh_seconds
        self.pages = RenderCache(self._render_page, watched)
        self.documents = RenderCache(self._render_document, watched)

    def _select(self, snapshot: Snapshot, all_runs: bool) -> Selection:
        return select(snapshot, self._finished_runs, show_all=all_runs)

    def _render_page(self, snapshot: Snapshot, all_runs: bool) -> Rendered:
        selection = self._select(snapshot, all_runs)
        body = runs_html(snapshot, selection, self.refresh_seconds).encode()
        return Rendered(body, deflate_tail(body), selection)

    def _render_document(self, snapshot: Snapshot, all_runs: bool) -> Rendered:
        selection = self._select(snapshot, all_runs)
        body = runs_json(selection.runs)
        return Rendered(body, deflate_tail(body), selection)

    def prepare(self, snapshot: Snapshot) -> None:
        """Render ahead what readers are watching, for ``snapshot`` about to be published."""
        self.pages.prepare(snapshot)
        self.documents.prepare(snapshot)

    def budgets(self) -> dict[str, Budget]:
        """Each provider's budget now: the header's only part that changes between cycles."""
        return {
            name: Budget(b.per_minute, b.per_minute - b.remaining, b.hold_remaining)
            for name, b in self._budgets.items()
        }

    async def page(self, request: web.Request) -> web.Response:
        snapshot, all_runs = self._source(), show_all(request)
        rendered = await self.pages.get(snapshot, all_runs)
        head = head_html(
            snapshot,
            self.budgets(),
            telemetry_path=self._telemetry_path,
            refresh_seconds=self.refresh_seconds,
            show_all=all_runs,
            shown=len(rendered.selection.runs),
        ).encode()
        return _answer(request, head, rendered, "text/html; charset=utf-8", PAGE_HEADERS)

    async def document(self, request: web.Request) -> web.Response:
        snapshot, all_runs = self._source(), show_all(request)
        rendered = await self.documents.get(snapshot, all_runs)
        budgets = self.budgets()
        providers = []
        for part in snapshot.providers:
            budget = budgets.get(part.name)
            providers.append(
                ProviderDoc(
                    name=part.name,
                    up=part.up,
                    ready=part.ready,
                    last_cycle_at=part.finished_at,
                    poll_duration_seconds=part.poll_duration,
                    requests_per_minute=budget.per_minute if budget else None,
                    requests_used=budget.used if budget else None,
                )
            )
        head = head_json(
            RunsDocument(
                version=snapshot.version,
                generated_at=self._wall(),
                ready=snapshot.ready,
                all=all_runs,
                hidden_finished=rendered.selection.hidden_finished,
                providers=providers,
                runs=[],
            )
        )
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return _answer(request, head, rendered, "application/json", headers)

    def routes(self) -> list[tuple[str, Callable[[web.Request], Awaitable[web.Response]]]]:
        return [("/", self.page), ("/api/runs", self.document)]


def _answer(
    request: web.Request,
    head: bytes,
    rendered: Rendered,
    content_type: str,
    extra: Mapping[str, str],
) -> web.Response:
    headers = {"Content-Type": content_type, "Vary": "Accept-Encoding", **extra}
    if wants_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        body = gzip_joined(head, rendered.body, rendered.deflated)
    else:
        body = head + rendered.body
    return web.Response(body=body, headers=headers)
