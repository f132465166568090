"""The immutable picture of every polled run that the collectors and pages read.

Each provider's poller publishes a ``ProviderPart`` after each cycle (and every few seconds of a
long one); the hub joins the latest part of every provider into a new ``Snapshot`` and swaps it
in with one assignment, so a reader sees one whole picture and never waits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.core.history import History
from exporter.core.provider import Run, StepRecord

_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RunView:
    """What the exporter knows about one run at the end of a cycle.

    ``missing`` is a configured run that the API says does not exist: it keeps its health
    series but has no status or info.
    """

    provider: str
    run: Run
    newest_step: StepRecord | None = None
    up: bool = False
    last_success: float | None = None
    missing: bool = False
    outliers: Mapping[str, int] = field(default_factory=lambda: _NO_COUNTS)
    nonfinite: Mapping[str, int] = field(default_factory=lambda: _NO_COUNTS)
    steps_processed: int = 0
    history: History | None = None

    @property
    def id(self) -> str:
        return self.run.id


@dataclass(frozen=True, slots=True)
class ProviderPart:
    """One provider's runs and health. ``ready`` once its first full cycle has finished."""

    name: str
    runs: tuple[RunView, ...] = ()
    up: bool = False
    poll_duration: float | None = None
    finished_at: float | None = None  # wall-clock end of the last full cycle
    ready: bool = False
    dropped: Mapping[str, int] = field(default_factory=lambda: _NO_COUNTS)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every provider's latest part, runs ordered by provider and ID."""

    providers: tuple[ProviderPart, ...] = ()
    runs: tuple[RunView, ...] = ()
    version: int = 0

    @property
    def ready(self) -> bool:
        return bool(self.providers) and all(part.ready for part in self.providers)

    @staticmethod
    def join(parts: Sequence[ProviderPart], version: int) -> Snapshot:
        ordered = tuple(sorted(parts, key=lambda part: part.name))
        runs = tuple(run for part in ordered for run in part.runs)
        return Snapshot(ordered, runs, version)


EMPTY = Snapshot()
