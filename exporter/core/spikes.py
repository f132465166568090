"""Outlier and non-finite counting over every evaluated step of one run.

A gauge of the newest step only shows what is there when Prometheus scrapes; a loss spike that
lasts one evaluation between two polls never reaches it. Counting here, over every step the
exporter processes, turns such a spike into a counter increment that ``increase(...) > 0``
catches whenever Prometheus next looks.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.settings import Settings

MIN_HISTORY = 3  # a median of fewer values would flag the normal fast fall of early training


@dataclass(frozen=True)
class SpikeRule:
    """A step is an outlier when its value is at least ``factor`` x the median of the
    previous ``window`` finite values of the same metric."""

    metrics: tuple[str, ...]
    factor: float
    window: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SpikeRule:
        return cls(settings.spike_metrics, settings.spike_factor, settings.spike_window)


@dataclass
class SpikeTracker:
    """Per-run memory: recent finite values of each loss-like metric, and the counts."""

    rule: SpikeRule
    history: dict[str, deque[float]] = field(default_factory=dict)
    outliers: Counter[str] = field(default_factory=Counter)
    nonfinite: Counter[str] = field(default_factory=Counter)
    processed: int = 0

    def _history(self, metric: str) -> deque[float]:
        found = self.history.get(metric)
        if found is None:
            found = self.history[metric] = deque(maxlen=self.rule.window)
            self.outliers[metric] += 0  # the series exists at 0 before its first increment
            self.nonfinite[metric] += 0
        return found

    def remember(self, metrics: Mapping[str, float]) -> None:
        """Take a step into the history without judging it (history from before we started)."""
        for metric in self.rule.metrics:
            value = metrics.get(metric)
            if value is not None:
                history = self._history(metric)
                if math.isfinite(value):
                    history.append(value)

    def judge(
        self, metrics: Mapping[str, float], *, new_step: bool = True
    ) -> tuple[list[str], list[str]]:
        """Judge a step's values and add them to the history; count the step when it is new
        (a value that arrives later for a step already counted, such as an evaluation logged
        after its training step, is judged without counting the step again). Returns the
        metrics found to be outliers and those found non-finite."""
        if new_step:
            self.processed += 1
        outliers: list[str] = []
        nonfinite: list[str] = []
        for metric in self.rule.metrics:
            value = metrics.get(metric)
            if value is None:
                continue
            history = self._history(metric)
            if not math.isfinite(value):
                self.nonfinite[metric] += 1
                nonfinite.append(metric)
                continue
            if len(history) >= MIN_HISTORY:
                median = statistics.median(history)
                if median > 0 and value >= self.rule.factor * median:
                    self.outliers[metric] += 1
                    outliers.append(metric)
            history.append(value)
        return outliers, nonfinite

    def restore(
        self,
        history: Mapping[str, Iterable[float]],
        outliers: Mapping[str, int],
        nonfinite: Mapping[str, int],
        processed: int,
    ) -> None:
        """Continue from a saved state: the window's values and the counts so far."""
        for metric, values in history.items():
            restored = self._history(metric)
            restored.extend(v for v in values if math.isfinite(v))
        self.outliers.update(outliers)
        self.nonfinite.update(nonfinite)
        self.processed = processed
