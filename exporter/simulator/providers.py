"""One entry point for every simulated provider: build its world, its app, or serve it.

Callers that do not care which API they simulate (the command line, benchmarks, tests that run
against each provider) go through ``new_world`` and ``build_app``; ``PROVIDERS`` names the
choices.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Literal

from aiohttp import web

from exporter.simulator.clock import SimClock
from exporter.simulator.cohere import CohereWorld, StepOrder, build_cohere_app
from exporter.simulator.faults import FaultInjector
from exporter.simulator.scenario import Scenario
from exporter.simulator.together import TogetherWorld, build_together_app

log = logging.getLogger(__name__)

Provider = Literal["cohere", "together"]
PROVIDERS: Final = ("cohere", "together")
AnyWorld = CohereWorld | TogetherWorld


def new_world(
    provider: str,
    *,
    runs: int,
    seed: int,
    clock: SimClock,
    api_key: str | None = None,
    scenario: Scenario | None = None,
    step_order: StepOrder = "newest-first",
) -> AnyWorld:
    """A simulated account of ``provider`` with ``runs`` runs (or the scenario's).

    ``step_order`` is Cohere's (how its step pages are ordered); Together's metrics are always
    chronological, so a Together world ignores it.
    """
    if provider == "cohere":
        return CohereWorld(
            models=runs,
            seed=seed,
            clock=clock,
            step_order=step_order,
            api_key=api_key,
            scenario=scenario,
        )
    if provider == "together":
        return TogetherWorld(jobs=runs, seed=seed, clock=clock, api_key=api_key, scenario=scenario)
    raise ValueError(f"unknown provider {provider!r}: expected one of {', '.join(PROVIDERS)}")


def build_app(world: AnyWorld, faults: FaultInjector | None = None) -> web.Application:
    """The aiohttp application serving ``world`` with its provider's API and ``/simulator/*``."""
    if isinstance(world, CohereWorld):
        return build_cohere_app(world, faults)
    if isinstance(world, TogetherWorld):
        return build_together_app(world, faults)
    raise TypeError(f"no simulated API serves a {type(world).__name__}")


async def run_simulator(
    host: str, port: int, world: AnyWorld, faults: FaultInjector | None = None
) -> None:
    """Serve ``world`` (with ``faults``, if given) on ``host:port`` until cancelled."""
    from exporter.web.listener import listening  # the exporter's one way of listening

    async with listening(build_app(world, faults), host, port):
        log.info("simulated %s API listening on http://%s:%d", _name(world), host, port)
        await asyncio.Event().wait()


def _name(world: AnyWorld) -> str:
    return "Cohere" if isinstance(world, CohereWorld) else "Together AI"
