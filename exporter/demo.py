"""``demo``: every provider's simulator and the exporter in one process, on loopback, no key.

A new simulated run starts at each provider every ``NEW_RUN_SECONDS`` so that the demo always
has runs in training to watch, however long it is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Literal

from pydantic import SecretStr

from exporter.service import serve
from exporter.settings import PROVIDERS, Settings
from exporter.simulator import FaultInjector, Scenario, SimClock, build_app, new_world
from exporter.simulator.providers import AnyWorld
from exporter.web.listener import listening

log = logging.getLogger(__name__)
NEW_RUN_SECONDS = 45.0
DEMO_KEY = SecretStr("demo")


async def keep_runs_coming(provider: str, world: AnyWorld) -> None:
    while True:
        await asyncio.sleep(NEW_RUN_SECONDS)
        run_id = world.add_run()
        log.info(
            "simulator started a new fine-tuning run", extra={"provider": provider, "run": run_id}
        )


@contextlib.asynccontextmanager
async def simulated(world: AnyWorld, faults: FaultInjector | None) -> AsyncIterator[int]:
    """Serve ``world`` on a free loopback port for as long as the block runs."""
    async with listening(build_app(world, faults), "127.0.0.1", 0) as listener:
        yield int(listener.addresses[0][1])


async def demo(
    settings: Settings,
    *,
    runs: int,
    seed: int,
    speed: float,
    step_order: str,
    scenario: Scenario | None = None,
    faults: Mapping[str, FaultInjector] | None = None,
) -> None:
    order: Literal["newest-first", "oldest-first"] = (
        "oldest-first" if step_order == "oldest-first" else "newest-first"
    )
    worlds = {
        name: new_world(
            name,
            runs=runs,
            seed=seed,
            clock=SimClock(speed=speed),
            scenario=scenario,
            step_order=order,
        )
        for name in PROVIDERS
    }
    async with contextlib.AsyncExitStack() as stack:
        ports = {
            name: await stack.enter_async_context(simulated(world, (faults or {}).get(name)))
            for name, world in worlds.items()
        }
        demo_settings = settings.model_copy(
            update={
                "providers": (),
                "cohere_api_url": f"http://127.0.0.1:{ports['cohere']}",
                "cohere_api_key": DEMO_KEY,
                "cohere_models": (),
                "together_api_url": f"http://127.0.0.1:{ports['together']}",
                "together_api_key": DEMO_KEY,
                "together_jobs": (),
            }
        )
        announce(demo_settings, worlds, ports, speed)
        adders = [
            asyncio.create_task(keep_runs_coming(name, world)) for name, world in worlds.items()
        ]
        try:
            await serve(demo_settings)
        finally:
            for adder in adders:
                adder.cancel()
            await asyncio.gather(*adders, return_exceptions=True)


def announce(
    settings: Settings, worlds: Mapping[str, AnyWorld], ports: Mapping[str, int], speed: float
) -> None:
    """Tell the user where to look, on stderr (stdout may be piped)."""
    host, listen_port = settings.listen
    shown = host if host not in (None, "", "0.0.0.0", "::") else "localhost"
    simulated_apis = ", ".join(
        f"{len(world.run_ids())} {name} runs on 127.0.0.1:{ports[name]}"
        for name, world in worlds.items()
    )
    print(
        f"demo: simulated fine-tuning at {speed}x speed ({simulated_apis});\n"
        f"      runs and curves at http://{shown}:{listen_port}/, metrics at "
        f"http://{shown}:{listen_port}{settings.web_telemetry_path} - Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
