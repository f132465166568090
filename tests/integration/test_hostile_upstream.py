"""Faults and hostile answers of either provider: the last good data stays, the trouble is
counted and logged once, every other run and the other provider keep updating, and the HTTP side
never stalls."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from exporter.simulator import Fault
from exporter.simulator.together import TogetherWorld
from exporter.upstream.client import RetryPolicy
from tests.stack import Stack, model_sample, simulated_stack

pytestmark = pytest.mark.integration
SCRAPE_DEADLINE = aiohttp.ClientTimeout(total=5)


@dataclass(frozen=True)
class Case:
    fault: Fault
    code: str  # the code label the request counter must show


TOGETHER_FAULTS = {
    "503": Case(Fault(kind="status", status=503), "503"),
    "401": Case(Fault(kind="status", status=401), "401"),
    "404": Case(Fault(kind="status", status=404), "404"),
    "429": Case(Fault(kind="rate-limit", retry_after="seconds", retry_after_seconds=1), "429"),
    "reset": Case(Fault(kind="reset"), "connection_error"),
    "hang": Case(Fault(kind="hang", hang_seconds=30), "timeout"),
    "invalid-json": Case(Fault(kind="invalid-json"), "invalid_body"),
    "list-body": Case(Fault(kind="list-body"), "invalid_body"),
    "string-step": Case(Fault(kind="string-step", endpoint="list_metrics"), "invalid_body"),
    "html-200": Case(Fault(kind="html-200"), "invalid_body"),
    "huge-body": Case(Fault(kind="huge-body", huge_bytes=12 * 1024 * 1024), "invalid_body"),
    "deep-nesting": Case(Fault(kind="deep-nesting"), "invalid_body"),
    "entry-flood": Case(Fault(kind="entry-flood", endpoint="list_metrics"), "invalid_body"),
}


@pytest.fixture
async def together() -> AsyncIterator[Stack]:
    async with simulated_stack(
        providers=("together",),
        models=5,
        together_timeout="1",
        retry=RetryPolicy(max_retries=0, rate_limit_delay=0.3),
        poll_discovery_interval="100000",
    ) as built:
        yield built


def running_job(stack: Stack) -> str:
    world: TogetherWorld = stack.world
    return next(j for j in world.job_ids() if world.status(j) == "running")


async def scrape_text(stack: Stack) -> str:
    async with stack.http.get(stack.exporter_url + "/metrics", timeout=SCRAPE_DEADLINE) as answer:
        assert answer.status == 200
        return await answer.text()


def step_lines(text: str, run_id: str) -> list[str]:
    return sorted(
        line for line in text.splitlines() if line.startswith("finetune_step_") and run_id in line
    )


def warnings_about(records: list[logging.LogRecord], run_id: str) -> int:
    return sum(
        1 for r in records if r.levelno >= logging.WARNING and getattr(r, "run", "") == run_id
    )


@pytest.mark.parametrize("name", list(TOGETHER_FAULTS))
async def test_together_metrics_faults(
    together: Stack, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    stack, case = together, TOGETHER_FAULTS[name]
    target = running_job(stack)
    await stack.exporter.run_cycle()
    good = step_lines(await scrape_text(stack), target)
    assert good, "the job has step data before the fault"
    stack.sim_clock.advance(120)  # new steps appear while the API misbehaves
    stack.faults.set([case.fault.model_copy(update={"model": target, "endpoint": "list_metrics"})])
    caplog.set_level(logging.INFO)
    for _ in range(3):
        cycle = asyncio.create_task(stack.exporter.run_cycle())
        assert step_lines(await scrape_text(stack), target) == good  # answered meanwhile
        await cycle
        stack.poll_clock.advance(3600)  # past any auth backoff
    samples = await stack.samples()
    assert model_sample(samples, "finetune_run_up", target, "together") == 0.0
    requests = {
        (dict(labels)["endpoint"], dict(labels)["code"])
        for (metric, labels) in samples
        if metric == "finetune_api_requests_total"
    }
    assert ("list_metrics", case.code) in requests
    assert warnings_about(caplog.records, target) == 1, "logged once, not once per poll"
    other = next(j for j in stack.world.job_ids() if j != target)
    assert model_sample(samples, "finetune_run_up", other, "together") == 1.0
    stack.faults.clear()
    await stack.exporter.run_cycle()
    recovered = await stack.samples()
    assert model_sample(recovered, "finetune_run_up", target, "together") == 1.0
    (truth,) = [t for t in stack.world.truth() if t["id"] == target]
    newest = model_sample(recovered, "finetune_step_number", target, "together")
    assert newest == truth["newest_step"]["step_number"]


async def test_a_failing_provider_never_touches_the_other() -> None:
    async with simulated_stack(providers=("cohere", "together"), models=4) as stack:
        await stack.exporter.run_cycle()
        before = await stack.samples()
        cohere_runs = stack.sim("cohere").world.run_ids()
        await stack.stop_simulator("together")  # Together is gone: refused connections
        stack.sim("cohere").world.clock.advance(300)
        stack.poll_clock.advance(60)
        await stack.exporter.run_cycle()
        after = await stack.samples()
    assert after[("finetune_up", frozenset({("provider", "together")}))] == 0.0
    assert after[("finetune_up", frozenset({("provider", "cohere")}))] == 1.0
    moved = 0
    for run in cohere_runs:
        assert model_sample(after, "finetune_run_up", run) == 1.0
        old = model_sample(before, "finetune_step_number", run)
        new = model_sample(after, "finetune_step_number", run)
        moved += old is not None and new is not None and new > old
    assert moved, "Cohere runs keep updating"
    world = stack.sim("together").world
    assert isinstance(world, TogetherWorld)
    busy = [j for j in world.job_ids() if world.status(j) in ("pending", "queued", "running")]
    assert busy
    for run in busy:  # polled and refused: last good values stay, marked down
        assert model_sample(after, "finetune_run_up", run, "together") == 0.0
        assert model_sample(after, "finetune_step_number", run, "together") == model_sample(
            before, "finetune_step_number", run, "together"
        )


async def healthz_delays(stack: Stack, until: asyncio.Task[object]) -> list[float]:
    """Seconds each /healthz took while ``until`` runs."""
    delays = []
    while not until.done():
        started = time.perf_counter()
        async with stack.http.get(stack.exporter_url + "/healthz", timeout=SCRAPE_DEADLINE) as r:
            assert r.status == 200
        delays.append(time.perf_counter() - started)
        await asyncio.sleep(0.005)
    return delays


@pytest.mark.parametrize(
    ("provider", "fault", "endpoint"),
    [
        ("cohere", Fault(kind="entry-flood"), "list_models"),
        ("cohere", Fault(kind="entry-flood", entry='{"id":"x"}'), "list_models"),
        ("cohere", Fault(kind="deep-nesting"), "list_models"),
        ("cohere", Fault(kind="entry-flood"), "list_step_metrics"),
        ("together", Fault(kind="entry-flood"), "list_jobs"),
        ("together", Fault(kind="entry-flood"), "list_metrics"),
        ("together", Fault(kind="deep-nesting"), "list_metrics"),
    ],
)
async def test_a_hostile_body_fails_fast_and_small(
    provider: str, fault: Fault, endpoint: str
) -> None:
    """Bodies of a million entries or 100,000 nested brackets, under the 8 MiB cap: parsed off
    the event loop and given up early, so probes stay fast and memory stays flat."""
    async with simulated_stack(providers=(provider,), models=4) as stack:
        await stack.exporter.run_cycle()
        stack.faults.set([fault.model_copy(update={"endpoint": endpoint})])
        stack.poll_clock.advance(100_000)  # discovery due
        tracemalloc.start()
        try:
            cycle = asyncio.create_task(stack.exporter.run_cycle())
            delays = await healthz_delays(stack, cycle)
            await cycle
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        samples = await stack.samples()
        key = frozenset({("provider", provider), ("endpoint", endpoint), ("code", "invalid_body")})
        assert samples[("finetune_api_requests_total", key)] >= 1
        assert max(delays) < 0.5, delays
        assert peak < 150 * 1024 * 1024, peak
        assert stack.exporter.snapshot.runs, "the runs known before stay"
