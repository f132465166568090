"""A deterministic simulated Together AI account: fine-tuning jobs, their lifecycle and metrics.

Everything is derived from ``(seed, job index)`` and the clock, as for the Cohere world: plans
come from ``exporter.simulator.together.plan`` and each job's metrics log from
``exporter.simulator.together.metrics``, both built on first use and cached, so an account of
thousands of jobs is cheap and a job of 50,000 steps is built once, not per request.
"""

from __future__ import annotations

import bisect
import collections
import random
import threading
from dataclasses import dataclass
from typing import Any, Final

from exporter.simulator.account import Account
from exporter.simulator.clock import SimClock
from exporter.simulator.scenario import Scenario
from exporter.simulator.together import jobs, metrics
from exporter.simulator.together.metrics import MetricsLog, MetricsQuery
from exporter.simulator.together.plan import (
    NANOS,
    EvalForm,
    JobPlan,
    NanForm,
    derive_id,
    random_plan,
    scripted_plan,
    to_ns,
)

#: The keys of ``TogetherWorld.request_counts``, one per API operation the simulator serves.
REQUEST_KINDS: Final = ("list_jobs", "get_job", "list_metrics", "list_events", "list_checkpoints")


@dataclass(frozen=True)
class Quirks:
    """Which of the API's unconfirmed forms a job uses (what a client must cope with)."""

    eval_form: EvalForm  # "global_step": eval entries carry eval/global_step; "none": no step key
    nan_form: NanForm  # "string": a non-finite value is the string "NaN"; "omit": no key
    timestamps: bool  # whether entries carry "timestamp"
    perplexity: bool  # whether eval entries carry eval/perplexity
    nan_step: int | None  # the step whose loss is NaN (random jobs: at most one per account)


class TogetherWorld(Account[JobPlan]):
    """The simulated account that the HTTP app serves and that tests compare ``/metrics`` against.

    ``api_key`` set means every API request must carry it as a bearer token. With a
    ``scenario`` the account holds exactly the scenario's jobs (``jobs`` is ignored).
    Job 0 of a random account is training with data at once, job 1 has completed, job 2 is
    mid-run, job 3 is queued and job 4 pending; one job of an account of three or more has a
    NaN loss mid-run and carries on.
    """

    def __init__(
        self,
        *,
        jobs: int = 5,
        seed: int = 1,
        clock: SimClock,
        api_key: str | None = None,
        scenario: Scenario | None = None,
    ) -> None:
        super().__init__(
            runs=jobs,
            seed=seed,
            clock=clock,
            api_key=api_key,
            scenario=scenario,
            request_kinds=REQUEST_KINDS,
        )
        account = random.Random(f"together:{seed}:account")
        self.account_name = f"org-{account.getrandbits(32):08x}"
        self._users = tuple(f"{account.getrandbits(96):024x}" for _ in range(3))
        count = self._initial_runs
        self._nan_index = account.randrange(count) if scenario is None and count >= 3 else None
        self._logs: dict[int, MetricsLog] = {}
        #: Training entries served per (job, step) by reads without ``resolution``: a client
        #: that never fetches a step twice keeps every count at 1.
        self.served_steps: collections.Counter[tuple[str, int]] = collections.Counter()
        self._log_lock = threading.Lock()

    def _make_plan(self, index: int) -> JobPlan:
        if self.scenario is not None and index < len(self.scenario.models):
            script = self.scenario.models[index]
            return scripted_plan(
                self.seed, index, self.account_name, self._users, self._start, script
            )
        added = self._added_at.get(index)
        return random_plan(self.seed, index, self.account_name, self._users, self._start, added)

    def _derive_id(self, index: int) -> str:
        return derive_id(self.seed, index)

    def _log(self, index: int) -> MetricsLog:
        log = self._logs.get(index)
        if log is None:
            with self._log_lock:
                log = self._logs.get(index)
                if log is None:
                    log = metrics.build(self._plan(index), self.seed, index == self._nan_index)
                    self._logs[index] = log
        return log

    # ----------------------------------------------------------------- public API

    def job_ids(self) -> list[str]:
        """IDs of the jobs currently in the account, oldest ``created_at`` first."""
        return self.run_ids()

    def add_job(self) -> str:
        """Create a job now: it starts pending at ``clock.now()``. Returns its id."""
        return self.add_run()

    def plan(self, job_id: str) -> JobPlan:
        """The job's clock-independent plan; raises ``KeyError`` for an absent job."""
        return self._plan(self._index(job_id))

    def quirks(self, job_id: str) -> Quirks:
        """Which unconfirmed forms the job's answers take."""
        index = self._index(job_id)
        plan = self._plan(index)
        nan_step = self._log(index).nan_step
        return Quirks(plan.eval_form, plan.nan_form, plan.timestamps, plan.perplexity, nan_step)

    def status(self, job_id: str) -> str:
        """The lifecycle status at ``clock.now()``; raises ``KeyError`` for an absent job."""
        return jobs.stage_at(self.plan(job_id), self.clock.now())[1]

    def job(self, job_id: str, *, full: bool = True) -> dict[str, Any]:
        """The job object as the single-job answer (``full``) or the list sends it."""
        return jobs.job_object(self.plan(job_id), self.clock.now(), full=full)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Events that have happened by now, oldest first, as the API sends them."""
        return jobs.public_events(self.plan(job_id), self.clock.now())

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Checkpoints saved by now, as the API sends them."""
        return jobs.checkpoints(self.plan(job_id), self.clock.now())

    def metrics_body(self, job_id: str, query: MetricsQuery | None = None) -> bytes:
        """The metrics endpoint's answer, ``{"metrics": [...]}``, from the cached entries."""
        log = self._log(self._index(job_id))
        query = query or MetricsQuery()
        positions = metrics.select(log, query, self._now_ns())
        if query.resolution is None:
            self.served_steps.update(
                (job_id, log.steps[p]) for p in positions if _is_train(log.train, p)
            )
        return metrics.body(log, positions)

    def metrics(self, job_id: str, query: MetricsQuery | None = None) -> list[dict[str, Any]]:
        """The entries the metrics endpoint returns now, decoded."""
        log = self._log(self._index(job_id))
        return metrics.decode(log, metrics.select(log, query or MetricsQuery(), self._now_ns()))

    def logged(self, job_id: str) -> list[tuple[int, int, dict[str, Any]]]:
        """``(step, log time in ns, entry)`` of every entry logged by now (tests use the times
        of jobs whose entries carry no timestamp)."""
        log = self._log(self._index(job_id))
        visible = range(log.visible(self._now_ns()))
        return [(log.steps[p], log.times_ns[p], metrics.decode(log, [p])[0]) for p in visible]

    def _now_ns(self) -> int:
        return to_ns(self.clock.now())

    def truth(self) -> list[dict[str, Any]]:
        """Every job present now with its status and newest training entry (as sent)."""
        runs = []
        for job_id in self.job_ids():
            index = self._index(job_id)
            log = self._log(index)
            seen = log.train[: _count_below(log.train, log.visible(self._now_ns()))]
            newest = None
            if seen:
                entry = metrics.decode(log, [seen[-1]])[0]
                newest = {
                    "step_number": log.steps[seen[-1]],
                    "created_at": log.times_ns[seen[-1]] / NANOS,
                    "metrics": {k: v for k, v in entry.items() if k != "timestamp"},
                }
            runs.append(
                {
                    "id": job_id,
                    "name": self._plan(index).suffix,
                    "status": self.status(job_id),
                    "newest_step": newest,
                    "step_count": len(seen),
                }
            )
        return runs


def _is_train(train: tuple[int, ...], position: int) -> bool:
    index = bisect.bisect_left(train, position)
    return index < len(train) and train[index] == position


def _count_below(positions: tuple[int, ...], limit: int) -> int:
    """How many of the ascending ``positions`` are below ``limit``."""
    return bisect.bisect_left(positions, limit)
