"""The exporter's routes: ``/metrics``, a landing page, and the two probes.

Handlers read the exposition cache (bytes encoded when the snapshot was published) and the
current snapshot: nothing here waits on an upstream API, so a slow or dead API never slows a
scrape.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter import __version__
from exporter.core.snapshot import Snapshot
from exporter.exposition import ExpositionCache
from exporter.web.metrics import MetricsEndpoint

SnapshotSource = Callable[[], Snapshot]


def landing_page(snapshot: Snapshot, telemetry_path: str) -> str:
    rows = "\n".join(
        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            html.escape(m.run.name or "?"),
            html.escape(m.id),
            html.escape(("" if m.missing else m.run.status).removeprefix("STATUS_") or "unknown"),
            "-" if m.newest_step is None else m.newest_step.number,
            "up" if m.up else "down",
        )
        for m in snapshot.runs
    )
    path = html.escape(telemetry_path.lstrip("/"), quote=True)  # relative: works behind a prefix
    api = "reachable" if all(p.up for p in snapshot.providers) else "not reached"
    state = "ready" if snapshot.ready else "waiting for the first poll cycle"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cohere fine-tune exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}</style>
</head><body>
<h1>Cohere fine-tune exporter</h1>
<p>Version {html.escape(__version__)}; {state}; API {api}.</p>
<p><a href="{path}">Metrics</a> &middot; <a href="healthz">Health</a> &middot;
<a href="readyz">Readiness</a></p>
<h2>Polled models ({len(snapshot.runs)})</h2>
<table><tr><th>Name</th><th>ID</th><th>Status</th><th>Newest step</th><th>Poll</th></tr>
{rows}
</table></body></html>
"""


def build_web_app(
    cache: ExpositionCache,
    snapshot_source: SnapshotSource,
    *,
    telemetry_path: str = "/metrics",
    middlewares: tuple[Middleware, ...] = (),
) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        page = landing_page(snapshot_source(), telemetry_path)
        return web.Response(text=page, content_type="text/html")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if snapshot_source().ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="waiting for the first poll cycle\n")

    app = web.Application(middlewares=list(middlewares))
    app.router.add_get(telemetry_path, MetricsEndpoint(cache).handle)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
