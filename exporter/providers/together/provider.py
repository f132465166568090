"""Together as a ``Provider``: jobs become runs, and steps are read in step windows.

A cycle reads only what is new: ``global_step_from`` at the last processed step, whose entries
come again so that an evaluation logged after its training step is not lost (the tracker judges
each value once); everything before it is never fetched again. The window is bounded
(``global_step_to``) so that catching up after a long absence reads a long run in pieces
instead of in one huge answer; another window is asked for only when the last one came back
more than half full. A job seen for the first time is
read with ``resolution`` (a uniform sample of its curve, one request) and then from its newest
sampled step on. ``total_steps`` lives only in events: a job's events are read once, when it
trains and its total is not known yet.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType

from exporter.core import shared
from exporter.core.concurrency import bounded
from exporter.core.provider import Cursor, Phase, Run, StepRecord
from exporter.providers.together.client import TogetherClient
from exporter.providers.together.models import Event, Job
from exporter.providers.together.steps import to_steps

log = logging.getLogger(__name__)

PHASES: Mapping[str, Phase] = MappingProxyType(
    {
        "pending": "queued",
        "queued": "queued",
        "running": "training",
        "compressing": "deploying",
        "uploading": "deploying",
        "completed": "succeeded",
        "error": "failed",
        "cancel_requested": "cancelled",
        "cancelled": "cancelled",
    }
)
#: Steps per metrics request while following a run; a window of train and eval entries is a
#: few hundred kilobytes.
WINDOW_STEPS = 2_000
#: Windows one read may take before it leaves the rest for the next cycle.
MAX_WINDOWS = 200
#: Points of a curve read at once for a job seen for the first time.
FIRST_READ_POINTS = 200


def total_steps(events: list[Event]) -> int | None:
    """The newest ``total_steps`` any event tells (training_start, checkpoints, epochs)."""
    told = [e.total_steps for e in events if e.total_steps is not None and e.total_steps > 0]
    return told[-1] if told else None


def to_run(job: Job, total: int | None, job_id: str | None = None) -> Run:
    progress = job.progress
    eta = None
    if progress is not None and progress.estimate_available:
        eta = float(progress.seconds_remaining) if progress.seconds_remaining is not None else None
    return Run(
        id=job_id or job.id,
        # The suffix is what the user chose and stays put; model_output_name appears only once
        # the job leaves the queue, and a label that changes mid-run would split its series.
        name=job.suffix or job.model_output_name,
        base_model=shared.name(job.model),
        status=shared.name(job.status),
        phase=PHASES.get(job.status, "unknown"),
        created_at=job.created_at,
        labels=shared.frozen(
            {"training_type": job.training_type, "training_method": job.training_method}
        ),
        total_steps=total,
        eta_seconds=eta,
        tokens=job.token_count,
    )


class TogetherProvider:
    """Together's fine-tuning jobs as runs; one metrics request per active job per cycle."""

    name = "together"

    def __init__(self, client: TogetherClient, *, concurrency: int) -> None:
        self.client = client
        self._concurrency = concurrency
        self._totals: dict[str, int] = {}  # job → total_steps from its events

    async def list_runs(self) -> AsyncIterator[list[Run]]:
        jobs = await self.client.list_jobs()
        listed = {job.id for job in jobs}
        for gone in self._totals.keys() - listed:
            del self._totals[gone]
        unknown = [
            j.id for j in jobs if PHASES.get(j.status) == "training" and j.id not in self._totals
        ]
        await bounded(self._learn_total, unknown, self._concurrency)
        yield [to_run(job, self._totals.get(job.id)) for job in jobs]

    async def _learn_total(self, job_id: str) -> None:
        total = total_steps((await self.client.list_events(job_id)).data)
        if total is not None:
            self._totals[job_id] = total

    async def get_run(self, run_id: str) -> Run:
        job = await self.client.get_job(run_id)  # the single job embeds its events
        total = total_steps(job.events) or self._totals.get(run_id)
        return to_run(job, total, run_id)

    async def steps_after(self, run: Run, position: int | None, cursor: Cursor) -> list[StepRecord]:
        if position is None:
            sampled = await self._read(run.id, resolution=FIRST_READ_POINTS)
            if not sampled:
                return []  # nothing logged yet: one request, as for any job with nothing new
            return sampled + await self._follow(run.id, sampled[-1].number)
        return await self._follow(run.id, position)

    async def _follow(self, job_id: str, start: int) -> list[StepRecord]:
        """Windows from ``start`` on, for as long as the last one came back over half full."""
        collected: list[StepRecord] = []
        for _ in range(MAX_WINDOWS):
            window = await self._read(job_id, step_from=start, step_to=start + WINDOW_STEPS - 1)
            collected.extend(window)
            if not window or window[-1].number < start + WINDOW_STEPS // 2:
                break
            start = window[-1].number + 1
        return collected

    async def all_steps(self, run: Run) -> list[StepRecord]:
        """Every step, window after window until one comes back empty."""
        collected: list[StepRecord] = []
        start = 0
        for _ in range(MAX_WINDOWS * 10):
            window = await self._read(run.id, step_from=start, step_to=start + WINDOW_STEPS - 1)
            if not window:
                break
            collected.extend(window)
            start = max(start + WINDOW_STEPS, window[-1].number + 1)
        return collected

    async def _read(
        self,
        job_id: str,
        *,
        step_from: int | None = None,
        step_to: int | None = None,
        resolution: int | None = None,
    ) -> list[StepRecord]:
        answer = await self.client.list_metrics(
            job_id, step_from=step_from, step_to=step_to, resolution=resolution
        )
        steps, stepless = to_steps(answer.metrics)
        if stepless:
            log.debug(
                "metric entries without a step left out", extra={"run": job_id, "entries": stepless}
            )
        return steps
