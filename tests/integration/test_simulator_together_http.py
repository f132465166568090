"""The Together AI simulator over real loopback HTTP: paths, bodies, parameters, errors, auth,
faults and the control routes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from exporter.simulator import Fault, FaultInjector, Scenario, ScriptedModel, SimClock, build_app
from exporter.simulator.together import TogetherWorld
from exporter.simulator.together.app import INVALID_JSON_BODY, UNKNOWN_STATUS
from tests.stack import serve_app

pytestmark = pytest.mark.integration

START = 1_780_000_000.0
FINISHED = 30_000.0
JOBS = "/v1/fine-tunes"
KEY = "tk-sim"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEADLINE = 10.0


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"bare {name} token in a JSON body")


@dataclass
class Sim:
    world: TogetherWorld
    clock: SimClock
    faults: FaultInjector
    base: str
    session: aiohttp.ClientSession

    async def raw(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        payload: Any = None,
        **params: Any,
    ) -> tuple[int, bytes]:
        """One request within the deadline; ``params`` are the query, ``payload`` a JSON body."""
        async with (
            asyncio.timeout(DEADLINE),
            self.session.request(
                method,
                self.base + path,
                params={k: str(v) for k, v in params.items()},
                headers=AUTH if headers is None else headers,
                json=payload,
            ) as resp,
        ):
            return resp.status, await resp.read()

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body = await self.raw(method, path, **kwargs)
        if body == b"ok":
            return status, "ok"
        return status, json.loads(body, parse_constant=_reject_constant)

    async def get(self, path: str, **params: Any) -> Any:
        status, body = await self.call("GET", path, **params)
        assert status == 200, body
        return body


SimFactory = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(*faults: Fault, **world_args: Any) -> Sim:
            world_args.setdefault("jobs", 8)
            clock = SimClock(start_unix=START, frozen=True)
            world = TogetherWorld(clock=clock, api_key=KEY, **world_args)
            injector = FaultInjector(faults)
            served = await stack.enter_async_context(serve_app(build_app(world, injector)))
            return Sim(world, clock, injector, served.url, session)

        yield start


def _iso(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    whole = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{nanos:09d}Z"


# --------------------------------------------------------------------------- bodies


async def test_list_and_single_job_bodies(sim_factory: SimFactory) -> None:
    sim = await sim_factory()
    listed = await sim.get(JOBS)
    assert list(listed) == ["data"]  # no paging fields at all
    assert [j["id"] for j in listed["data"]] == sim.world.job_ids()
    for job in listed["data"]:
        assert "events" not in job
        assert job == sim.world.job(job["id"], full=False)
        single = await sim.get(f"{JOBS}/{job['id']}")
        assert single == sim.world.job(job["id"])
        assert single["events"] == sim.world.events(job["id"])
        events = await sim.get(f"{JOBS}/{job['id']}/events")
        assert events == {"data": single["events"]}
        points = await sim.get(f"{JOBS}/{job['id']}/checkpoints")
        assert points == {"data": sim.world.checkpoints(job["id"])}


async def test_metrics_without_parameters_is_every_visible_entry(sim_factory: SimFactory) -> None:
    sim = await sim_factory()
    sim.clock.advance(FINISHED)
    for job_id in sim.world.job_ids():
        body = await sim.get(f"{JOBS}/{job_id}/metrics")
        assert body == {"metrics": sim.world.metrics(job_id)}


async def test_nanosecond_timestamps_are_exact_integer_literals(sim_factory: SimFactory) -> None:
    sim = await sim_factory(jobs=12)
    sim.clock.advance(FINISHED)
    checked = 0
    for job_id in sim.world.job_ids():
        if not sim.world.quirks(job_id).timestamps:
            continue
        _, raw = await sim.raw("GET", f"{JOBS}/{job_id}/metrics")
        literals = [int(t) for t in re.findall(rb'"timestamp":(-?\d+)[,}]', raw)]
        logged = [t for _, t, _ in sim.world.logged(job_id)]
        assert literals == logged
        checked += len(literals)
        assert b'"timestamp":' not in re.sub(rb'"timestamp":\d+[,}]', b"", raw)  # never a float
    assert checked > 1_000


# --------------------------------------------------------------------------- parameters


async def _finished_job(sim: Sim) -> str:
    sim.clock.advance(FINISHED)
    return next(
        j
        for j in sim.world.job_ids()
        if sim.world.status(j) == "completed" and sim.world.quirks(j).timestamps
    )


async def test_each_metrics_parameter(sim_factory: SimFactory) -> None:
    sim = await sim_factory(jobs=12)
    job_id = await _finished_job(sim)
    path = f"{JOBS}/{job_id}/metrics"
    logged = sim.world.logged(job_id)
    steps = sorted({s for s, _, _ in logged})
    low, high = steps[len(steps) // 4], steps[len(steps) // 2]
    body = await sim.get(path, global_step_from=low)
    assert body["metrics"] == [e for s, _, e in logged if s >= low]
    body = await sim.get(path, global_step_to=high)
    assert body["metrics"] == [e for s, _, e in logged if s <= high]
    _, first, _ = logged[len(logged) // 3]
    _, last, _ = logged[2 * len(logged) // 3]
    body = await sim.get(path, logged_at_from=_iso(first))
    assert body["metrics"] == [e for _, t, e in logged if t >= first]
    body = await sim.get(path, logged_at_to=_iso(last))
    assert body["metrics"] == [e for _, t, e in logged if t <= last]
    offset = dt.datetime.fromtimestamp(first // 10**9, dt.timezone(dt.timedelta(hours=2)))
    body = await sim.get(path, logged_at_from=offset.isoformat())  # whole seconds, +02:00
    assert body["metrics"] == [e for _, t, e in logged if t >= first // 10**9 * 10**9]
    body = await sim.get(path, resolution=10)
    assert len([e for e in body["metrics"] if "train/global_step" in e]) == 10
    body = await sim.get(path, global_step_from=low, global_step_to=high, resolution=3)
    sampled = [e["train/global_step"] for e in body["metrics"] if "train/global_step" in e]
    trains = [s for s, _, e in logged if "train/global_step" in e and low <= s <= high]
    assert len(sampled) == 3
    assert (sampled[0], sampled[-1]) == (trains[0], trains[-1])  # first and last included
    assert abs(trains.index(sampled[1]) - (len(trains) - 1) / 2) <= 1  # and one in the middle


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("global_step_from", "ten"),
        ("global_step_from", "1.5"),
        ("global_step_from", "-1"),
        ("global_step_to", "x"),
        ("resolution", "0"),
        ("resolution", "many"),
        ("logged_at_from", "yesterday"),
        ("logged_at_to", "2026-13-45T99:00:00Z"),
        ("logged_at_to", "1779196193564587000"),
    ],
)
async def test_bad_parameters_are_400_in_togethers_shape(
    sim_factory: SimFactory, name: str, value: str
) -> None:
    sim = await sim_factory(jobs=3)
    job_id = sim.world.job_ids()[0]
    status, body = await sim.call("GET", f"{JOBS}/{job_id}/metrics", **{name: value})
    assert status == 400
    assert set(body) == {"error"}
    assert name in body["error"]["message"]
    assert body["error"]["type"]


async def test_unknown_job_is_404_and_a_bad_key_401(sim_factory: SimFactory) -> None:
    sim = await sim_factory(jobs=3)
    for suffix in ("", "/metrics", "/events", "/checkpoints"):
        status, body = await sim.call("GET", f"{JOBS}/ft-nope{suffix}")
        assert status == 404
        assert "ft-nope" in body["error"]["message"]
        assert set(body["error"]) == {"message", "type", "param", "code"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        status, body = await sim.call("GET", JOBS, headers=headers)
        assert status == 401
        assert body["error"]["message"] == "invalid api key"
    status, _ = await sim.call("GET", "/simulator/requests", headers={})
    assert status == 200


# --------------------------------------------------------------------------- control routes


async def test_request_counts_truth_advance_and_add(sim_factory: SimFactory) -> None:
    sim = await sim_factory(jobs=5)
    first, second = sim.world.job_ids()[:2]
    await sim.get(JOBS)
    await sim.get(f"{JOBS}/{first}")
    await sim.get(f"{JOBS}/{first}/events")
    await sim.get(f"{JOBS}/{first}/checkpoints")
    for _ in range(3):
        await sim.get(f"{JOBS}/{first}/metrics")
    headers = AUTH | {"X-Client-Name": "probe", "User-Agent": "probe/2"}
    status, _ = await sim.call("GET", f"{JOBS}/{second}/metrics", headers=headers)
    assert status == 200
    report = await sim.get("/simulator/requests")
    assert report == {
        "list_jobs": 1,
        "get_job": 1,
        "list_metrics": 4,
        "list_events": 1,
        "list_checkpoints": 1,
        "steps_by_run": {first: 3, second: 1},
        "total": 8,
        "last_client_name": "probe",
        "last_user_agent": "probe/2",
    }
    assert await sim.call("POST", "/simulator/reset-requests") == (200, {})
    assert (await sim.get("/simulator/requests"))["total"] == 0
    truth = await sim.get("/simulator/truth")
    assert truth["now"] == START
    assert [r["id"] for r in truth["runs"]] == sim.world.job_ids()
    for run in truth["runs"]:
        assert run["status"] == sim.world.status(run["id"])
        assert run["name"] == sim.world.plan(run["id"]).suffix
        trains = [e for e in sim.world.metrics(run["id"]) if "train/global_step" in e]
        assert run["step_count"] == len(trains)
        if trains:
            newest = {k: v for k, v in trains[-1].items() if k != "timestamp"}
            assert run["newest_step"]["metrics"] == newest
            assert run["newest_step"]["step_number"] == trains[-1]["train/global_step"]
        else:
            assert run["newest_step"] is None
    status, body = await sim.call("POST", "/simulator/advance", seconds=100)
    assert (status, body) == (200, {"now": START + 100})
    status, body = await sim.call("POST", "/simulator/models")
    assert status == 200
    assert body["id"].startswith("ft-")
    assert sim.world.status(body["id"]) == "pending"
    assert (await sim.get("/simulator/truth"))["runs"][-1]["id"] == body["id"]
    assert await sim.call("GET", "/healthz") == (200, "ok")


async def test_thousands_of_steps_over_http(sim_factory: SimFactory) -> None:
    long = ScriptedModel(
        name="long", total_steps=50_000, step_seconds=0.5, eval_every=1_000, starts_at=-30_000
    )
    sim = await sim_factory(scenario=Scenario(models=(long,)))
    (job_id,) = sim.world.job_ids()
    path = f"{JOBS}/{job_id}/metrics"
    full = await sim.get(path)
    assert len(full["metrics"]) == 50_050
    async with asyncio.timeout(5.0):  # fifty polls for "what is new": no rebuild per request
        for last in range(49_950, 50_000):
            tail = await sim.get(path, global_step_from=last + 1)
            assert tail["metrics"][0]["train/global_step"] == last + 1


# --------------------------------------------------------------------------- faults


async def test_error_faults_take_togethers_shape(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="status", status=503, endpoint="list_jobs", count=1))
    status, body = await sim.call("GET", JOBS)
    assert status == 503
    assert body == {
        "error": {
            "message": "service unavailable",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert (await sim.call("GET", JOBS))[0] == 200
    sim.faults.set([Fault(kind="rate-limit", retry_after="seconds", retry_after_seconds=3)])
    async with sim.session.get(sim.base + JOBS, headers=AUTH) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3"
        assert (await resp.json())["error"]["message"] == "too many requests"


async def test_string_step_and_unknown_status_on_together(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="string-step"), Fault(kind="unknown-status"))
    job_id = sim.world.job_ids()[0]
    body = await sim.get(f"{JOBS}/{job_id}/metrics")
    real = sim.world.metrics(job_id)
    assert body["metrics"][0]["train/global_step"] == "seven"
    assert body["metrics"][1:] == real[1:]
    listed = await sim.get(JOBS)
    assert {j["status"] for j in listed["data"]} == {UNKNOWN_STATUS}
    single = await sim.get(f"{JOBS}/{job_id}")
    assert single["status"] == UNKNOWN_STATUS
    assert single["id"] == job_id
    events = await sim.get(f"{JOBS}/{job_id}/events")  # neither fault applies to events
    assert events == {"data": sim.world.events(job_id)}


async def test_invalid_json_and_hostile_bodies_use_togethers_fields(
    sim_factory: SimFactory,
) -> None:
    sim = await sim_factory(Fault(kind="invalid-json", endpoint="list_metrics", count=1))
    job_id = sim.world.job_ids()[0]
    status, raw = await sim.raw("GET", f"{JOBS}/{job_id}/metrics")
    assert (status, raw) == (200, INVALID_JSON_BODY)
    for suffix, field in [("", "data"), ("/metrics", "metrics"), ("/events", "data")]:
        path = JOBS if not suffix else f"{JOBS}/{job_id}{suffix}"
        sim.faults.set([Fault(kind="entry-flood", entries=4, entry='{"id":"x"}')])
        assert await sim.get(path) == {field: [{"id": "x"}] * 4}
        sim.faults.set([Fault(kind="deep-nesting", depth=3)])
        assert await sim.get(path) == [[[]]]
    sim.faults.set([Fault(kind="entry-flood", entries=4)])
    assert "events" in await sim.get(f"{JOBS}/{job_id}")  # a single job is no list


@pytest.mark.parametrize(
    ("fault", "key"),
    [
        ({"kind": "status", "endpoint": "list_step_metrics"}, "endpoint"),
        ({"kind": "repeat-token"}, "repeat-token"),
        ({"kind": "string-step", "endpoint": "list_jobs"}, "endpoint"),
        ({"kind": "status", "endpoint": "list_jobs", "model": "ft-x"}, "model"),
    ],
)
async def test_faults_that_cannot_fire_on_together_are_refused(
    sim_factory: SimFactory, fault: dict[str, Any], key: str
) -> None:
    sim = await sim_factory(jobs=2)
    status, body = await sim.call("POST", "/simulator/faults", payload={"faults": [fault]})
    assert status == 400
    assert key in body["message"]
    assert sim.faults.active == ()


def test_building_an_app_with_a_cohere_only_fault_fails() -> None:
    world = TogetherWorld(jobs=1, clock=SimClock(start_unix=START, frozen=True))
    with pytest.raises(ValueError, match="endpoint"):
        build_app(world, FaultInjector([Fault(kind="status", endpoint="get_model")]))
    injector = FaultInjector([Fault(kind="status", endpoint="get_job")])
    assert build_app(world, injector) is not None
    assert injector.provider == "together"
