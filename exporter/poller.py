"""The poll loop: discover models, fetch the newest step of each, publish one snapshot per cycle.

Calls cost money (trial keys get 1,000 a month), so the rules are: one request per active model
per cycle in the documented newest-first order; models in a final state are read once and then
only every ``final_refresh_interval``; the model list is walked only every
``discovery_interval``. The newest step is the highest ``step_number`` seen, whatever order the
pages come in, because the official example contradicts the documented order.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar

from exporter.api.client import (
    MAX_PAGES,
    ApiResponseError,
    ApiStatusError,
    ApiTransportError,
    CohereApiError,
    CohereClient,
)
from exporter.api.models import FinetunedModel, TrainingStepMetrics
from exporter.config import FINAL_STATUSES
from exporter.sharding import Shard
from exporter.snapshot import EMPTY, ModelView, Snapshot, Step
from exporter.spikes import SpikeRule, SpikeTracker
from exporter.state import ModelState, load_state, save_state

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
StepOrder = Literal["unknown", "newest-first", "oldest-first"]
LIST_PAGE_SIZE = 100


@dataclass
class PollSettings:
    """The knobs of the poll loop, separate from ``Settings`` so tests can build them directly."""

    interval: float = 60.0
    concurrency: int = 8
    discovery_interval: float = 300.0
    final_refresh_interval: float = 21600.0
    page_size: int = 50
    model_ids: tuple[str, ...] = ()
    max_models: int = 5000
    max_metrics_per_model: int = 100
    max_auth_backoff: float = 900.0
    shard: Shard = field(default_factory=Shard)
    spike_rule: SpikeRule = field(default_factory=SpikeRule)
    state_file: Path | None = None


@dataclass
class Tracked:
    """Mutable per-model state that lives in the poller between cycles (never in a snapshot)."""

    model: FinetunedModel
    newest: Step | None = None
    order: StepOrder = "unknown"
    resume_token: str = ""
    up: bool = False
    last_success: float | None = None
    final_read_at: float | None = None
    missing: bool = False
    problem: str | None = None
    position: int | None = None  # highest step number processed; None until the first poll
    spikes: SpikeTracker = field(default_factory=lambda: SpikeTracker(SpikeRule()))

    @property
    def is_final(self) -> bool:
        return self.model.status in FINAL_STATUSES


def page_order(steps: Sequence[TrainingStepMetrics]) -> StepOrder:
    """What a page says about the order of the whole list, when it has two steps to compare."""
    if len(steps) < 2 or steps[0].step_number == steps[-1].step_number:
        return "unknown"
    return "newest-first" if steps[0].step_number > steps[-1].step_number else "oldest-first"


def _step_key(step: TrainingStepMetrics) -> tuple[int, float]:
    return step.step_number, step.created_at if step.created_at is not None else -math.inf


def to_step(step: TrainingStepMetrics, max_metrics: int) -> tuple[Step, int]:
    """The snapshot's view of a step with at most ``max_metrics`` names, and how many were cut."""
    names = sorted(step.metrics)
    kept = {name: step.metrics[name] for name in names[:max_metrics]}
    return Step.of(step.step_number, step.created_at, kept), max(0, len(names) - max_metrics)


class Poller:
    """Owns the trackers and publishes ``snapshot``; the web side only ever reads that attribute."""

    def __init__(
        self,
        client: CohereClient,
        settings: PollSettings,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        before_publish: Callable[[Snapshot], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._wall = wall_clock
        self._monotonic = monotonic
        self._before_publish = before_publish
        self._tracked: dict[str, Tracked] = {}
        self._discovered_at: float | None = None
        self._discovery_problem: str | None = None
        self._up = False
        self._auth_failures = 0
        self._auth_retry_at: float | None = None
        self.dropped: Counter[str] = Counter()
        self._state_problem: str | None = None
        self._saved: dict[str, ModelState] = (
            load_state(settings.state_file) if settings.state_file is not None else {}
        )
        self.snapshot: Snapshot = EMPTY

    # ----------------------------------------------------------------- schedule

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Run cycles on a fixed grid of ``interval`` seconds; an overrun skips missed slots."""
        start = self._monotonic()
        slot = 0
        interval = self._settings.interval
        while True:
            try:
                await self.run_cycle()
            except Exception:  # a bug must not stop polling for good; the next slot retries
                log.exception("poll cycle crashed")
            elapsed = self._monotonic() - start
            slot = max(slot + 1, math.floor(elapsed / interval) + 1)
            await sleep(max(0.0, start + slot * interval - self._monotonic()))

    async def run_cycle(self) -> Snapshot:
        """One cycle: maybe discover, fetch what is due, publish the snapshot."""
        started = self._monotonic()
        if self._auth_retry_at is not None and started < self._auth_retry_at:
            return await self._publish(self._monotonic() - started)  # rejected key: wait
        outcomes: list[CohereApiError | None] = []
        if self._discovery_due(started):
            outcomes.append(await self._discover())
        due = [t for t in self._tracked.values() if self._fetch_due(t, started)]
        outcomes.extend(await self._fetch_all(due))
        self._up = self._judge_up(outcomes)
        self._schedule_auth_retry(outcomes)
        self._save_state()
        return await self._publish(self._monotonic() - started)

    async def _publish(self, duration: float) -> Snapshot:
        """Build the cycle's snapshot, let ``before_publish`` prepare for it, then swap it in."""
        snapshot = self._build_snapshot(duration)
        if self._before_publish is not None:
            await self._before_publish(snapshot)
        self.snapshot = snapshot
        return snapshot

    def _schedule_auth_retry(self, outcomes: list[CohereApiError | None]) -> None:
        """After 401/403, wait 1, 2, 4... poll intervals (at most ``max_auth_backoff``)."""
        if any(isinstance(o, ApiStatusError) and o.is_auth_failure for o in outcomes):
            delay = min(
                self._settings.max_auth_backoff,
                self._settings.interval * 2**self._auth_failures,
            )
            self._auth_failures += 1
            self._auth_retry_at = self._monotonic() + delay
            if self._auth_failures == 1:
                log.error(
                    "the API rejected the key; retrying with backoff",
                    extra={"next_try_seconds": round(delay, 1)},
                )
        elif outcomes:
            self._auth_failures = 0
            self._auth_retry_at = None

    def _judge_up(self, outcomes: list[CohereApiError | None]) -> bool:
        """Up when the API was reached and authorised; a cycle that asked nothing keeps the last."""
        if not outcomes:
            return self._up
        if any(isinstance(o, ApiStatusError) and o.is_auth_failure for o in outcomes):
            return False
        if self._discovery_problem is not None and self._discovered_at is None:
            return False
        return any(not isinstance(o, ApiTransportError) for o in outcomes)

    def _discovery_due(self, now: float) -> bool:
        return (
            self._discovered_at is None
            or now - self._discovered_at >= self._settings.discovery_interval
        )

    def _fetch_due(self, tracked: Tracked, now: float) -> bool:
        if tracked.missing:
            return False
        if not tracked.is_final:
            return True
        return (
            tracked.final_read_at is None
            or now - tracked.final_read_at >= self._settings.final_refresh_interval
        )

    # ---------------------------------------------------------------- discovery

    async def _discover(self) -> CohereApiError | None:
        """Refresh which models exist and their status; on failure keep what we had."""
        try:
            if self._settings.model_ids:
                await self._refresh_configured()
            else:
                self._merge_listing(await self._client.all_models(page_size=LIST_PAGE_SIZE))
        except CohereApiError as exc:
            self._report_discovery(exc)
            return exc
        self._discovered_at = self._monotonic()
        self._report_discovery(None)
        return None

    def _merge_listing(self, models: list[FinetunedModel]) -> None:
        owns = self._settings.shard.owns
        listed = {m.id: m for m in models if m.id and owns(m.id)}
        excess = len(listed) - self._settings.max_models
        if excess > 0:
            newest_first = sorted(listed.values(), key=lambda m: m.created_at or 0.0, reverse=True)
            listed = {m.id: m for m in newest_first[: self._settings.max_models]}
            self.dropped["models"] += excess
        for gone in self._tracked.keys() - listed.keys():
            log.info("model left the account", extra={"model": gone})
            del self._tracked[gone]
        for model_id, model in listed.items():
            self._update_model(model_id, model)

    async def _refresh_configured(self) -> None:
        mine = [m for m in self._settings.model_ids if self._settings.shard.owns(m)]
        ids = mine[: self._settings.max_models]
        if len(mine) > len(ids):
            self.dropped["models"] += len(mine) - len(ids)

        async def refresh(model_id: str) -> CohereApiError | None:
            try:
                model = await self._client.get_model(model_id)
            except ApiStatusError as exc:
                if exc.status == 404:
                    tracked = self._tracked.setdefault(
                        model_id, self._new_tracked(FinetunedModel(id=model_id))
                    )
                    tracked.missing = True
                    tracked.up = False
                    self._report_model(tracked, exc)
                    return None
                return exc
            except CohereApiError as exc:
                return exc
            self._update_model(model_id, replace_id(model, model_id))
            return None

        errors = [e for e in await self._bounded(refresh, ids) if e is not None]
        if errors and len(errors) == len(ids):
            raise errors[0]
        for exc in errors:
            self._report_discovery(exc)

    def _new_tracked(self, model: FinetunedModel) -> Tracked:
        """A tracker for a newly seen model, resuming where the state file says we stopped."""
        tracked = Tracked(model, spikes=SpikeTracker(self._settings.spike_rule))
        saved = self._saved.pop(model.id, None)
        if saved is not None:
            tracked.position = saved.position
            if saved.order in ("newest-first", "oldest-first"):
                tracked.order = saved.order  # type: ignore[assignment]
            tracked.resume_token = saved.resume_token
            tracked.spikes.restore(saved.history, saved.outliers, saved.nonfinite, saved.processed)
        return tracked

    def _save_state(self) -> None:
        if self._settings.state_file is None:
            return
        models = dict(self._saved)  # models not rediscovered yet keep their saved position
        for model_id, tracked in self._tracked.items():
            if tracked.position is not None:
                models[model_id] = ModelState(
                    position=tracked.position,
                    order=tracked.order,
                    resume_token=tracked.resume_token,
                    history={k: list(v) for k, v in tracked.spikes.history.items()},
                    outliers=dict(tracked.spikes.outliers),
                    nonfinite=dict(tracked.spikes.nonfinite),
                    processed=tracked.spikes.processed,
                )
        problem = save_state(self._settings.state_file, models)
        if problem != self._state_problem:
            if problem is None:
                log.info("the state file is written again")
            else:
                log.warning("cannot write the state file", extra={"error": problem})
            self._state_problem = problem

    def _update_model(self, model_id: str, model: FinetunedModel) -> None:
        tracked = self._tracked.get(model_id)
        if tracked is None:
            self._tracked[model_id] = self._new_tracked(model)
            return
        if tracked.model.status != model.status and model.status in FINAL_STATUSES:
            tracked.final_read_at = None  # read the final metrics once more
        tracked.model = model
        tracked.missing = False

    # ------------------------------------------------------------------ fetching

    async def _fetch_all(self, due: list[Tracked]) -> list[CohereApiError | None]:
        return await self._bounded(self._fetch_one, due)

    async def _bounded(
        self, work: Callable[[ItemT], Awaitable[ResultT]], items: Sequence[ItemT]
    ) -> list[ResultT]:
        """Run ``work`` over ``items`` with at most ``concurrency`` in flight, results in order."""
        results: list[ResultT | None] = [None] * len(items)
        queue = iter(enumerate(items))

        async def worker() -> None:
            for index, item in queue:
                results[index] = await work(item)

        workers = min(self._settings.concurrency, len(items))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return results  # type: ignore[return-value]

    async def _fetch_one(self, tracked: Tracked) -> CohereApiError | None:
        try:
            steps = await self._steps_since_position(tracked)
        except CohereApiError as exc:
            tracked.up = False
            self._report_model(tracked, exc)
            return exc
        self._absorb(tracked, steps)
        tracked.up = True
        tracked.last_success = self._wall()
        if tracked.is_final:
            tracked.final_read_at = self._monotonic()
        self._report_model(tracked, None)
        return None

    def _absorb(self, tracked: Tracked, steps: list[TrainingStepMetrics]) -> None:
        """Judge each step after the position exactly once, in step order; update the gauges."""
        by_number = {s.step_number: s for s in sorted(steps, key=_step_key)}
        ordered = [by_number[n] for n in sorted(by_number)]
        if not ordered:
            return
        spikes = tracked.spikes
        if tracked.position is None:
            for step in ordered[-self._settings.spike_rule.window :]:
                spikes.remember(step.metrics)  # history from before we started: not judged
        else:
            for step in ordered:
                if step.step_number > tracked.position:
                    spikes.judge(step.metrics)
        newest = ordered[-1]
        if tracked.position is None or newest.step_number >= tracked.position:
            tracked.position = newest.step_number
            tracked.newest, dropped = to_step(newest, self._settings.max_metrics_per_model)
            if dropped:
                self.dropped["metric_names"] += dropped

    async def _steps_since_position(self, tracked: Tracked) -> list[TrainingStepMetrics]:
        """Every step after the position (and the newest), resuming oldest-first lists at the
        page that held the newest step last time."""
        if tracked.order == "oldest-first" and tracked.resume_token:
            try:
                return await self._walk(tracked, tracked.resume_token)
            except ApiStatusError as exc:
                if exc.status != 400:
                    raise
                tracked.resume_token = ""  # the token expired: walk from the start once
        return await self._walk(tracked, "")

    async def _walk(self, tracked: Tracked, token: str) -> list[TrainingStepMetrics]:
        """Follow pages until every step after the position is in hand, and no further.

        Newest-first: page back only while a whole page is newer than the position (on the
        first poll the first page is enough). Oldest-first: walk to the last page.
        """
        model_id = tracked.model.id
        collected: list[TrainingStepMetrics] = []
        seen: set[str] = {token}
        for _ in range(MAX_PAGES):
            page = await self._client.list_step_metrics(
                model_id, page_size=self._settings.page_size, page_token=token
            )
            collected.extend(page.step_metrics)
            order = page_order(page.step_metrics)
            if order != "unknown":
                tracked.order = order
            if tracked.order == "oldest-first":
                tracked.resume_token = token
            next_token = page.next_page_token
            if not next_token or not page.step_metrics:
                return collected
            if tracked.order == "newest-first" and (
                tracked.position is None
                or min(s.step_number for s in page.step_metrics) <= tracked.position
            ):
                return collected
            if next_token in seen:
                raise ApiResponseError("list_step_metrics", 200, "next_page_token repeats")
            seen.add(next_token)
            token = next_token
        raise ApiResponseError("list_step_metrics", 200, f"more than {MAX_PAGES} pages")

    # ------------------------------------------------------------------ logging

    def _report_model(self, tracked: Tracked, exc: CohereApiError | None) -> None:
        """Log a model's trouble once when it starts or changes, and once when it clears."""
        problem = None if exc is None else describe(exc)
        if problem == tracked.problem:
            return
        if problem is None:
            log.info("model polling recovered", extra={"model": tracked.model.id})
        else:
            log.warning("model polling failed", extra={"model": tracked.model.id, "error": problem})
        tracked.problem = problem

    def _report_discovery(self, exc: CohereApiError | None) -> None:
        problem = None if exc is None else describe(exc)
        if problem == self._discovery_problem:
            return
        if problem is None:
            log.info("model discovery recovered")
        elif (
            isinstance(exc, ApiStatusError)
            and exc.status in (404, 410)
            and not self._settings.model_ids
        ):
            log.error(
                "the API at this URL serves no fine-tuning (the model list answered %d); "
                "check --cohere.api-url",
                exc.status,
                extra={"error": problem},
            )
        else:
            log.warning("model discovery failed", extra={"error": problem})
        self._discovery_problem = problem

    # ----------------------------------------------------------------- snapshot

    def _build_snapshot(self, duration: float) -> Snapshot:
        views = tuple(self._view(t) for _, t in sorted(self._tracked.items()))
        return Snapshot(
            models=views,
            up=self._up,
            poll_duration=duration,
            ready=True,
            version=self.snapshot.version + 1,
            dropped=MappingProxyType(dict(self.dropped)),
        )

    @staticmethod
    def _view(tracked: Tracked) -> ModelView:
        model = tracked.model
        base = model.settings.base_model
        return ModelView(
            id=model.id,
            name=model.name,
            status="" if tracked.missing else model.status,
            base_model=base.name,
            base_model_version=base.version,
            base_type=base.base_type,
            strategy=base.strategy,
            newest_step=tracked.newest,
            up=tracked.up,
            last_success=tracked.last_success,
            outliers=MappingProxyType(dict(tracked.spikes.outliers)),
            nonfinite=MappingProxyType(dict(tracked.spikes.nonfinite)),
            steps_processed=tracked.spikes.processed,
        )


def replace_id(model: FinetunedModel, model_id: str) -> FinetunedModel:
    """Key a configured model by the ID the user gave, even if the API omits or echoes another."""
    return model if model.id == model_id else model.model_copy(update={"id": model_id})


def describe(exc: CohereApiError) -> str:
    """A stable one-line description used to tell a new problem from a repeated one."""
    if isinstance(exc, ApiStatusError):
        return f"{exc.endpoint}: HTTP {exc.status}: {exc.message}"
    return str(exc)


__all__ = ["PollSettings", "Poller", "Tracked", "page_order"]
