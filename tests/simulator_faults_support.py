"""Simulators with injected faults on loopback HTTP, for the tests that play their client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from exporter.simulator import Fault, FaultInjector, SimClock, build_app
from exporter.simulator.cohere import CohereWorld

START = 1_700_000_000.0
MODELS = "/v1/finetuning/finetuned-models"
DEADLINE = 10.0  # seconds; only ever a bound on waiting for something that must happen


@dataclass
class Tracker:
    """Server-side signals: each API request reaching the app and its handler returning."""

    events: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)

    async def wait(self, phase: str, path: str) -> None:
        async with asyncio.timeout(DEADLINE):
            while await self.events.get() != (phase, path):
                pass


@dataclass
class Sim:
    world: CohereWorld
    faults: FaultInjector
    tracker: Tracker
    base: str
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.base + path

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.url(path), **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str, **kwargs: Any) -> Any:
        status, body = await self.call("GET", path, **kwargs)
        assert status == 200, body
        return body

    def steps_path(self, index: int = 0) -> str:
        return f"{MODELS}/{self.world.model_ids()[index]}/training-step-metrics"


SimFactory = Callable[..., Awaitable[Sim]]


def tracking(tracker: Tracker) -> Any:
    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        tracker.events.put_nowait(("started", request.path))
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            tracker.events.put_nowait(("finished", request.path))

    return track


@contextlib.asynccontextmanager
async def sim_servers() -> AsyncIterator[SimFactory]:
    """Starts simulators with faults on loopback; every one stopped on leaving."""
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(
        *faults: Fault, handler_cancellation: bool = False, seed: int = 0, **world_args: Any
    ) -> Sim:
        world_args.setdefault("models", 4)
        world = CohereWorld(clock=SimClock(start_unix=START, frozen=True), **world_args)
        injector = FaultInjector(faults, seed=seed)
        tracker = Tracker()
        app = build_app(world, injector)
        app.middlewares.insert(0, tracking(tracker))
        runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return Sim(world, injector, tracker, f"http://{host}:{port}", session)

    try:
        yield start
    finally:
        await session.close()
        for runner in runners:
            await runner.cleanup()
