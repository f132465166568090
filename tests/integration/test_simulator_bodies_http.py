"""Injected bad bodies as a client sees them (invalid, huge, deep, flooded), over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from exporter.simulator import Fault
from exporter.simulator.cohere.app import UNKNOWN_STATUS
from exporter.simulator.responses import HTML_BODY, PADDING_FIELD
from tests.simulator_faults_support import DEADLINE, MODELS, Sim, SimFactory, sim_servers

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    async with sim_servers() as start:
        yield start


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
