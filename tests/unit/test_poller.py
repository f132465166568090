"""The poll loop against a provider the test controls: progress, readiness, budget, log lines."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from exporter.core import poller as poller_module
from exporter.core.discovery import Discovery
from exporter.core.hub import SnapshotHub
from exporter.core.poller import Poller
from exporter.core.problems import ProblemLog
from exporter.core.provider import Cursor, Run, StepRecord
from exporter.core.runbook import RunBook
from exporter.core.sharding import EVERY_RUN
from exporter.core.snapshot import ProviderPart, Snapshot
from exporter.core.spikes import SpikeRule
from exporter.settings import Settings, load_settings
from exporter.upstream.errors import ApiStatusError

DEADLINE = 5.0


@dataclass
class GatedProvider:
    """Runs whose steps arrive only when the test opens their gate; lookups may fail."""

    run_ids: Sequence[str]
    failing_lookups: frozenset[str] = frozenset()
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    name: str = "cohere"
    statuses: tuple[str, ...] = ("STATUS_FINETUNING",)

    def __post_init__(self) -> None:
        self.gates = {run_id: asyncio.Event() for run_id in self.run_ids}

    def run(self, run_id: str) -> Run:
        return Run(id=run_id, name=run_id, status="STATUS_FINETUNING", phase="training")

    async def list_runs(self) -> AsyncIterator[list[Run]]:
        yield [self.run(run_id) for run_id in self.run_ids]

    async def get_run(self, run_id: str) -> Run:
        if run_id in self.failing_lookups:
            raise ApiStatusError("get_model", 503, "service unavailable")
        return self.run(run_id)

    async def steps_after(
        self, run: Run, position: int | None, cursor: Cursor
    ) -> Sequence[StepRecord]:
        await self.gates[run.id].wait()
        return [StepRecord(4, 1.0, {"loss": 1.0})]

    async def all_steps(self, run: Run) -> Sequence[StepRecord]:
        return []


@dataclass
class Rig:
    poller: Poller
    hub: SnapshotHub
    provider: GatedProvider


def rig(provider: GatedProvider, settings: Settings, *, per_minute: int = 400) -> Rig:
    problems = ProblemLog(logging.getLogger("exporter.core"))
    hub = SnapshotHub([provider.name], lambda snapshot: None)
    discovery = Discovery(
        provider,
        run_ids=settings.cohere_models,
        max_runs=settings.limits_max_models,
        shard=EVERY_RUN,
        concurrency=settings.poll_concurrency,
    )
    book = RunBook(
        provider.name,
        rule=SpikeRule.from_settings(settings),
        max_metrics=settings.limits_max_metrics_per_model,
        problems=problems,
    )
    poller = Poller(
        provider,
        discovery,
        book,
        settings=settings,
        requests_per_minute=per_minute,
        problems=problems,
        publish=hub.publish,
    )
    return Rig(poller, hub, provider)


async def wait_for_snapshot(hub: SnapshotHub, ready: bool, with_steps: int) -> Snapshot:
    """The first published snapshot with exactly ``with_steps`` runs that have a step."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        snapshot = hub.snapshot
        stepped = sum(1 for view in snapshot.runs if view.newest_step is not None)
        if snapshot.ready is ready and stepped == with_steps:
            return snapshot
        await asyncio.sleep(0.01)
    raise AssertionError(f"no snapshot with ready={ready} and {with_steps} stepped runs")


async def test_a_long_first_cycle_publishes_what_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "PROGRESS_SECONDS", 0.05)
    ids = [f"run-{n}" for n in range(6)]
    made = rig(GatedProvider(ids), load_settings(poll_concurrency=2))
    cycle = asyncio.create_task(made.poller.run_cycle())
    for run_id in ids[:3]:
        made.provider.gates[run_id].set()
    partial = await wait_for_snapshot(made.hub, ready=False, with_steps=3)
    assert len(partial.runs) == 6  # every discovered run is shown, polled or not
    assert not cycle.done()
    for run_id in ids[3:]:
        made.provider.gates[run_id].set()
    await asyncio.wait_for(cycle, DEADLINE)
    assert made.hub.snapshot.ready  # /readyz turns 200 only with the first full cycle
    assert sum(1 for view in made.hub.snapshot.runs if view.newest_step is not None) == 6


def test_progress_is_published_less_often_when_preparing_it_is_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poller_module, "PROGRESS_SECONDS", 5.0)
    assert poller_module.progress_interval(0.0) == 5.0
    assert poller_module.progress_interval(0.4) == 5.0
    assert poller_module.progress_interval(1.5) == 15.0  # preparing stays a tenth of the time


async def test_the_hub_measures_how_long_preparing_took() -> None:
    hub = SnapshotHub(["sim"], lambda snapshot: time.sleep(0.02) if snapshot.version else None)
    assert hub.prepare_seconds == 0.0
    await hub.publish(ProviderPart(name="sim", runs=(), up=True, ready=True, finished_at=None))
    assert hub.prepare_seconds >= 0.02
    assert hub.snapshot.version == 1


async def test_a_budget_too_small_for_the_account_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = [f"run-{n}" for n in range(30)]
    provider = GatedProvider(ids)
    for gate in provider.gates.values():
        gate.set()
    settings = load_settings(poll_interval="60", poll_discovery_interval="0.001")
    made = rig(provider, settings, per_minute=20)
    caplog.set_level(logging.INFO)
    for _ in range(3):  # each cycle discovers again and finds the same shortfall
        await made.poller.run_cycle()
        await asyncio.sleep(0.002)
    warnings = [r for r in caplog.records if "request budget" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    (warning,) = warnings
    assert "--cohere.max-requests-per-minute" in warning.getMessage()
    assert "--poll.interval" in warning.getMessage()
    assert (warning.active_runs, warning.requests_per_interval) == (30, 20)  # type: ignore[attr-defined]
    assert warning.cycle_seconds == 90  # type: ignore[attr-defined]


async def test_one_failing_lookup_is_logged_once_and_never_as_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = GatedProvider(["good", "bad"], failing_lookups=frozenset({"bad"}))
    for gate in provider.gates.values():
        gate.set()
    settings = load_settings(cohere_models="good,bad", poll_discovery_interval="0.001")
    made = rig(provider, settings)
    caplog.set_level(logging.INFO)
    for _ in range(4):  # each cycle discovers again
        await made.poller.run_cycle()
        await asyncio.sleep(0.002)
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("run lookup failed") == 1, messages
    assert not [m for m in messages if "recovered" in m], messages
    provider.failing_lookups = frozenset()
    await asyncio.sleep(0.002)
    await made.poller.run_cycle()
    assert [r.getMessage() for r in caplog.records].count("run lookup recovered") == 1
