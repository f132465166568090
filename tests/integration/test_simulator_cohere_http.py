"""The simulator over real loopback HTTP: paths, paging, proto3 bodies, auth and control routes."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exporter.simulator import SimClock, build_app, run_simulator
from exporter.simulator.cohere import CohereWorld

pytestmark = pytest.mark.integration

START = 1_700_000_000.0
FINISHED = 20_000.0
MODELS = "/v1/finetuning/finetuned-models"


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"bare {name} token in a JSON body")


@dataclass
class Sim:
    """A running simulator and a session pointed at it."""

    world: CohereWorld
    clock: SimClock
    base: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **params: Any
    ) -> tuple[int, Any]:
        query = {k: str(v) for k, v in params.items()}
        async with self.session.request(
            method, self.base + path, params=query, headers=headers
        ) as resp:
            text = await resp.text()
            body = json.loads(text, parse_constant=_reject_constant) if text != "ok" else text
            return resp.status, body

    async def get(self, path: str, **params: Any) -> Any:
        status, body = await self.call("GET", path, **params)
        assert status == 200, body
        return body

    async def collect(self, path: str, key: str, **params: Any) -> list[list[dict[str, Any]]]:
        """Every page of a list, checking the proto3 last-page rule on the way."""
        pages: list[list[dict[str, Any]]] = []
        token = ""
        while True:
            query = dict(params, page_token=token) if token else dict(params)
            body = await self.get(path, **query)
            pages.append(body.get(key, []))
            if "next_page_token" not in body:
                return pages
            token = body["next_page_token"]
            assert token, "an empty next_page_token must be omitted, not sent"
            assert len(pages) < 1000


SimFactory = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    servers: list[TestServer] = []
    session = aiohttp.ClientSession()

    async def start(**kwargs: Any) -> Sim:
        clock = SimClock(start_unix=START, frozen=True)
        world = CohereWorld(clock=clock, **kwargs)
        server = TestServer(build_app(world), host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return Sim(world, clock, str(server.make_url("")).rstrip("/"), session)

    yield start
    await session.close()
    for server in servers:
        await server.close()


@pytest.mark.parametrize("order_by", [None, "created_at", "created_at desc"])
async def test_model_pages_cover_every_model_once(sim_factory: SimFactory, order_by: str) -> None:
    sim = await sim_factory(models=23)
    params: dict[str, Any] = {"page_size": 5}
    if order_by:
        params["order_by"] = order_by
    pages = await sim.collect(MODELS, "finetuned_models", **params)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    ids = [m["id"] for page in pages for m in page]
    expected = sim.world.model_ids()
    assert ids == (expected[::-1] if order_by == "created_at desc" else expected)
    first = await sim.get(MODELS, page_size=5)
    assert first["total_size"] == 23


async def test_model_bodies_follow_proto3(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=12)
    body = await sim.get(MODELS)
    assert "next_page_token" not in body
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z$")
    for model in body["finetuned_models"]:
        assert stamp.match(model["created_at"])
        assert stamp.match(model["updated_at"])
        assert model["status"].startswith("STATUS_")
        finished = model["status"] in ("STATUS_READY", "STATUS_FAILED")
        assert ("completed_at" in model) == finished
        base_model = model["settings"]["base_model"]
        assert base_model.get("strategy") != "STRATEGY_UNSPECIFIED"  # enum zero: omitted
        assert base_model.get("version") != ""
        for value in model["settings"].values():
            assert value not in ("", 0, False, [], {})
    nine = sum(
        len(m["created_at"]) == len("2024-01-17T20:25:19.331940174Z")
        for m in body["finetuned_models"]
    )
    assert nine > len(body["finetuned_models"]) // 2


@pytest.mark.parametrize("step_order", ["newest-first", "oldest-first"])
async def test_step_pages_in_both_orders(sim_factory: SimFactory, step_order: str) -> None:
    sim = await sim_factory(models=6, step_order=step_order)
    sim.clock.advance(FINISHED)
    for model_id in sim.world.model_ids():
        truth = sim.world.steps(model_id)
        pages = await sim.collect(
            f"{MODELS}/{model_id}/training-step-metrics", "step_metrics", page_size=7
        )
        items = [s for page in pages for s in page]
        numbers = [s.get("step_number", 0) for s in items]
        ascending = [s.step_number for s in truth]
        assert numbers == (ascending[::-1] if step_order == "newest-first" else ascending)
        step0 = next(s for s in items if "step_number" not in s)
        assert step0["metrics"]["step"] == 0.0
        for item, step in zip(
            sorted(items, key=lambda s: s.get("step_number", 0)), truth, strict=True
        ):
            for name, value in step.metrics.items():
                sent = item["metrics"][name]
                assert (sent == "NaN") if math.isnan(value) else (sent == value)


async def test_nan_step_is_a_string(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=5)
    sim.clock.advance(FINISHED)
    found = 0
    for model_id in sim.world.model_ids():
        body = await sim.get(f"{MODELS}/{model_id}/training-step-metrics", page_size=1000)
        found += sum(s["metrics"]["cross_entropy"] == "NaN" for s in body["step_metrics"])
    assert found == 1


async def test_page_size_rules(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=1200)
    assert len((await sim.get(MODELS))["finetuned_models"]) == 50
    assert len((await sim.get(MODELS, page_size=0))["finetuned_models"]) == 50
    assert len((await sim.get(MODELS, page_size=5000))["finetuned_models"]) == 1000
    for bad in ("-1", "ten", "1.5"):
        status, body = await sim.call("GET", MODELS, page_size=bad)
        assert status == 400
        assert body["message"]


async def test_bad_page_tokens_are_rejected(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=12)
    model_id = sim.world.model_ids()[0]
    models_token = (await sim.get(MODELS, page_size=2))["next_page_token"]
    steps_path = f"{MODELS}/{model_id}/training-step-metrics"
    for path, token in [
        (MODELS, "not a token"),
        (MODELS, "e30"),  # "{}"
        (steps_path, models_token),  # another collection
        (MODELS + "?order_by=created_at%20desc", models_token),  # another order
    ]:
        status, body = await sim.call("GET", path, page_token=token)
        assert status == 400, (path, token)
        assert body == {"message": "invalid page token"}


async def test_events_pages_and_system_events(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=4)
    sim.clock.advance(FINISHED)
    model_id = sim.world.model_ids()[0]
    pages = await sim.collect(f"{MODELS}/{model_id}/events", "events", page_size=1)
    events = [e for page in pages for e in page]
    assert [e["status"] for e in events][:2] == ["STATUS_QUEUED", "STATUS_FINETUNING"]
    last = events[-1]
    assert last["status"] in ("STATUS_READY", "STATUS_FAILED")
    assert "user_id" not in last
    assert all("user_id" in e for e in events[:2])
    desc = await sim.get(f"{MODELS}/{model_id}/events", order_by="created_at desc")
    assert desc["events"] == events[::-1]
    assert desc["total_size"] == len(events)


async def test_get_delete_and_errors(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=3)
    model_id = sim.world.model_ids()[0]
    got = await sim.get(f"{MODELS}/{model_id}")
    assert got["finetuned_model"]["id"] == model_id
    assert await sim.call("DELETE", f"{MODELS}/{model_id}") == (200, {})
    assert model_id not in [m["id"] for m in (await sim.get(MODELS))["finetuned_models"]]
    for path in (f"{MODELS}/{model_id}", f"{MODELS}/{model_id}/training-step-metrics"):
        assert await sim.call("GET", path) == (
            404,
            {"message": f"finetuned model {model_id} not found"},
        )
    assert await sim.call("GET", f"{MODELS}/") == (
        400,
        {"message": "finetuneID is not a valid UUID: ''"},
    )
    assert await sim.call("GET", f"{MODELS}//events") == (
        400,
        {"message": "finetuneID is not a valid UUID: ''"},
    )
    status, body = await sim.call("GET", "/v1/finetuning/nothing-here")
    assert status == 404
    assert body["message"]


async def test_auth_when_key_is_set(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=2, api_key="sekrit")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"}):
        status, body = await sim.call("GET", MODELS, headers=headers)
        assert (status, body) == (401, {"message": "invalid api token"})
    status, _ = await sim.call("GET", MODELS, headers={"Authorization": "Bearer sekrit"})
    assert status == 200
    status, _ = await sim.call("GET", "/simulator/requests")
    assert status == 200


async def test_no_key_accepts_anything(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=2)
    for headers in ({}, {"Authorization": "Bearer whatever"}):
        status, _ = await sim.call("GET", MODELS, headers=headers)
        assert status == 200


async def test_request_counts_and_reset(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=3)
    first, second = sim.world.model_ids()[:2]
    await sim.get(MODELS)
    await sim.get(f"{MODELS}/{first}")
    await sim.get(f"{MODELS}/{first}/events")
    for _ in range(3):
        await sim.get(f"{MODELS}/{first}/training-step-metrics")
    await sim.get(f"{MODELS}/{second}/training-step-metrics")
    await sim.call(
        "DELETE",
        f"{MODELS}/{second}",
        headers={"X-Client-Name": "exporter-test", "User-Agent": "probe/1.0"},
    )
    report = await sim.get("/simulator/requests")
    assert report == {
        "list_models": 1,
        "get_model": 1,
        "list_events": 1,
        "list_step_metrics": 4,
        "delete_model": 1,
        "steps_by_run": {first: 3, second: 1},
        "total": 8,
        "last_client_name": "exporter-test",
        "last_user_agent": "probe/1.0",
    }
    assert await sim.call("POST", "/simulator/reset-requests") == (200, {})
    report = await sim.get("/simulator/requests")
    assert report["total"] == 0
    assert report["steps_by_run"] == {}


def _nan_step(seed: int) -> tuple[str, float]:
    """Where the NaN evaluation of a 5-model account lies, found on an identical world."""
    clock = SimClock(start_unix=START, frozen=True)
    probe = CohereWorld(models=5, seed=seed, clock=clock)
    clock.advance(FINISHED)
    for model_id in probe.model_ids():
        for step in probe.steps(model_id):
            if math.isnan(step.metrics["cross_entropy"]):
                return model_id, step.created_at
    raise AssertionError("no NaN step")


async def test_truth_advance_add_and_health(sim_factory: SimFactory) -> None:
    sim = await sim_factory(models=5)
    truth = await sim.get("/simulator/truth")
    assert truth["now"] == START
    assert [m["id"] for m in truth["runs"]] == sim.world.model_ids()
    for entry in truth["runs"]:
        newest = sim.world.newest_step(entry["id"])
        assert entry["status"] == sim.world.status(entry["id"])
        assert entry["step_count"] == len(sim.world.steps(entry["id"]))
        if newest is None:
            assert entry["newest_step"] is None
        else:
            assert entry["newest_step"]["step_number"] == newest.step_number
    model_id, nan_at = _nan_step(sim.world.seed)
    assert nan_at > START  # with seed 1 the NaN evaluation comes a few seconds after start
    status, body = await sim.call("POST", "/simulator/advance", seconds=nan_at - START)
    assert (status, body) == (200, {"now": nan_at})
    truth = await sim.get("/simulator/truth")
    entry = next(m for m in truth["runs"] if m["id"] == model_id)
    assert entry["newest_step"]["metrics"]["cross_entropy"] == "NaN"
    status, _ = await sim.call("POST", "/simulator/advance", seconds="soon")
    assert status == 400
    status, body = await sim.call("POST", "/simulator/models")
    assert status == 200
    assert sim.world.status(body["id"]) == "STATUS_QUEUED"
    truth = await sim.get("/simulator/truth")
    assert truth["runs"][-1]["id"] == body["id"]
    assert await sim.call("GET", "/healthz") == (200, "ok")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_run_simulator_serves_until_cancelled() -> None:
    world = CohereWorld(models=2, clock=SimClock(start_unix=START, frozen=True))
    port = _free_port()
    task = asyncio.create_task(run_simulator("127.0.0.1", port, world))
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert await resp.text() == "ok"
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("simulator did not start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # the listener is gone
