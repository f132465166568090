"""Cohere as a ``Provider``: models become runs, and steps are paged in whichever order comes.

Cohere documents newest-first step pages while its own example is oldest-first, so the order is
read off the pages themselves and kept in the run's cursor. Newest-first: page back only while a
whole page is newer than the position (the first poll reads ``history_pages`` pages, enough for
a curve, or one). Oldest-first: walk to the last page, then resume there next time, so that
order too costs one request per cycle.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from types import MappingProxyType
from typing import Literal

from exporter.core import shared
from exporter.core.provider import TERMINAL_PHASES, Cursor, Phase, Run, StepRecord
from exporter.providers.cohere.client import CohereClient, PageGuard
from exporter.providers.cohere.models import FinetunedModel, TrainingStepMetrics
from exporter.upstream.errors import ApiStatusError

StepOrder = Literal["unknown", "newest-first", "oldest-first"]
LIST_PAGE_SIZE = 100

PHASES: Mapping[str, Phase] = MappingProxyType(
    {
        "STATUS_QUEUED": "queued",
        "STATUS_FINETUNING": "training",
        "STATUS_DEPLOYING_API": "deploying",
        "STATUS_READY": "succeeded",
        "STATUS_FAILED": "failed",
        "STATUS_DELETED": "cancelled",
        # PAUSED and TEMPORARILY_OFFLINE say nothing about where training is; UNSPECIFIED is
        # proto3's zero value. Alerts must neither page on them nor treat them as finished.
        "STATUS_PAUSED": "unknown",
        "STATUS_TEMPORARILY_OFFLINE": "unknown",
        "STATUS_UNSPECIFIED": "unknown",
    }
)
STATUSES = (
    "STATUS_UNSPECIFIED",
    "STATUS_QUEUED",
    "STATUS_FINETUNING",
    "STATUS_DEPLOYING_API",
    "STATUS_READY",
    "STATUS_FAILED",
    "STATUS_DELETED",
    "STATUS_TEMPORARILY_OFFLINE",
    "STATUS_PAUSED",
)
FINAL_STATUSES = frozenset(s for s, phase in PHASES.items() if phase in TERMINAL_PHASES)


def page_order(steps: Sequence[TrainingStepMetrics]) -> StepOrder:
    """What a page says about the order of the whole list, when it has two steps to compare."""
    if len(steps) < 2 or steps[0].step_number == steps[-1].step_number:
        return "unknown"
    return "newest-first" if steps[0].step_number > steps[-1].step_number else "oldest-first"


def to_run(model: FinetunedModel, model_id: str | None = None) -> Run:
    """The neutral view of a model, keyed by ``model_id`` when the user configured that ID
    (even if the API omits or echoes another)."""
    base = model.settings.base_model
    return Run(
        id=model_id or model.id,
        name=model.name,
        base_model=shared.name(base.name),
        status=shared.name(model.status),
        phase=PHASES.get(model.status, "unknown"),
        created_at=model.created_at,
        labels=shared.frozen(
            {
                "base_model_version": base.version,
                "base_type": base.base_type,
                "strategy": base.strategy,
            }
        ),
    )


#: Cohere's metrics repeat the step number as "step": already the step, not a metric.
NOT_METRICS = frozenset({"step"})


def to_record(step: TrainingStepMetrics) -> StepRecord:
    metrics = {shared.name(k): v for k, v in step.metrics.items() if k not in NOT_METRICS}
    return StepRecord(step.step_number, step.created_at, metrics)


def step_key(step: StepRecord) -> tuple[int, float]:
    return step.number, step.created_at if step.created_at is not None else -math.inf


class CohereProvider:
    """Cohere's fine-tuned models as runs; one request per active run per cycle."""

    name = "cohere"

    def __init__(self, client: CohereClient, *, page_size: int, history_pages: int = 1) -> None:
        self.client = client
        self._page_size = page_size
        self._history_pages = history_pages

    async def list_runs(self) -> AsyncIterator[list[Run]]:
        async for page in self.client.model_pages(page_size=LIST_PAGE_SIZE):
            yield [to_run(m) for m in page]

    async def get_run(self, run_id: str) -> Run:
        return to_run(await self.client.get_model(run_id), run_id)

    async def all_steps(self, run: Run) -> list[StepRecord]:
        steps = await self.client.all_step_metrics(run.id, page_size=self._page_size)
        return [to_record(s) for s in steps]

    async def steps_after(self, run: Run, position: int | None, cursor: Cursor) -> list[StepRecord]:
        """Every step after the position (and the newest), resuming oldest-first lists at the
        page that held the newest step last time."""
        resume = cursor.get("resume_token", "")
        if cursor.get("order") == "oldest-first" and resume:
            try:
                return await self._walk(run.id, position, cursor, resume)
            except ApiStatusError as exc:
                if exc.status != 400:
                    raise
                cursor["resume_token"] = ""  # the token expired: walk from the start once
        return await self._walk(run.id, position, cursor, "")

    async def _walk(
        self, run_id: str, position: int | None, cursor: Cursor, token: str
    ) -> list[StepRecord]:
        """Follow pages until every step after the position is in hand, and no further."""
        collected: list[StepRecord] = []
        guard = PageGuard("list_step_metrics", token)
        pages = 0
        while True:
            pages += 1
            page = await self.client.list_step_metrics(
                run_id, page_size=self._page_size, page_token=token, from_step=position
            )
            collected.extend(
                to_record(s)
                for s in page.step_metrics
                if position is None or s.step_number >= position  # older: judged, kept
            )
            order = page_order(page.step_metrics)
            if order != "unknown":
                cursor["order"] = order
            if cursor.get("order") == "oldest-first":
                cursor["resume_token"] = token
            if not page.next_page_token or not page.step_metrics:
                return collected
            if cursor.get("order") == "newest-first" and (
                (position is None and pages >= self._history_pages)
                or (
                    position is not None
                    and min(s.step_number for s in page.step_metrics) <= position
                )
            ):
                return collected
            token = guard.next(page.next_page_token)
