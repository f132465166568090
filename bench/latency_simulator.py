"""The simulator with a fixed delay before every ``/v1`` answer, and a count of connections.

Builds the app with ``exporter.simulator.build_app(CohereWorld(...))`` and puts a middleware in
front of it that sleeps ``--latency-ms`` before each API request, as a distant API would, and
records the peer address ``(host, port)`` of every API request: each distinct pair is one TCP
connection the client opened, so the count shows whether connections are kept alive.
``GET /bench/connections`` answers ``{"connections": N, "api_requests": M}``.

The clock is frozen by default (``--speed 0``), so statuses and steps do not change while the
benchmark runs and every poll cycle after the first one finds nothing new. With a frozen clock
every answer to a ``GET /v1`` request is the same each time it is asked, so the first one is
kept and sent again (after the simulator has counted, authenticated and checked faults as
usual): the bound of measurement 2 assumes an API that spends no CPU on this machine, and
building the step pages again would take as much of the two shared cores as the exporter does.

    python bench/latency_simulator.py --port 18043 --models 1000 --latency-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.service import stop_on_signals
from exporter.simulator import SimClock, build_app
from exporter.simulator.cohere import CohereWorld
from exporter.web.listener import listening

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ConnectionStats:
    peers: set[Any] = field(default_factory=set)
    api_requests: int = 0


STATS_KEY = web.AppKey("bench_connections", ConnectionStats)


def latency_middleware(seconds: float, stats: ConnectionStats) -> Any:
    @web.middleware
    async def delay(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1" or request.path.startswith("/v1/"):
            transport = request.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            stats.peers.add(peer if peer is None else tuple(peer))
            stats.api_requests += 1
            if seconds > 0:
                await asyncio.sleep(seconds)
        return await handler(request)

    return delay


async def connections(request: web.Request) -> web.Response:
    stats = request.app[STATS_KEY]
    return web.json_response({"connections": len(stats.peers), "api_requests": stats.api_requests})


def answer_cache() -> Any:
    """The innermost middleware: each ``GET /v1`` answer of 200 kept by path and query, and sent
    again without asking the world (only while the clock is frozen)."""
    answers: dict[str, tuple[str, bytes]] = {}

    @web.middleware
    async def cached(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "GET" or not request.path.startswith("/v1/"):
            return await handler(request)
        hit = answers.get(request.path_qs)
        if hit is not None:
            return web.Response(body=hit[1], headers={"Content-Type": hit[0]})
        response = await handler(request)
        if (
            isinstance(response, web.Response)
            and response.status == 200
            and isinstance(response.body, bytes)
        ):
            answers[request.path_qs] = (response.headers["Content-Type"], response.body)
        return response

    return cached


def build_latency_app(world: CohereWorld, latency_ms: float, *, cache: bool) -> web.Application:
    app = build_app(world)
    stats = ConnectionStats()
    app[STATS_KEY] = stats
    app.middlewares.insert(0, latency_middleware(latency_ms / 1000.0, stats))
    if cache:
        app.middlewares.append(answer_cache())  # after the simulator's own counting
    app.router.add_get("/bench/connections", connections)
    return app


async def serve(host: str, port: int, app: web.Application) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with listening(app, host, port):
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="simulated Cohere API with added latency")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--speed", type=float, default=0.0, help="simulated seconds per second; 0 freezes"
    )
    args = parser.parse_args(argv)
    clock = SimClock(speed=args.speed, frozen=args.speed == 0)
    world = CohereWorld(models=args.models, seed=args.seed, clock=clock)
    app = build_latency_app(world, args.latency_ms, cache=clock.frozen)
    asyncio.run(serve(args.host, args.port, app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
