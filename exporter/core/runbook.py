"""The trackers of one provider's runs: what discovery found, merged into what is known.

New runs get a tracker (resuming from the state file where it has them), runs that left a
listing are forgotten, configured runs that the API no longer knows are marked missing, and
every change worth a log line goes through the one ``ProblemLog``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from exporter.core.discovery import Discovered
from exporter.core.problems import ProblemLog
from exporter.core.provider import Run
from exporter.core.snapshot import RunView
from exporter.core.spikes import SpikeRule
from exporter.core.state import SavedRun
from exporter.core.tracker import RunTracker

log = logging.getLogger(__name__)


class RunBook:
    """Every tracker of one provider, by run ID."""

    def __init__(
        self,
        provider: str,
        *,
        rule: SpikeRule,
        max_metrics: int,
        problems: ProblemLog,
        history: bool = False,
        saved: Mapping[str, SavedRun] | None = None,
    ) -> None:
        self.provider = provider
        self.trackers: dict[str, RunTracker] = {}
        self._rule = rule
        self._max_metrics = max_metrics
        self._history = history
        self._problems = problems
        self._saved = dict(saved or {})  # runs not rediscovered yet keep their saved position

    def apply(self, found: Discovered) -> None:
        if found.complete:
            for gone in self.trackers.keys() - found.runs.keys():
                log.info("run left the account", extra={"provider": self.provider, "run": gone})
                del self.trackers[gone]
                self._problems.forget(("run", self.provider, gone))
        for run in found.runs.values():
            self._track(run)
        for run_id, error in found.missing.items():
            tracker = self._track(Run(id=run_id), fresh=False)
            tracker.lost(missing=True)
            self.report(run_id, error.describe())
        for run_id, error in found.failures.items():
            self._problems.report(
                ("lookup", self.provider, run_id),
                error.describe(),
                failed="run lookup failed",
                recovered="run lookup recovered",
                provider=self.provider,
                run=run_id,
            )
        for run_id in found.runs:
            self._problems.report(
                ("lookup", self.provider, run_id),
                None,
                failed="run lookup failed",
                recovered="run lookup recovered",
                provider=self.provider,
                run=run_id,
            )

    def _track(self, run: Run, *, fresh: bool = True) -> RunTracker:
        tracker = self.trackers.get(run.id)
        if tracker is None:
            saved = self._saved.pop(run.id, None)
            tracker = RunTracker(run, self._rule, self._max_metrics, saved, history=self._history)
            self.trackers[run.id] = tracker
        elif fresh:
            tracker.update(run)
        return tracker

    def report(self, run_id: str, problem: str | None) -> None:
        """A run's polling trouble, logged once when it starts or changes and once when over."""
        self._problems.report(
            ("run", self.provider, run_id),
            problem,
            failed="run polling failed",
            recovered="run polling recovered",
            provider=self.provider,
            run=run_id,
        )

    def due(self, now: float, final_refresh_interval: float) -> list[RunTracker]:
        return [t for t in self.trackers.values() if t.is_due(now, final_refresh_interval)]

    def active(self) -> int:
        return sum(1 for t in self.trackers.values() if not t.missing and not t.run.is_terminal)

    def check_budget(self, per_minute: int, interval: float) -> None:
        """Say once when the request budget cannot read every active run each interval: how
        long a cycle will take instead, and which setting to change."""
        allowed = math.floor(per_minute * interval / 60)
        active = self.active()
        self._problems.report(
            ("budget", self.provider),
            "over budget" if active > allowed else None,
            failed="the request budget cannot poll every active run within --poll.interval; "
            f"raise --{self.provider}.max-requests-per-minute or --poll.interval",
            recovered="the request budget polls every active run within --poll.interval again",
            provider=self.provider,
            active_runs=active,
            requests_per_interval=allowed,
            cycle_seconds=round(active / per_minute * 60),
        )

    def views(self) -> tuple[RunView, ...]:
        return tuple(self.trackers[run_id].view(self.provider) for run_id in sorted(self.trackers))

    def saved(self) -> dict[str, SavedRun]:
        states = dict(self._saved)
        for run_id, tracker in self.trackers.items():
            state = tracker.saved()
            if state is not None:
                states[run_id] = state
        return states
