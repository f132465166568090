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
from exporter.simulator import FaultInjector, Scenario, SimClock, build_app, new_world
from exporter.simulator.cohere import CohereWorld
from exporter.simulator.providers import AnyWorld
from exporter.upstream.client import RetryPolicy
from exporter.web.listener import Listener, listening

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
class Simulated:
    """One provider's simulated API as a test reaches it."""

    world: AnyWorld
    faults: FaultInjector
    url: str
    serving: contextlib.AsyncExitStack  # closing it shuts the simulated API down


@dataclass
class Stack:
    sims: dict[str, Simulated]
    poll_clock: ManualClock
    exporter: Exporter
    exporter_url: str
    http: aiohttp.ClientSession

    def sim(self, provider: str) -> Simulated:
        return self.sims[provider]

    @property
    def world(self) -> Any:
        """The world of a stack with one provider (most tests)."""
        (only,) = self.sims.values()
        return only.world

    @property
    def faults(self) -> FaultInjector:
        (only,) = self.sims.values()
        return only.faults

    @property
    def sim_url(self) -> str:
        (only,) = self.sims.values()
        return only.url

    @property
    def sim_clock(self) -> SimClock:
        clocks = {id(sim.world.clock): sim.world.clock for sim in self.sims.values()}
        (clock,) = clocks.values()
        return clock

    async def stop_simulator(self, provider: str | None = None) -> None:
        """Close a simulated API's socket: later connections are refused."""
        name = provider or next(iter(self.sims))
        await self.sims[name].serving.aclose()

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


def run_labels(run_id: str, provider: str = "cohere", **extra: str) -> frozenset[tuple[str, str]]:
    """The label set of a run's series (plus ``extra`` labels such as ``metric``)."""
    return frozenset({("provider", provider), ("finetune_id", run_id), *extra.items()})


def model_sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    model_id: str,
    provider: str = "cohere",
) -> float | None:
    return samples.get((name, run_labels(model_id, provider)))


def same_value(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[Listener]:
    """``app`` on a free loopback port, through the exporter's one way of listening."""
    async with listening(app, "127.0.0.1", 0) as listener:
        yield listener


@contextlib.asynccontextmanager
async def simulated_stack(
    *,
    providers: tuple[str, ...] = ("cohere",),
    models: int = 8,
    seed: int = 7,
    step_order: StepOrder = "newest-first",
    api_key: str = API_KEY,
    retry: RetryPolicy | None = None,
    scenario: Scenario | None = None,
    world: AnyWorld | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """The exporter polling the simulated API of each of ``providers`` (or of ``world``'s
    provider), every simulator on one frozen clock and the poller on a ``ManualClock``."""
    clock = world.clock if world is not None else SimClock(speed=1.0, frozen=True)
    worlds: dict[str, AnyWorld] = {}
    if world is not None:
        worlds[provider_of(world)] = world
    else:
        for name in providers:
            worlds[name] = new_world(
                name,
                runs=models,
                seed=seed,
                clock=clock,
                api_key=API_KEY,
                scenario=scenario,
                step_order=step_order,
            )
    async with contextlib.AsyncExitStack() as stack:
        sims: dict[str, Simulated] = {}
        for name, made in worlds.items():
            faults = FaultInjector(seed=seed)
            serving = await stack.enter_async_context(contextlib.AsyncExitStack())
            served = await serving.enter_async_context(serve_app(build_app(made, faults)))
            sims[name] = Simulated(made, faults, served.url, serving)
        access: dict[str, Any] = {"cohere_client_name": "integration-tests"}
        for name, sim in sims.items():
            access[f"{name}_api_url"] = sim.url
            access[f"{name}_api_key"] = api_key
        settings = load_settings(**access, **overrides)
        session = await stack.enter_async_context(new_session(settings))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        poll_clock = ManualClock()
        exporter = Exporter(settings, session, monotonic=poll_clock, retry=retry)
        served = await stack.enter_async_context(serve_app(exporter.app))
        yield Stack(sims, poll_clock, exporter, served.url, http)


def provider_of(world: AnyWorld) -> str:
    return "cohere" if isinstance(world, CohereWorld) else "together"
