"""Injected faults as a client sees them, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter.simulator import Fault, FaultInjector, SimClock, build_app
from exporter.simulator.cohere import CohereWorld
from exporter.simulator.cohere.app import UNKNOWN_STATUS
from exporter.simulator.responses import HTML_BODY, PADDING_FIELD, error_message

pytestmark = pytest.mark.integration

START = 1_700_000_000.0
MODELS = "/v1/finetuning/finetuned-models"
DEADLINE = 10.0  # seconds; only ever a bound on waiting for something that must happen


@dataclass
class Tracker:
    """Server-side signals: each API request reaching the app and its handler returning."""

    events: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)

    async def wait(self, phase: str, path: str) -> None:
        async with asyncio.timeout(DEADLINE):
            while await self.events.get() != (phase, path):
                pass


@dataclass
class Sim:
    world: CohereWorld
    faults: FaultInjector
    tracker: Tracker
    base: str
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.base + path

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.url(path), **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str, **kwargs: Any) -> Any:
        status, body = await self.call("GET", path, **kwargs)
        assert status == 200, body
        return body

    def steps_path(self, index: int = 0) -> str:
        return f"{MODELS}/{self.world.model_ids()[index]}/training-step-metrics"


SimFactory = Callable[..., Awaitable[Sim]]


def _tracking(tracker: Tracker) -> Any:
    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        tracker.events.put_nowait(("started", request.path))
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            tracker.events.put_nowait(("finished", request.path))

    return track


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(
        *faults: Fault, handler_cancellation: bool = False, seed: int = 0, **world_args: Any
    ) -> Sim:
        world_args.setdefault("models", 4)
        world = CohereWorld(clock=SimClock(start_unix=START, frozen=True), **world_args)
        injector = FaultInjector(faults, seed=seed)
        tracker = Tracker()
        app = build_app(world, injector)
        app.middlewares.insert(0, _tracking(tracker))
        runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return Sim(world, injector, tracker, f"http://{host}:{port}", session)

    yield start
    await session.close()
    for runner in runners:
        await runner.cleanup()


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


async def test_invalid_json(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="invalid-json"))
    async with sim.session.get(sim.url(sim.steps_path())) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        text = await resp.text()
    assert text == '{"step_metrics": ['
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


async def test_list_body(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="list-body"))
    assert await sim.call("GET", MODELS) == (200, [])


async def test_html_200(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="html-200"))
    async with sim.session.get(sim.url(sim.steps_path())) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert await resp.text() == HTML_BODY == "<html><body>Maintenance</body></html>"


async def test_string_step(sim_factory: SimFactory) -> None:
    sim = await sim_factory()
    real = await sim.get(sim.steps_path(), params={"page_size": "3"})
    sim.faults.set([Fault(kind="string-step")])
    body = await sim.get(sim.steps_path(), params={"page_size": "3"})
    assert body["step_metrics"][0]["step_number"] == "seven"
    assert body["step_metrics"][0]["metrics"] == real["step_metrics"][0]["metrics"]
    assert body["step_metrics"][1:] == real["step_metrics"][1:]
    assert body["next_page_token"] == real["next_page_token"]
    # Other endpoints are left alone by a string-step fault.
    assert "finetuned_models" in await sim.get(MODELS)


async def test_string_step_on_an_empty_page(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="string-step"))
    queued = sim.world.add_model()
    assert sim.world.steps(queued) == []
    body = await sim.get(f"{MODELS}/{queued}/training-step-metrics")
    assert body["step_metrics"] == [{"step_number": "seven"}]


async def test_unknown_status(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="unknown-status"))
    models = (await sim.get(MODELS))["finetuned_models"]
    assert [m["status"] for m in models] == [UNKNOWN_STATUS] * 4
    model_id = sim.world.model_ids()[0]
    got = await sim.get(f"{MODELS}/{model_id}")
    assert got["finetuned_model"]["status"] == "STATUS_FROM_THE_FUTURE"
    assert got["finetuned_model"]["id"] == model_id
    # An error answer stays an error.
    status, _ = await sim.call("GET", f"{MODELS}/no-such-model")
    assert status == 404


async def test_huge_body(sim_factory: SimFactory) -> None:
    size = 5 * 1024 * 1024
    sim = await sim_factory(Fault(kind="huge-body", huge_bytes=size))
    received = bytearray()
    async with sim.session.get(sim.url(sim.steps_path())) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert resp.content_length == size
        async for chunk in resp.content.iter_chunked(256 * 1024):
            received += chunk
    assert len(received) == size
    body = json.loads(received)
    assert isinstance(body, dict)
    assert len(body[PADDING_FIELD]) > size - 10_000
    assert body["step_metrics"]  # the real page follows the padding


async def test_repeat_token(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="repeat-token"))
    path = sim.steps_path()
    first = await sim.get(path, params={"page_size": "2"})
    token = first["next_page_token"]
    assert token
    second = await sim.get(path, params={"page_size": "2", "page_token": token})
    assert second["next_page_token"] == token
    assert second["step_metrics"] == first["step_metrics"]
    # Even a single page gets a token that never runs out.
    single = await sim.get(MODELS)
    assert single["next_page_token"]
    again = await sim.get(MODELS, params={"page_token": single["next_page_token"]})
    assert again["next_page_token"] == single["next_page_token"]


async def _read(sim: Sim, path: str) -> tuple[int, str, int | None, bytes]:
    """Status, content type, announced length and the whole body, within the deadline."""
    async with asyncio.timeout(DEADLINE), sim.session.get(sim.url(path)) as resp:
        return resp.status, resp.content_type, resp.content_length, await resp.read()


def _max_depth(body: bytes) -> int:
    """How deep the brackets of ``body`` nest, failing on any unbalanced one (no recursion)."""
    depth = deepest = 0
    for byte in body:
        depth += {ord("["): 1, ord("]"): -1}.get(byte, 0)
        assert depth >= 0, "a ] closes nothing"
        deepest = max(deepest, depth)
    assert depth == 0, "brackets left open"
    return deepest


async def test_deep_nesting(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault.parse("kind=deep-nesting"))
    status, content_type, length, body = await _read(sim, MODELS)
    assert (status, content_type) == (200, "application/json")
    assert length == len(body) == 2 * 100_000
    assert _max_depth(body) == 100_000
    assert set(body[:100_000]) == {ord("[")}  # nothing but brackets: valid JSON, just deep


async def test_deep_nesting_of_a_given_depth_is_valid_json(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault(kind="deep-nesting", depth=40, endpoint="list_step_metrics"))
    _, _, _, body = await _read(sim, sim.steps_path())
    value = json.loads(body)
    for _ in range(39):
        assert isinstance(value, list)
        assert len(value) == 1
        value = value[0]
    assert value == []
    # Operations whose answer is no list are left alone.
    assert (await sim.get(f"{MODELS}/{sim.world.model_ids()[0]}"))["finetuned_model"]


async def test_entry_flood_of_a_million_empty_objects(sim_factory: SimFactory) -> None:
    sim = await sim_factory(Fault.parse("kind=entry-flood,endpoint=list_models"))
    status, content_type, length, body = await _read(sim, MODELS)
    assert (status, content_type) == (200, "application/json")
    assert length == len(body) <= 8 * 1024 * 1024 - 1024
    listed = json.loads(body)
    assert list(listed) == ["finetuned_models"]
    assert len(listed["finetuned_models"]) == 1_000_000
    assert all(entry == {} for entry in listed["finetuned_models"])


async def test_entry_flood_of_ids_is_cut_to_the_cap(sim_factory: SimFactory) -> None:
    cap = 8 * 1024 * 1024 - 1024
    sim = await sim_factory(Fault.parse('kind=entry-flood,entry={"id":"x"}'))
    _, _, length, body = await _read(sim, sim.steps_path())
    assert length == len(body) <= cap
    ids = json.loads(body)["step_metrics"]
    assert 700_000 < len(ids) < 1_000_000  # cut from a million to what fits
    assert len(body) + len(',{"id":"x"}') > cap  # and not one entry more would have
    assert all(entry == {"id": "x"} for entry in ids)


@pytest.mark.parametrize(
    ("suffix", "field"),
    [("", "finetuned_models"), ("/events", "events"), ("/training-step-metrics", "step_metrics")],
)
async def test_entry_flood_fills_each_lists_own_field(
    sim_factory: SimFactory, suffix: str, field: str
) -> None:
    sim = await sim_factory(api_key="sekrit")
    payload = {"faults": [{"kind": "entry-flood", "entries": 3, "entry": '{"id":"x","n":1}'}]}
    status, report = await sim.call("POST", "/simulator/faults", json=payload)
    assert status == 200, report
    path = MODELS + (f"/{sim.world.model_ids()[0]}{suffix}" if suffix else "")
    headers = {"Authorization": "Bearer sekrit"}
    status, body = await sim.call("GET", path, headers=headers)
    assert (status, body) == (200, {field: [{"id": "x", "n": 1}] * 3})


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
