"""An exporter wired to an in-process simulator, both on real loopback sockets.

The simulator's clock is frozen and the poller's monotonic clock is a ``ManualClock``, so tests
move time explicitly and drive poll cycles themselves: nothing waits on the wall clock.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from exporter.service import Exporter, new_session
from exporter.settings import load_settings
from exporter.simulator import FaultInjector, Scenario, SimClock, build_app
from exporter.simulator.cohere import CohereWorld
from exporter.upstream.client import RetryPolicy

API_KEY = "sk-sim-5e3b9c1d7a2f4e6b8c0d"
StepOrder = Literal["newest-first", "oldest-first"]


@dataclass
class ManualClock:
    """A monotonic clock that only moves when a test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Stack:
    world: CohereWorld
    sim_clock: SimClock
    poll_clock: ManualClock
    exporter: Exporter
    exporter_url: str
    sim_url: str
    http: aiohttp.ClientSession
    faults: FaultInjector
    sim_runner: web.AppRunner

    async def stop_simulator(self) -> None:
        """Close the simulated API's socket: later connections are refused."""
        await self.sim_runner.cleanup()

    async def scrape(self, path: str = "/metrics", **headers: str) -> aiohttp.ClientResponse:
        response = await self.http.get(self.exporter_url + path, headers=headers)
        await response.read()
        return response

    async def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample on /metrics keyed by name and label set."""
        response = await self.scrape()
        assert response.status == 200
        text = (await response.read()).decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return found


def model_sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, model_id: str
) -> float | None:
    return samples.get((name, frozenset({("finetuned_model_id", model_id)})))


def same_value(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@dataclass
class Served:
    url: str
    runner: web.AppRunner


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[Served]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield Served(f"http://{host}:{port}", runner)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def simulated_stack(
    *,
    models: int = 8,
    seed: int = 7,
    step_order: StepOrder = "newest-first",
    api_key: str = API_KEY,
    retry: RetryPolicy | None = None,
    scenario: Scenario | None = None,
    world: CohereWorld | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    if world is None:
        world = CohereWorld(
            models=models,
            seed=seed,
            clock=SimClock(speed=1.0, frozen=True),
            step_order=step_order,
            api_key=API_KEY,
            scenario=scenario,
        )
    sim_clock = world.clock
    poll_clock = ManualClock()
    faults = FaultInjector(seed=seed)
    async with serve_app(build_app(world, faults)) as sim:
        sim_url = sim.url
        settings = load_settings(
            cohere_api_url=sim_url,
            cohere_api_key=api_key,
            cohere_client_name="integration-tests",
            **overrides,
        )
        async with new_session(settings) as session, aiohttp.ClientSession() as http:
            exporter = Exporter(settings, session, monotonic=poll_clock, retry=retry)
            async with serve_app(exporter.app) as served:
                yield Stack(
                    world,
                    sim_clock,
                    poll_clock,
                    exporter,
                    served.url,
                    sim_url,
                    http,
                    faults,
                    sim.runner,
                )
