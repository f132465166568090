"""The example scenario served over real loopback HTTP: the spike and the NaN on the step pages."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exporter.simulator import (
    Scenario,
    ScriptedModel,
    SimClock,
    build_app,
    load_scenario,
)
from exporter.simulator.cohere import CohereWorld, StepOrder

pytestmark = pytest.mark.integration

START = 1_700_000_000.0
MODELS = "/v1/finetuning/finetuned-models"


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"bare {name} token in a JSON body")


@dataclass
class Served:
    world: CohereWorld
    clock: SimClock
    base: str
    session: aiohttp.ClientSession

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items()}
        async with self.session.get(self.base + path, params=query) as resp:
            text = await resp.text()
            assert resp.status == 200, text
            return json.loads(text, parse_constant=_reject_constant)

    async def ids_by_name(self) -> dict[str, str]:
        body = await self.get(MODELS, page_size=1000)
        return {m["name"]: m["id"] for m in body.get("finetuned_models", [])}

    async def steps(self, model_id: str) -> dict[int, dict[str, Any]]:
        """Every visible step of the model, from all pages, by step number."""
        out: dict[int, dict[str, Any]] = {}
        token = ""
        while True:
            params: dict[str, Any] = {"page_size": 7}
            if token:
                params["page_token"] = token
            body = await self.get(f"{MODELS}/{model_id}/training-step-metrics", **params)
            for item in body.get("step_metrics", []):
                out[item.get("step_number", 0)] = item["metrics"]
            token = body.get("next_page_token", "")
            if not token:
                return out


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = SimClock(start_unix=START, frozen=True)
    world = CohereWorld(clock=clock, scenario=load_scenario("spike-and-healthy"))
    server = TestServer(build_app(world), host="127.0.0.1", port=0)
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        yield Served(world, clock, str(server.make_url("")).rstrip("/"), session)
    finally:
        await session.close()
        await server.close()


async def test_example_scenario_is_served(served: Served) -> None:
    ids = await served.ids_by_name()
    assert set(ids) == {"spiky-run", "healthy-run", "finished-run", "nan-run"}
    body = await served.get(MODELS)
    statuses = {m["name"]: m["status"] for m in body["finetuned_models"]}
    assert statuses["finished-run"] == "STATUS_READY"
    assert statuses["spiky-run"] == "STATUS_QUEUED"
    assert body["total_size"] == 4
    truth = await served.get("/simulator/truth")
    assert {m["name"]: m["step_count"] for m in truth["runs"]} == {
        "finished-run": 51,
        "spiky-run": 0,
        "healthy-run": 0,
        "nan-run": 0,
    }
    served.clock.advance(500)
    truth = await served.get("/simulator/truth")
    assert {m["name"]: m["status"] for m in truth["runs"]} == dict.fromkeys(
        ["finished-run", "spiky-run", "healthy-run", "nan-run"], "STATUS_READY"
    )


async def test_step_pages_show_the_spike(served: Served) -> None:
    ids = await served.ids_by_name()
    served.clock.advance(5 + 96 - 0.001)
    before = await served.steps(ids["spiky-run"])
    assert max(before) == 88
    served.clock.advance(0.002)
    assert max(await served.steps(ids["spiky-run"])) == 96
    served.clock.advance(200)  # step 296 by now
    spiky = await served.steps(ids["spiky-run"])
    healthy = await served.steps(ids["healthy-run"])
    assert max(spiky) == max(healthy) == 296
    ce = {n: m["cross_entropy"] for n, m in spiky.items()}
    baseline = (ce[80] + ce[88]) / 2
    for step in (96, 104, 112, 120):
        assert ce[step] > 3.0 * baseline, step
        assert spiky[step]["loss"] > 3.0 * baseline
        assert spiky[step]["generation_cross_entropy"] > 3.0 * baseline
    assert ce[128] < 1.2 * baseline
    assert all("loss" in m for m in spiky.values())
    healthy_ce = [healthy[n]["cross_entropy"] for n in sorted(healthy)]
    assert all(b < 1.1 * a for a, b in itertools.pairwise(healthy_ce))
    assert not any("loss" in m for m in healthy.values())
    truth = await served.get("/simulator/truth")
    newest = {m["name"]: m["newest_step"]["step_number"] for m in truth["runs"]}
    assert newest["spiky-run"] == 296


@pytest.mark.parametrize("step_order", ["newest-first", "oldest-first"])
async def test_step_pages_show_the_nan_as_a_string(step_order: StepOrder) -> None:
    clock = SimClock(start_unix=START, frozen=True)
    world = CohereWorld(
        clock=clock, scenario=load_scenario("spike-and-healthy"), step_order=step_order
    )
    server = TestServer(build_app(world), host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        try:
            served = Served(world, clock, str(server.make_url("")).rstrip("/"), session)
            nan_id = (await served.ids_by_name())["nan-run"]
            clock.advance(5 + 64 - 0.001)
            assert "NaN" not in json.dumps(await served.steps(nan_id))
            clock.advance(0.002)
            steps = await served.steps(nan_id)
            assert steps[64]["cross_entropy"] == "NaN"
            assert isinstance(steps[64]["generation_cross_entropy"], float)
            clock.advance(100)
            steps = await served.steps(nan_id)
            nan_steps = [n for n, m in steps.items() if m["cross_entropy"] == "NaN"]
            assert nan_steps == [64]
            assert all(math.isfinite(m["cross_entropy"]) for n, m in steps.items() if n != 64)
            truth = await served.get("/simulator/truth")
            newest = next(m for m in truth["runs"] if m["name"] == "nan-run")["newest_step"]
            assert newest["step_number"] == 160
        finally:
            await server.close()


async def test_scripted_model_appears_when_created() -> None:
    clock = SimClock(start_unix=START, frozen=True)
    scenario = Scenario(models=(ScriptedModel(name="late", starts_at=30.0),))
    world = CohereWorld(clock=clock, scenario=scenario)
    server = TestServer(build_app(world), host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        try:
            served = Served(world, clock, str(server.make_url("")).rstrip("/"), session)
            assert await served.ids_by_name() == {}
            assert (await served.get("/simulator/truth"))["runs"] == []
            clock.advance(30)
            ids = await served.ids_by_name()
            assert list(ids) == ["late"]
            body = await served.get(f"{MODELS}/{ids['late']}")
            assert body["finetuned_model"]["status"] == "STATUS_QUEUED"
        finally:
            await server.close()
