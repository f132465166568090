"""One run's memory between cycles: where reading stopped, the newest step, spikes, health.

A tracker absorbs each batch of steps a provider returns, judges every step after its position
exactly once, keeps the newest step and the newest value of each metric for the gauges (a
Together evaluation comes every few steps, and its loss must not vanish from /metrics in
between), produces its part of the snapshot and saves and restores itself through the state
file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from exporter.core.history import HistoryBuilder
from exporter.core.provider import Run, StepRecord
from exporter.core.shared import frozen
from exporter.core.snapshot import RunView
from exporter.core.spikes import SpikeRule, SpikeTracker
from exporter.core.state import SavedRun


def _step_key(step: StepRecord) -> tuple[int, float]:
    return step.number, step.created_at if step.created_at is not None else -math.inf


def trimmed(step: StepRecord, max_metrics: int) -> tuple[StepRecord, int]:
    """The step with at most ``max_metrics`` names (alphabetical), and how many were cut."""
    names = sorted(step.metrics)
    kept = MappingProxyType({name: step.metrics[name] for name in names[:max_metrics]})
    return StepRecord(step.number, step.created_at, kept), max(0, len(names) - max_metrics)


class RunTracker:
    """Mutable per-run state that lives in the poller between cycles (never in a snapshot).

    Its view is built once per change and reused while nothing changes, so a publication of
    10,000 runs of which a handful moved builds a handful of views, and consecutive snapshots
    share the rest.
    """

    __slots__ = (
        "_max_metrics",
        "_view",
        "cursor",
        "final_read_at",
        "history",
        "judged",
        "last_success",
        "missing",
        "newest",
        "position",
        "run",
        "spikes",
        "up",
    )

    def __init__(
        self,
        run: Run,
        rule: SpikeRule,
        max_metrics: int,
        saved: SavedRun | None = None,
        *,
        history: bool = False,
    ) -> None:
        self.run = run
        self.newest: StepRecord | None = None  # the newest step, with each metric's newest value
        self.position: int | None = None  # highest step number processed; None until polled
        self.judged: tuple[str, ...] = ()  # metrics of the position's step judged so far
        self.cursor: dict[str, str] = {}
        self.up = False
        self.last_success: float | None = None
        self.final_read_at: float | None = None
        self.missing = False
        self.spikes = SpikeTracker(rule)
        self.history = HistoryBuilder(rule.metrics) if history else None
        self._max_metrics = max_metrics
        self._view: RunView | None = None
        if saved is not None:
            self.position = saved.position
            self.judged = tuple(saved.judged)
            self.cursor = dict(saved.cursor)
            self.spikes.restore(saved.history, saved.outliers, saved.nonfinite, saved.processed)

    def update(self, run: Run) -> None:
        """Take a fresher description; a run that just finished is read once more."""
        if run == self.run and not self.missing:
            return
        if self.run.status != run.status and run.is_terminal:
            self.final_read_at = None
        self.run = run
        self.missing = False
        self._view = None

    def lost(self, *, missing: bool = False) -> None:
        """The last poll failed (or the API says the run does not exist): down until a good one."""
        if self.up or (missing and not self.missing):
            self._view = None
        self.up = False
        self.missing = self.missing or missing

    def is_due(self, now: float, final_refresh_interval: float) -> bool:
        """Active runs every cycle; finished ones once, then every ``final_refresh_interval``."""
        if self.missing:
            return False
        if not self.run.is_terminal:
            return True
        return self.final_read_at is None or now - self.final_read_at >= final_refresh_interval

    def absorb(self, steps: Iterable[StepRecord]) -> int:
        """Judge each step after the position exactly once, in step order; keep the newest.

        A value that shows up later for the position's own step (an evaluation logged after
        its training step) is judged then, once; so every (step, metric) is judged exactly
        once. Steps read before the first position is known are history from before this
        exporter looked: they fill the spike window but are not judged. Each metric keeps its
        value from the newest step that reported it. Returns how many metric names the newest
        step lost to ``--limits.max-metrics-per-model``.
        """
        by_number = {s.number: s for s in sorted(steps, key=_step_key)}
        ordered = [by_number[n] for n in sorted(by_number)]
        position = self.position
        if not ordered or (position is not None and ordered[-1].number < position):
            return 0
        self._view = None
        newest = ordered[-1]
        if position is None:
            for step in ordered[-self.spikes.rule.window :]:
                self.spikes.remember(step.metrics)
            if self.history is not None:
                for step in ordered:
                    self.history.add(step.number, step.metrics)
        else:
            for step in ordered:
                if step.number > position:
                    self._judge(step.number, step.metrics, new_step=True)
                elif step.number == position:
                    late = {k: v for k, v in step.metrics.items() if k not in self.judged}
                    if late:
                        self._judge(step.number, late, new_step=False)
                        self.judged += tuple(late)
        # Steps below the position are older than every value kept; the rest, in order, are
        # each metric's newest. A new dict each time: a published view keeps the old one.
        values = dict(self.newest.metrics) if self.newest is not None else {}
        for step in ordered:
            if position is None or step.number >= position:
                values.update(step.metrics)
        known = self.judged if newest.number == position else ()
        self.judged = (*known, *(k for k in newest.metrics if k not in known))
        self.position = newest.number
        if self._unchanged(newest, values):
            return 0  # the same step again, nothing new: the published one stays
        self.newest, dropped = trimmed(
            StepRecord(newest.number, newest.created_at, values), self._max_metrics
        )
        return dropped

    def _unchanged(self, newest: StepRecord, values: Mapping[str, float]) -> bool:
        kept = self.newest
        return (
            kept is not None
            and (kept.number, kept.created_at) == (newest.number, newest.created_at)
            and values.keys() <= kept.metrics.keys()
            and _same(values, kept.metrics)
        )

    def _judge(self, number: int, metrics: Mapping[str, float], *, new_step: bool) -> None:
        outliers, nonfinite = self.spikes.judge(metrics, new_step=new_step)
        if self.history is not None:
            self.history.add(number, metrics)
            self.history.mark(number, outliers, nonfinite)

    def succeeded(self, wall: float, monotonic: float) -> None:
        self.up = True
        self.last_success = wall
        self._view = None
        if self.run.is_terminal:
            self.final_read_at = monotonic

    def view(self, provider: str) -> RunView:
        if self._view is None:
            spikes = self.spikes
            self._view = RunView(
                provider=provider,
                run=self.run,
                newest_step=self.newest,
                up=self.up,
                last_success=self.last_success,
                missing=self.missing,
                outliers=frozen(spikes.outliers),
                nonfinite=frozen(spikes.nonfinite),
                steps_processed=spikes.processed,
                history=self.history.history() if self.history is not None else None,
            )
        return self._view

    def saved(self) -> SavedRun | None:
        """What the state file keeps; nothing until the first poll has set a position."""
        if self.position is None:
            return None
        spikes = self.spikes
        return SavedRun(
            position=self.position,
            judged=sorted(self.judged),
            cursor=dict(self.cursor),
            history={metric: list(values) for metric, values in spikes.history.items()},
            outliers=dict(spikes.outliers),
            nonfinite=dict(spikes.nonfinite),
            processed=spikes.processed,
        )


def _same(values: Mapping[str, float], kept: Mapping[str, float]) -> bool:
    """Every value equal to the kept one (NaN equal to NaN: a repeated NaN is nothing new)."""
    for key, value in values.items():
        old = kept[key]
        if value != old and not (math.isnan(value) and math.isnan(old)):
            return False
    return True
