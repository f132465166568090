"""``demo``: the simulator and the exporter in one process, on loopback, with no key.

A new simulated run starts every ``NEW_RUN_SECONDS`` so that the demo always has a model in
training to watch, however long it is left running.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Literal

from aiohttp import web
from pydantic import SecretStr

from exporter.service import serve
from exporter.settings import Settings
from exporter.simulator import FaultInjector, Scenario, SimClock, build_app
from exporter.simulator.cohere import CohereWorld

log = logging.getLogger(__name__)
NEW_RUN_SECONDS = 45.0


async def keep_runs_coming(world: CohereWorld) -> None:
    while True:
        await asyncio.sleep(NEW_RUN_SECONDS)
        model_id = world.add_model()
        log.info("simulator started a new fine-tuning run", extra={"model": model_id})


async def demo(
    settings: Settings,
    *,
    models: int,
    seed: int,
    speed: float,
    step_order: str,
    scenario: Scenario | None = None,
    faults: FaultInjector | None = None,
) -> None:
    order: Literal["newest-first", "oldest-first"] = (
        "oldest-first" if step_order == "oldest-first" else "newest-first"
    )
    world = CohereWorld(
        models=models,
        seed=seed,
        clock=SimClock(speed=speed),
        step_order=order,
        scenario=scenario,
    )
    runner = web.AppRunner(build_app(world, faults), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    demo_settings = settings.model_copy(
        update={
            "cohere_api_url": f"http://127.0.0.1:{port}",
            "cohere_api_key": SecretStr("demo"),
            "cohere_models": (),
        }
    )
    host, listen_port = demo_settings.listen
    shown = host if host not in (None, "", "0.0.0.0", "::") else "localhost"
    count = len(world.model_ids())
    print(
        f"demo: {count} simulated fine-tuning runs at {speed}x speed (simulated API on "
        f"127.0.0.1:{port});\n      metrics at http://{shown}:{listen_port}"
        f"{demo_settings.web_telemetry_path}, overview at http://{shown}:{listen_port}/ "
        "- Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    adder = asyncio.create_task(keep_runs_coming(world))
    try:
        await serve(demo_settings)
    finally:
        adder.cancel()
        await asyncio.gather(adder, return_exceptions=True)
        await runner.cleanup()
