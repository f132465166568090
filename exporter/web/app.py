"""The exporter's routes: ``/metrics``, the status page and its JSON, and the two probes.

Handlers read the exposition cache (bytes encoded when the snapshot was published), the
status pages' render cache and the current snapshot: nothing here waits on an upstream API,
so a slow or dead API never slows a scrape or the page.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.exposition import ExpositionCache
from exporter.upstream.budget import RequestBudget
from exporter.web.metrics import MetricsEndpoint
from exporter.web.status import SnapshotSource, StatusPages

__all__ = ["STATUS_PAGES", "SnapshotSource", "build_web_app"]
#: The status pages of an application, for tests that count renders.
STATUS_PAGES = web.AppKey("status_pages", StatusPages)


def build_web_app(
    cache: ExpositionCache,
    snapshot_source: SnapshotSource,
    *,
    telemetry_path: str = "/metrics",
    middlewares: tuple[Middleware, ...] = (),
    budgets: Mapping[str, RequestBudget] | None = None,
    finished_runs: int = 50,
    refresh_seconds: float = 60.0,
) -> web.Application:
    """The application; ``budgets``, ``finished_runs`` (``--ui.finished-runs``) and
    ``refresh_seconds`` (``--poll.interval``) are what the status page shows and how often it
    reloads itself."""
    pages = StatusPages(
        snapshot_source,
        budgets=budgets,
        telemetry_path=telemetry_path,
        finished_runs=finished_runs,
        refresh_seconds=refresh_seconds,
    )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if snapshot_source().ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="waiting for the first poll cycle\n")

    app = web.Application(middlewares=list(middlewares))
    app[STATUS_PAGES] = pages
    app.router.add_get(telemetry_path, MetricsEndpoint(cache).handle)
    for path, handler in pages.routes():
        app.router.add_get(path, handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
