"""Injected faults as a client sees them, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from exporter.simulator import Fault
from exporter.simulator.responses import error_message
from tests.simulator_faults_support import DEADLINE, MODELS, SimFactory, sim_servers

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    async with sim_servers() as start:
        yield start


def _server_complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.split(".")[0] in ("aiohttp", "asyncio")
    ]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 500, 502, 503, 504])
async def test_status(sim_factory: SimFactory, status: int) -> None:
    sim = await sim_factory(Fault(kind="status", status=status))
    answer = await sim.call("GET", MODELS)
    assert answer == (status, {"message": error_message(status)})
    assert error_message(status)


async def test_status_message_for_uncommon_codes(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="status", status=418))
    assert await sim.call("GET", MODELS) == (418, {"message": "i'm a teapot"})


@pytest.mark.parametrize("retry_after", [None, "seconds"])
async def test_rate_limit(sim_factory: SimFactory, retry_after: str | None) -> None:
    fault = Fault.from_json(
        {"kind": "rate-limit", "retry_after": retry_after, "retry_after_seconds": 7}
    )
    sim = await sim_factory(fault)
    async with sim.session.get(sim.url(MODELS)) as resp:
        assert resp.status == 429
        assert await resp.json() == {"message": "too many requests"}
        assert resp.headers.get("Retry-After") == (None if retry_after is None else "7")


async def test_rate_limit_with_http_date(sim_factory: SimFactory) -> None:
    sim = await sim_factory(
        Fault.parse("kind=rate-limit,retry_after=http-date,retry_after_seconds=30")
    )
    async with sim.session.get(sim.url(MODELS)) as resp:
        assert resp.status == 429
        assert await resp.json() == {"message": "too many requests"}
        header = resp.headers["Retry-After"]
    assert header.endswith(" GMT")
    ahead = email.utils.parsedate_to_datetime(header) - dt.datetime.now(dt.UTC)
    assert 27 <= ahead.total_seconds() <= 31


async def test_reset(sim_factory: SimFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim = await sim_factory(Fault(kind="reset", endpoint="get_model"))
    path = f"{MODELS}/{sim.world.model_ids()[0]}"
    with pytest.raises(aiohttp.ClientConnectionError):
        await sim.call("GET", path)
    await sim.tracker.wait("finished", path)
    assert (await sim.get(MODELS))["finetuned_models"]
    # aiohttp's client sends an idempotent request a second time when the server disconnects.
    attempts = sim.world.request_counts["get_model"]
    assert 1 <= attempts <= 2
    assert sim.faults.injected == {"reset": attempts}
    assert not _server_complaints(caplog)


async def test_hang_times_out_and_the_server_serves_others(
    sim_factory: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = await sim_factory(Fault(kind="hang", endpoint="get_model"))
    path = f"{MODELS}/{sim.world.model_ids()[0]}"
    timeout = aiohttp.ClientTimeout(total=0.5)
    hung = asyncio.create_task(sim.call("GET", path, timeout=timeout))
    await sim.tracker.wait("started", path)
    # While that request hangs, others are served.
    body = await sim.get(MODELS)
    assert len(body["finetuned_models"]) == 4
    assert not hung.done()
    with pytest.raises(asyncio.TimeoutError):
        await hung
    await sim.tracker.wait("finished", path)  # the client left, so the handler ended
    assert not _server_complaints(caplog)


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_hang_handler_ends_when_the_client_leaves(
    sim_factory: SimFactory, caplog: pytest.LogCaptureFixture, handler_cancellation: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = await sim_factory(Fault(kind="hang"), handler_cancellation=handler_cancellation)
    with pytest.raises(asyncio.TimeoutError):
        await sim.call("GET", MODELS, timeout=aiohttp.ClientTimeout(total=0.5))
    await sim.tracker.wait("finished", MODELS)
    assert not _server_complaints(caplog)


async def test_hang_closes_the_connection_after_hang_seconds(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="hang", hang_seconds=0.1))
    started = time.monotonic()
    with pytest.raises(aiohttp.ClientConnectionError):
        await sim.call("GET", MODELS, timeout=aiohttp.ClientTimeout(total=DEADLINE))
    assert time.monotonic() - started >= 0.1


async def test_trickle_sends_the_whole_body_slowly(sim_factory: SimFactory) -> None:
    sim = await sim_factory()
    path = f"{MODELS}/{sim.world.model_ids()[3]}/events"  # a queued model: one event
    async with sim.session.get(sim.url(path), params={"page_size": "1"}) as resp:
        expected = await resp.read()
    sim.faults.set([Fault(kind="trickle", trickle_interval=0.01)])
    started = time.monotonic()
    async with sim.session.get(sim.url(path), params={"page_size": "1"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.read()
    elapsed = time.monotonic() - started
    assert body == expected
    assert json.loads(body)["events"]
    assert elapsed >= (len(body) - 1) * 0.01


async def test_trickle_handler_ends_when_the_client_leaves(
    sim_factory: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = await sim_factory(Fault(kind="trickle", trickle_interval=0.05))
    async with sim.session.get(sim.url(MODELS), timeout=aiohttp.ClientTimeout(total=0.5)) as resp:
        assert resp.status == 200
        with pytest.raises(asyncio.TimeoutError):
            await resp.read()
    await sim.tracker.wait("finished", MODELS)
    assert not _server_complaints(caplog)


async def test_targeting_one_model(sim_factory: SimFactory) -> None:
    sim = await sim_factory()
    target, other = sim.world.model_ids()[:2]
    sim.faults.set([Fault(kind="status", status=500, model=target)])
    assert (await sim.call("GET", f"{MODELS}/{target}"))[0] == 500
    assert (await sim.call("GET", f"{MODELS}/{target}/training-step-metrics"))[0] == 500
    assert (await sim.call("GET", f"{MODELS}/{other}"))[0] == 200
    assert (await sim.call("GET", f"{MODELS}/{other}/training-step-metrics"))[0] == 200
    assert (await sim.call("GET", MODELS))[0] == 200


async def test_count_stops_after_two(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault.parse("kind=status,status=502,count=2"))
    statuses = [(await sim.call("GET", MODELS))[0] for _ in range(4)]
    assert statuses == [502, 502, 200, 200]


async def test_probability_repeats_with_the_seed(sim_factory: SimFactory) -> None:
    runs = []
    for _ in range(2):
        sim = await sim_factory(Fault(kind="status", probability=0.5), seed=3)
        runs.append([(await sim.call("GET", MODELS))[0] for _ in range(12)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


async def test_auth_comes_first_and_injected_requests_count(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="status", status=500), api_key="sekrit")
    status, body = await sim.call("GET", MODELS, headers={"Authorization": "Bearer wrong"})
    assert (status, body) == (401, {"message": "invalid api token"})
    assert not sim.faults.injected
    good = {"Authorization": "Bearer sekrit"}
    model_id = sim.world.model_ids()[0]
    assert (await sim.call("GET", MODELS, headers=good))[0] == 500
    path = f"{MODELS}/{model_id}/training-step-metrics"
    assert (await sim.call("GET", path, headers=good))[0] == 500
    report = await sim.get("/simulator/requests")
    assert report["list_models"] == 2
    assert report["list_step_metrics"] == 1
    assert report["steps_by_run"] == {model_id: 1}
    assert sim.faults.injected == {"status": 2}


async def test_control_routes(sim_factory: SimFactory) -> None:
    sim = await sim_factory(api_key="sekrit")  # the control routes need no key
    assert await sim.get("/simulator/faults") == {"faults": [], "injected": {}}
    faults = [
        Fault(kind="status", status=504, endpoint="list_models", count=1),
        Fault(kind="list-body", endpoint="get_model"),
    ]
    payload = {"faults": [f.to_json() for f in faults]}
    status, report = await sim.call("POST", "/simulator/faults", json=payload)
    assert status == 200
    assert [Fault.from_json(f) for f in report["faults"]] == faults
    assert sim.faults.active == tuple(faults)
    good = {"Authorization": "Bearer sekrit"}
    assert (await sim.call("GET", MODELS, headers=good))[0] == 504
    assert (await sim.call("GET", MODELS, headers=good))[0] == 200
    report = await sim.get("/simulator/faults")
    assert [Fault.from_json(f) for f in report["faults"]] == faults[1:]  # the count ran out
    assert report["injected"] == {"status": 1}
    status, report = await sim.call("DELETE", "/simulator/faults")
    assert status == 200
    assert report["faults"] == []
    assert sim.faults.active == ()
    assert (await sim.call("GET", f"{MODELS}/{sim.world.model_ids()[0]}", headers=good))[0] == 200


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ("not json", "JSON"),
        ([], "faults"),
        ({"faults": {}}, "faults"),
        ({"faults": [{"kind": "explode"}]}, "kind"),
        ({"faults": [{"kind": "status", "colour": "red"}]}, "colour"),
        ({"faults": [{"kind": "status", "probability": 0}]}, "probability"),
        ({"faults": ["kind=status"]}, "object"),
    ],
)
async def test_bad_fault_posts_are_rejected(
    sim_factory: SimFactory, payload: Any, key: str
) -> None:
    sim = await sim_factory(Fault(kind="reset"))
    kwargs = {"data": payload} if isinstance(payload, str) else {"json": payload}
    status, body = await sim.call("POST", "/simulator/faults", **kwargs)
    assert status == 400
    assert key in body["message"]
    assert [f.kind for f in sim.faults.active] == ["reset"]  # unchanged
