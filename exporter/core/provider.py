"""The seam between the core and a fine-tuning API: what a provider tells, in neutral terms.

The core (discovery, trackers, poller) talks only to a ``Provider``: it lists runs, looks one up,
and reads every step after a position. How a provider does that (Cohere pages in either order
and resumes at a page token; Together filters by step number) stays inside its package, and
nothing here knows Prometheus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

Phase = Literal["queued", "training", "deploying", "succeeded", "failed", "cancelled", "unknown"]
PHASES: tuple[Phase, ...] = (
    "queued",
    "training",
    "deploying",
    "succeeded",
    "failed",
    "cancelled",
    "unknown",
)
TERMINAL_PHASES: frozenset[Phase] = frozenset({"succeeded", "failed", "cancelled"})

#: A provider's own reading position beyond the step number (Cohere: page order and the token
#: of the page that held the newest step). Strings only, so the state file can keep it.
Cursor = MutableMapping[str, str]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Run:
    """One fine-tuning run as discovery sees it.

    ``status`` is the provider's own string (unknown ones included); ``phase`` is its neutral
    meaning. ``labels`` are the provider's extra descriptive labels for the info metric.
    ``total_steps``, ``eta_seconds`` and ``tokens`` are None where the provider does not tell.
    """

    id: str
    name: str = ""
    base_model: str = ""
    status: str = ""
    phase: Phase = "unknown"
    created_at: float | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    total_steps: int | None = None
    eta_seconds: float | None = None
    tokens: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One logged step: its number, when it was taken (Unix seconds) and its metrics."""

    number: int
    created_at: float | None
    metrics: Mapping[str, float]


class Provider(Protocol):
    """One fine-tuning API account, as the core polls it."""

    @property
    def name(self) -> str:
        """The ``provider`` label value: ``cohere``, ``together``."""
        ...

    def list_runs(self) -> AsyncIterator[Sequence[Run]]:
        """Every run of the account, a page at a time, so that discovery can keep what it
        needs of a huge account without holding all of it."""
        ...

    async def get_run(self, run_id: str) -> Run:
        """One run by ID; ``ApiStatusError`` with status 404 when it does not exist."""
        ...

    async def steps_after(
        self, run: Run, position: int | None, cursor: Cursor
    ) -> Sequence[StepRecord]:
        """Every step numbered above ``position`` (with ``position`` None: at least the newest),
        in any order; steps at or below it may come too. ``cursor`` is the provider's own
        reading state for this run, updated in place."""
        ...

    async def all_steps(self, run: Run) -> Sequence[StepRecord]:
        """Every step the API still lists for the run (for ``backfill``)."""
        ...
