"""The bookkeeping every simulated account shares: lazy per-run plans, ids, order, additions.

A run's static plan (timings, curve shape) is derived from ``(seed, index)`` and built on first
use, which keeps a 10,000-run account cheap to construct; what a caller sees at any moment is the
plan filtered by ``clock.now()``. A subclass says how a plan is made and how an id is derived
from the first draw of a run's random stream (so that lookups need no full plan).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from exporter.simulator.clock import SimClock
from exporter.simulator.scenario import Scenario


class Plan(Protocol):
    """The part of a run's plan the bookkeeping needs."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> float: ...


PlanT = TypeVar("PlanT", bound=Plan)


class Account(Generic[PlanT]):
    """Runs ``0 .. runs-1`` (or a scenario's), plus those added later; see the module docstring.

    With a ``scenario`` the account holds exactly the scenario's runs (``runs`` is ignored),
    index ``i`` being the scenario's ``i``-th model; a scripted run is in the account from its
    ``created_at`` on. ``add_run`` still adds random runs after them.
    """

    def __init__(
        self,
        *,
        runs: int,
        seed: int,
        clock: SimClock,
        api_key: str | None,
        scenario: Scenario | None,
        request_kinds: Iterable[str],
    ) -> None:
        if scenario is not None:
            runs = len(scenario.models)
        elif runs < 0:
            raise ValueError(f"the number of runs must not be negative, got {runs}")
        self.seed = seed
        self.clock = clock
        self.api_key = api_key
        self.scenario = scenario
        self.request_counts: collections.Counter[str] = collections.Counter(
            dict.fromkeys(request_kinds, 0)
        )
        self.steps_by_run: collections.Counter[str] = collections.Counter()
        self._initial_runs = runs
        self._start = clock.now()
        self._lock = threading.RLock()
        self._next_index = runs
        self._added_at: dict[int, float] = {}
        self._deleted: set[int] = set()
        self._plans: dict[int, PlanT] = {}
        self._ids: dict[str, int] | None = None
        self._order: list[int] | None = None

    # ----------------------------------------------------------------- for subclasses

    def _make_plan(self, index: int) -> PlanT:
        """Build the plan of run ``index`` (called once per index, under the lock)."""
        raise NotImplementedError

    def _derive_id(self, index: int) -> str:
        """The id of run ``index`` without building its plan."""
        raise NotImplementedError

    # ----------------------------------------------------------------- bookkeeping

    def _plan(self, index: int) -> PlanT:
        plan = self._plans.get(index)
        if plan is None:
            with self._lock:
                plan = self._plans.get(index)
                if plan is None:
                    plan = self._make_plan(index)
                    self._plans[index] = plan
        return plan

    def _id_map(self) -> dict[str, int]:
        with self._lock:
            if self._ids is None:
                self._ids = {self._derive_id(i): i for i in range(self._next_index)}
            return self._ids

    def _index(self, run_id: str) -> int:
        """The index of a run present now; ``KeyError`` for an unknown, deleted or future one."""
        index = self._id_map().get(run_id)
        if index is None or index in self._deleted or not self._exists(index, self.clock.now()):
            raise KeyError(run_id)
        return index

    def _exists(self, index: int, now: float) -> bool:
        """Whether the run has been created by ``now``: only scripted runs can be later."""
        return self.scenario is None or self._plan(index).created_at <= now

    def _ordered(self) -> list[int]:
        with self._lock:
            if self._order is None:
                present = (i for i in range(self._next_index) if i not in self._deleted)
                self._order = sorted(present, key=lambda i: (self._plan(i).created_at, i))
            return self._order

    # ----------------------------------------------------------------- public API

    def run_ids(self) -> list[str]:
        """IDs of the runs currently in the account, oldest ``created_at`` first."""
        now = self.clock.now()
        return [self._plan(i).id for i in self._ordered() if self._exists(i, now)]

    def delete(self, run_id: str) -> None:
        """Remove the run from the account; later lookups raise ``KeyError``."""
        with self._lock:
            self._deleted.add(self._index(run_id))
            self._order = None

    def add_run(self) -> str:
        """Create a run now: it starts queued at ``clock.now()``. Returns its id."""
        with self._lock:
            index = self._next_index
            self._added_at[index] = self.clock.now()
            self._next_index += 1
            plan = self._plan(index)
            if self._ids is not None:
                self._ids[plan.id] = index
            self._order = None
            return plan.id
