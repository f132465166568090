"""Cohere's official Python SDK must parse every simulator answer: proof the shapes are right.

The SDK is synchronous (httpx), so its calls run in a worker thread while the simulator serves
on the test's event loop. Its base URL is the server root: it appends ``v1/finetuning/...``
itself (and strips a trailing ``/v1`` only from cohere.com/cohere.ai URLs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import cohere
import pytest
from aiohttp.test_utils import TestServer

from exporter.simulator import SimClock, build_app
from exporter.simulator.cohere import CohereWorld

pytestmark = pytest.mark.integration

START = 1_700_000_000.0
FINISHED = 20_000.0
KEY = "k"


@dataclass
class SdkSim:
    world: CohereWorld
    clock: SimClock
    base_url: str
    client: Any  # cohere.Client; the SDK's own annotations are not part of this project's check

    async def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client.finetuning, method), *args, **kwargs)


@pytest.fixture
async def sim_sdk() -> AsyncIterator[SdkSim]:
    clock = SimClock(start_unix=START, frozen=True)
    world = CohereWorld(models=7, clock=clock, api_key=KEY)
    server = TestServer(build_app(world), host="127.0.0.1", port=0)
    await server.start_server()
    base_url = str(server.make_url("")).rstrip("/")
    client = cohere.Client(api_key=KEY, base_url=base_url, client_name="sdk-test", timeout=10)
    yield SdkSim(world, clock, base_url, client)
    await server.close()


@pytest.mark.parametrize("order_by", ["created_at", "created_at desc"])
async def test_sdk_pages_through_models(sim_sdk: SdkSim, order_by: str) -> None:
    ids: list[str] = []
    token: str | None = None
    while True:
        page = await sim_sdk.run(
            "list_finetuned_models", page_size=3, page_token=token, order_by=order_by
        )
        assert page.total_size == 7
        ids += [m.id for m in page.finetuned_models]
        for model in page.finetuned_models:
            assert model.status == sim_sdk.world.status(model.id)
            assert isinstance(model.created_at, dt.datetime)
            assert model.settings.base_model.base_type.startswith("BASE_TYPE_")
        token = page.next_page_token
        if not token:
            break
    expected = sim_sdk.world.model_ids()
    assert ids == (expected[::-1] if order_by.endswith("desc") else expected)


async def test_sdk_gets_a_model(sim_sdk: SdkSim) -> None:
    model_id = sim_sdk.world.model_ids()[0]
    truth = sim_sdk.world.model(model_id)
    got = (await sim_sdk.run("get_finetuned_model", model_id)).finetuned_model
    assert got.id == model_id
    assert got.name == truth["name"]
    assert got.status == truth["status"]
    assert got.settings.dataset_id == truth["settings"]["dataset_id"]
    assert abs(got.created_at.timestamp() - truth["created_at"]) < 1e-5
    assert got.created_at.tzinfo is not None


async def test_sdk_lists_events(sim_sdk: SdkSim) -> None:
    sim_sdk.clock.advance(FINISHED)
    model_id = sim_sdk.world.model_ids()[0]
    events = (await sim_sdk.run("list_events", finetuned_model_id=model_id)).events
    assert [e.status for e in events][:2] == ["STATUS_QUEUED", "STATUS_FINETUNING"]
    assert events[-1].status in ("STATUS_READY", "STATUS_FAILED")
    assert events[-1].user_id is None
    assert events[0].user_id == sim_sdk.world.model(model_id)["creator_id"]


async def test_sdk_pages_step_metrics_with_nan_and_step_zero(sim_sdk: SdkSim) -> None:
    sim_sdk.clock.advance(FINISHED)
    nan_model = next(
        m
        for m in sim_sdk.world.model_ids()
        if any(math.isnan(s.metrics["cross_entropy"]) for s in sim_sdk.world.steps(m))
    )
    steps: list[Any] = []
    token: str | None = None
    while True:
        page = await sim_sdk.run(
            "list_training_step_metrics",
            finetuned_model_id=nan_model,
            page_size=3,
            page_token=token,
        )
        steps += page.step_metrics
        token = page.next_page_token
        if not token:
            break
    truth = sim_sdk.world.steps(nan_model)
    assert len(steps) == len(truth)
    numbers = [s.step_number or 0 for s in steps]
    assert numbers == sorted(numbers, reverse=True)  # the default world pages newest first
    step0 = steps[-1]
    assert step0.step_number in (None, 0)
    assert step0.metrics["step"] == 0.0
    nan_steps = [s for s in steps if math.isnan(s.metrics["cross_entropy"])]
    assert len(nan_steps) == 1
    assert nan_steps[0].step_number > 0
    for parsed, expected in zip(reversed(steps), truth, strict=True):
        assert abs(parsed.created_at.timestamp() - expected.created_at) < 1e-5
        assert parsed.metrics["accuracy"] == expected.metrics["accuracy"]


async def test_sdk_deletes_and_sees_not_found(sim_sdk: SdkSim) -> None:
    model_id = sim_sdk.world.model_ids()[2]
    assert await sim_sdk.run("delete_finetuned_model", model_id) == {}
    assert model_id not in sim_sdk.world.model_ids()
    with pytest.raises(cohere.NotFoundError) as raised:
        await sim_sdk.run("get_finetuned_model", model_id)
    assert raised.value.body == {"message": f"finetuned model {model_id} not found"}


async def test_sdk_headers_and_bad_key(sim_sdk: SdkSim) -> None:
    await sim_sdk.run("list_finetuned_models")
    assert sim_sdk.world.request_counts["list_models"] == 1
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim_sdk.base_url}/simulator/requests") as resp,
    ):
        report = await resp.json()
    assert report["last_client_name"] == "sdk-test"
    assert report["last_user_agent"].startswith("cohere/")
    wrong = cohere.Client(api_key="nope", base_url=sim_sdk.base_url)
    with pytest.raises(cohere.UnauthorizedError):
        await asyncio.to_thread(wrong.finetuning.list_finetuned_models)
    assert sim_sdk.world.request_counts["list_models"] == 2
