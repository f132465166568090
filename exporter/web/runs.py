"""Which runs the status page and ``/api/runs`` show, and in what order: one rule for both.

An account can hold thousands of runs, most of them long finished, while the page is for the
few that move. So both show every active run (any phase but succeeded, failed, cancelled) and
only the ``--ui.finished-runs`` most recent finished ones, unless asked for all (``?all=1``).
Runs are grouped by phase, training first, and each group is newest first; ties are broken by
provider and ID so the order never flickers between two renders of one snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.core.provider import TERMINAL_PHASES, Phase
from exporter.core.snapshot import RunView, Snapshot

#: The order of the groups: what is moving first, then what needs a look, then the rest.
GROUP_ORDER: tuple[Phase, ...] = (
    "training",
    "deploying",
    "queued",
    "unknown",
    "failed",
    "succeeded",
    "cancelled",
)
TITLES: dict[Phase, str] = {
    "training": "Training",
    "deploying": "Deploying",
    "queued": "Queued",
    "unknown": "Unknown phase",
    "failed": "Failed",
    "succeeded": "Succeeded",
    "cancelled": "Cancelled",
}


def recency(view: RunView) -> float:
    """When the run last showed life: its newest step's time, else its creation, else 0."""
    for moment in (
        view.newest_step.created_at if view.newest_step is not None else None,
        view.run.created_at,
    ):
        if moment is not None and math.isfinite(moment):
            return moment
    return 0.0


def _newest_first(view: RunView) -> tuple[float, str, str]:
    return (-recency(view), view.provider, view.id)


@dataclass(frozen=True, slots=True)
class Selection:
    """The runs to show, grouped and ordered, and how many finished ones were left out."""

    groups: tuple[tuple[Phase, tuple[RunView, ...]], ...]
    finished_total: int
    show_all: bool

    @property
    def runs(self) -> tuple[RunView, ...]:
        return tuple(view for _, views in self.groups for view in views)

    @property
    def hidden_finished(self) -> int:
        shown = sum(len(views) for phase, views in self.groups if phase in TERMINAL_PHASES)
        return self.finished_total - shown


def select(snapshot: Snapshot, finished_runs: int, *, show_all: bool = False) -> Selection:
    """Every active run and the ``finished_runs`` most recent finished ones (all of them with
    ``show_all``), grouped by phase in ``GROUP_ORDER``, newest first within a group."""
    active = [view for view in snapshot.runs if not view.run.is_terminal]
    finished = sorted((view for view in snapshot.runs if view.run.is_terminal), key=_newest_first)
    shown = active + (finished if show_all else finished[: max(0, finished_runs)])
    by_phase: dict[Phase, list[RunView]] = {}
    for view in shown:
        by_phase.setdefault(view.run.phase, []).append(view)
    groups = tuple(
        (phase, tuple(sorted(by_phase[phase], key=_newest_first)))
        for phase in GROUP_ORDER
        if phase in by_phase
    )
    return Selection(groups, len(finished), show_all)
