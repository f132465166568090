"""Every upstream fault, injected by the simulator: the exporter keeps serving the last good data,
says what happened in its metrics and (once) in its log, and recovers on the first good answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from exporter.simulator import Fault
from exporter.simulator.cohere import CohereWorld
from exporter.upstream.client import RetryPolicy
from tests.stack import Stack, model_sample, run_labels, simulated_stack

pytestmark = pytest.mark.integration
SCRAPE_DEADLINE = aiohttp.ClientTimeout(total=5)


@dataclass(frozen=True)
class Case:
    fault: Fault
    code: str  # the code label the request counter must show


COHERE = frozenset({("provider", "cohere")})
STEP_FAULTS = {
    "500": Case(Fault(kind="status", status=500), "500"),
    "502": Case(Fault(kind="status", status=502), "502"),
    "503": Case(Fault(kind="status", status=503), "503"),
    "504": Case(Fault(kind="status", status=504), "504"),
    "401": Case(Fault(kind="status", status=401), "401"),
    "403": Case(Fault(kind="status", status=403), "403"),
    "404-one-model": Case(Fault(kind="status", status=404), "404"),
    "429-seconds": Case(
        Fault(kind="rate-limit", retry_after="seconds", retry_after_seconds=1), "429"
    ),
    "429-http-date": Case(
        Fault(kind="rate-limit", retry_after="http-date", retry_after_seconds=1), "429"
    ),
    "429-no-header": Case(Fault(kind="rate-limit"), "429"),
    "reset": Case(Fault(kind="reset"), "connection_error"),
    "hang": Case(Fault(kind="hang", hang_seconds=30), "timeout"),
    "trickle": Case(Fault(kind="trickle", trickle_interval=0.2), "timeout"),
    "invalid-json": Case(Fault(kind="invalid-json"), "invalid_body"),
    "list-body": Case(Fault(kind="list-body"), "invalid_body"),
    "string-step": Case(Fault(kind="string-step", endpoint="list_step_metrics"), "invalid_body"),
    "html-200": Case(Fault(kind="html-200"), "invalid_body"),
    "huge-body": Case(Fault(kind="huge-body", huge_bytes=12 * 1024 * 1024), "invalid_body"),
    # Every page of a repeating walk is a good answer: the walk, not a body, is refused.
    "repeat-token": Case(Fault(kind="repeat-token", endpoint="list_step_metrics"), "200"),
}


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with simulated_stack(
        models=5,
        step_order="oldest-first",  # so that a repeating page token is followed
        poll_page_size=2,
        cohere_timeout="1",
        retry=RetryPolicy(max_retries=0, rate_limit_delay=0.3),
        poll_discovery_interval="100000",
    ) as built:
        yield built


def training_model(stack: Stack) -> str:
    world: CohereWorld = stack.world
    return next(m for m in world.model_ids() if world.status(m) == "STATUS_FINETUNING")


async def scrape_text(stack: Stack) -> str:
    async with stack.http.get(stack.exporter_url + "/metrics", timeout=SCRAPE_DEADLINE) as answer:
        assert answer.status == 200
        return await answer.text()


def step_lines(text: str, model_id: str) -> list[str]:
    return sorted(
        line for line in text.splitlines() if line.startswith("finetune_step_") and model_id in line
    )


def warnings_about(records: list[logging.LogRecord], model_id: str) -> int:
    return sum(
        1 for r in records if r.levelno >= logging.WARNING and getattr(r, "run", None) == model_id
    )


@pytest.mark.parametrize("name", list(STEP_FAULTS))
async def test_step_endpoint_faults(
    stack: Stack, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    case = STEP_FAULTS[name]
    target = training_model(stack)
    await stack.exporter.run_cycle()
    good = step_lines(await scrape_text(stack), target)
    assert good, "the model has step data before the fault"
    stack.sim_clock.advance(600)  # new steps appear on the API while it misbehaves

    stack.faults.set([Fault(**{**case.fault.to_json(), "model": target})])
    caplog.set_level(logging.INFO)
    for _ in range(3):
        cycle = asyncio.create_task(stack.exporter.run_cycle())
        text = await scrape_text(stack)  # answered while the cycle is still waiting
        assert step_lines(text, target) == good, "last good values stay in place"
        await cycle
        stack.poll_clock.advance(3600)  # past any auth backoff

    samples = await stack.samples()
    assert model_sample(samples, "finetune_run_up", target) == 0.0
    codes = {
        dict(labels)["code"]
        for (metric, labels) in samples
        if metric == "finetune_api_requests_total"
        and dict(labels)["endpoint"] == "list_step_metrics"
    }
    assert case.code in codes
    assert warnings_about(caplog.records, target) == 1, "logged once, not once per poll"
    other = next(m for m in stack.world.model_ids() if m != target)
    assert model_sample(samples, "finetune_run_up", other) == 1.0
    assert step_lines(await scrape_text(stack), target) == good

    stack.faults.clear()
    await stack.exporter.run_cycle()
    recovered = await stack.samples()
    assert model_sample(recovered, "finetune_run_up", target) == 1.0
    newest = stack.world.newest_step(target)
    assert newest is not None
    assert model_sample(recovered, "finetune_step_number", target) == newest.step_number
    assert any(r.getMessage() == "run polling recovered" for r in caplog.records)


LIST_FAULTS = {
    "404-list": (Fault(kind="status", status=404, endpoint="list_models"), "404"),
    "410-list": (Fault(kind="status", status=410, endpoint="list_models"), "410"),
    "401-list": (Fault(kind="status", status=401, endpoint="list_models"), "401"),
    "503-list": (Fault(kind="status", status=503, endpoint="list_models"), "503"),
    "reset-list": (Fault(kind="reset", endpoint="list_models"), "connection_error"),
    "repeat-token-list": (Fault(kind="repeat-token", endpoint="list_models"), "200"),
    "unknown-status": (Fault(kind="unknown-status", endpoint="list_models"), "200"),
}


@pytest.mark.parametrize("name", list(LIST_FAULTS))
async def test_model_list_faults(stack: Stack, name: str, caplog: pytest.LogCaptureFixture) -> None:
    fault, code = LIST_FAULTS[name]
    await stack.exporter.run_cycle()
    before = sorted(m.id for m in stack.exporter.snapshot.runs)
    stack.faults.set([fault])
    caplog.set_level(logging.INFO)
    for _ in range(3):
        stack.poll_clock.advance(200_000)  # every cycle walks the model list again
        await stack.exporter.run_cycle()
    samples = await stack.samples()
    key = frozenset({("provider", "cohere"), ("endpoint", "list_models"), ("code", code)})
    assert samples[("finetune_api_requests_total", key)] >= 1
    assert sorted(m.id for m in stack.exporter.snapshot.runs) == before
    discovery_logs = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "discovery" in r.getMessage()
    ] + [r for r in caplog.records if "serves no fine-tuning" in r.getMessage()]
    if name == "unknown-status":
        statuses = {m.run.status for m in stack.exporter.snapshot.runs}
        assert statuses == {"STATUS_FROM_THE_FUTURE"}  # passed through, not an error
        labels = run_labels(before[0], status="STATUS_FROM_THE_FUTURE")
        assert samples[("finetune_run_status", labels)] == 1.0
        assert samples[("finetune_run_phase", run_labels(before[0], phase="unknown"))] == 1.0
        return
    assert len(discovery_logs) <= 1
    if name in ("404-list", "410-list"):
        assert [r.getMessage() for r in caplog.records if "serves no fine-tuning" in r.getMessage()]
    stack.faults.clear()
    stack.poll_clock.advance(200_000)
    await stack.exporter.run_cycle()
    assert samples is not None
    assert (await stack.samples())[("finetune_up", COHERE)] == 1.0


async def test_refused_connection_is_survived() -> None:
    async with simulated_stack(models=3, cohere_max_retries="0") as stack:
        await stack.exporter.run_cycle()
        good = sorted(m.id for m in stack.exporter.snapshot.runs)
        await stack.stop_simulator()
        stack.poll_clock.advance(1_000)
        await stack.exporter.run_cycle()
        samples = await stack.samples()
        assert samples[("finetune_up", COHERE)] == 0.0
        assert sorted(m.id for m in stack.exporter.snapshot.runs) == good
        key = frozenset(
            {("provider", "cohere"), ("endpoint", "list_models"), ("code", "connection_error")}
        )
        assert samples[("finetune_api_requests_total", key)] == 1.0


async def test_a_fifth_of_requests_failing_leaves_every_model_served() -> None:
    quick = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.001)
    async with simulated_stack(models=10, retry=quick) as stack:
        stack.faults.set([Fault(kind="status", status=503, probability=0.2)])
        for _ in range(5):
            await stack.exporter.run_cycle()
            stack.poll_clock.advance(60)
        samples = await stack.samples()
        served = [
            m
            for m in stack.world.model_ids()
            if model_sample(samples, "finetune_step_number", m) is not None
        ]
        with_steps = [m for m in stack.world.model_ids() if stack.world.newest_step(m)]
        assert served == with_steps
        assert stack.faults.injected["status"] > 0
