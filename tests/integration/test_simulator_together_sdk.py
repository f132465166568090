"""Together's official Python SDK must parse every answer of the simulator, strictly validated.

``_strict_response_validation=True`` makes the SDK validate each body against its pydantic
types (required fields, literal statuses and event types, ``Dict[str, float]`` metrics) instead
of building objects without checks. The SDK is synchronous (httpx), so its calls run in a worker
thread while the simulator serves on the test's event loop.

Its base URL is the server root: the SDK's paths already start with ``/v1/`` (its default base
URL is ``https://api.together.ai``), so a base URL ending in ``/v1`` would ask for
``/v1/v1/fine-tunes``, as ``test_base_url_is_the_server_root`` shows.

Strict validation accepts the documented non-finite form: pydantic reads the string ``"NaN"``
as a float NaN, so no answer needs validation switched off. It does turn the nanosecond
``timestamp`` into a float, losing its last digits: exact values need the raw body.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import together

from exporter.simulator import SimClock, build_app
from exporter.simulator.together import TogetherWorld
from exporter.simulator.together.jobs import stages
from exporter.simulator.together.metrics import MetricsQuery
from tests.stack import serve_app

pytestmark = pytest.mark.integration

START = 1_780_000_000.0
KEY = "tk-sdk"
ALL_STATUSES = {
    "pending",
    "queued",
    "running",
    "compressing",
    "uploading",
    "completed",
    "error",
    "cancel_requested",
    "cancelled",
}


@dataclass
class SdkSim:
    world: TogetherWorld
    clock: SimClock
    url: str
    client: Any  # together.Together; the SDK's annotations are not part of this project's check

    async def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.client.fine_tuning, method)
        return await asyncio.to_thread(call, *args, **kwargs)


def _client(url: str, key: str = KEY) -> Any:
    return together.Together(
        api_key=key, base_url=url, _strict_response_validation=True, max_retries=0, timeout=10
    )


@pytest.fixture
async def sdk_sim(request: pytest.FixtureRequest) -> AsyncIterator[SdkSim]:
    seed = getattr(request, "param", 3)
    clock = SimClock(start_unix=START, frozen=True)
    world = TogetherWorld(jobs=12, seed=seed, clock=clock, api_key=KEY)
    async with serve_app(build_app(world)) as served:
        yield SdkSim(world, clock, served.url, _client(served.url))


def _visit_times(world: TogetherWorld) -> list[float]:
    """One instant inside the first stage of each status, so every status gets visited."""
    chosen: dict[str, float] = {}
    for job_id in world.job_ids():
        timeline = stages(world.plan(job_id))
        for (begins, status), (ends, _) in itertools.pairwise(timeline):
            if begins >= world.clock.now():
                chosen[status] = min(chosen.get(status, math.inf), (begins + ends) / 2)
        last_begins, last_status = timeline[-1]
        if last_begins >= world.clock.now():
            chosen[last_status] = min(chosen.get(last_status, math.inf), last_begins + 1)
    return sorted({world.clock.now(), *chosen.values()})


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()


async def _check_metrics(sim: SdkSim, job_id: str) -> None:
    """Parse the metrics answer without and with each parameter; compare with the world."""
    logged = sim.world.logged(job_id)
    variants: list[dict[str, Any]] = [{}]
    if logged:
        steps = [s for s, _, _ in logged]
        middle_step, (_, middle_ns, _) = steps[len(steps) // 2], logged[len(logged) // 2]
        variants += [
            {"global_step_from": middle_step},
            {"global_step_to": middle_step},
            {"logged_at_from": _iso(middle_ns)},
            {"logged_at_to": dt.datetime.fromtimestamp(middle_ns / 1e9, dt.UTC)},
            {"resolution": 5},
            {"global_step_from": steps[0], "global_step_to": steps[-1], "resolution": 2},
        ]
    for params in variants:
        parsed = (await sim.run("list_metrics", job_id, **params)).metrics
        assert parsed is not None
        if "logged_at_from" in params or "logged_at_to" in params:
            continue  # microsecond ISO strings: the exact comparison is in the HTTP tests
        query = MetricsQuery(
            step_from=params.get("global_step_from"),
            step_to=params.get("global_step_to"),
            resolution=params.get("resolution"),
        )
        expected = sim.world.metrics(job_id, query)
        assert len(parsed) == len(expected)
        for got, want in zip(parsed, expected, strict=True):
            assert set(got) == set(want)
            for key, value in want.items():
                if value == "NaN":
                    assert math.isnan(got[key])
                elif key == "timestamp":
                    assert got[key] == pytest.approx(value, abs=1_000)  # float: digits lost
                else:
                    assert got[key] == value


@pytest.mark.parametrize("sdk_sim", [3, 7], indirect=True)
async def test_sdk_parses_every_answer_at_every_stage(sdk_sim: SdkSim) -> None:
    sim = sdk_sim
    seen: set[str] = set()
    nan_forms: set[str] = set()
    for moment in _visit_times(sim.world):
        sim.clock.advance(moment - sim.clock.now())
        listed = await sim.run("list")
        assert [job.id for job in listed.data] == sim.world.job_ids()
        for job in listed.data:
            assert job.status == sim.world.status(job.id)
            assert job.events is None  # the list leaves them out
            seen.add(job.status)
            full = await sim.run("retrieve", job.id)
            assert full.id == job.id
            assert full.status == job.status
            assert full.created_at == job.created_at
            assert [e.type for e in full.events] == [e["type"] for e in sim.world.events(job.id)]
            if job.status == "running":
                assert full.progress is not None
            events = (await sim.run("list_events", job.id)).data
            assert [e.type for e in events] == [e.type for e in full.events]
            checkpoints = (await sim.run("list_checkpoints", job.id)).data
            assert [c.step for c in checkpoints] == [
                c["step"] for c in sim.world.checkpoints(job.id)
            ]
            await _check_metrics(sim, job.id)
            quirks = sim.world.quirks(job.id)
            if quirks.nan_step is not None and sim.world.metrics(job.id):
                nan_forms.add(quirks.nan_form)
    assert seen == ALL_STATUSES
    assert nan_forms  # the account's NaN job was parsed in its form


async def test_sdk_sees_the_nan_in_both_forms() -> None:
    forms = {}
    for seed in (3, 7):
        clock = SimClock(start_unix=START, frozen=True)
        world = TogetherWorld(jobs=12, seed=seed, clock=clock)
        clock.advance(30_000)
        job_id = next(j for j in world.job_ids() if world.quirks(j).nan_step is not None)
        quirks = world.quirks(job_id)
        async with serve_app(build_app(world)) as served:
            client = _client(served.url)
            step = quirks.nan_step
            answer = await asyncio.to_thread(
                client.fine_tuning.list_metrics, job_id, global_step_from=step, global_step_to=step
            )
        (entry, *_) = answer.metrics
        forms[quirks.nan_form] = entry
    assert set(forms) == {"string", "omit"}
    assert math.isnan(forms["string"]["train/loss"])
    assert "train/loss" not in forms["omit"]


async def test_sdk_errors(sdk_sim: SdkSim) -> None:
    with pytest.raises(together.NotFoundError) as missing:
        await sdk_sim.run("retrieve", "ft-00000000-0000-4000-8000-000000000000")
    body: Any = missing.value.body
    assert body["error"]["message"].endswith("not found")
    with pytest.raises(together.BadRequestError):
        await sdk_sim.run("list_metrics", sdk_sim.world.job_ids()[0], resolution=0)
    wrong = _client(sdk_sim.url, key="nope")
    with pytest.raises(together.AuthenticationError):
        await asyncio.to_thread(wrong.fine_tuning.list)


async def test_base_url_is_the_server_root(sdk_sim: SdkSim) -> None:
    await sdk_sim.run("list")
    assert sdk_sim.world.request_counts["list_jobs"] == 1
    with_v1 = _client(sdk_sim.url + "/v1")
    with pytest.raises(together.NotFoundError):
        await asyncio.to_thread(with_v1.fine_tuning.list)  # it asks for /v1/v1/fine-tunes
    assert sdk_sim.world.request_counts["list_jobs"] == 1
