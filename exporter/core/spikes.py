"""Outlier and non-finite counting over every evaluated step of one run.

A gauge of the newest step only shows what is there when Prometheus scrapes; a loss spike that
lasts one evaluation between two polls never reaches it. Counting here, over every step the
exporter processes, turns such a spike into a counter increment that ``increase(...) > 0``
catches whenever Prometheus next looks.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


class MetricWindow:
    """One metric's last ``window`` finite values (float64, an array, not a deque: a run holds
    one per loss-like metric, so 10,000 runs hold tens of thousands) and its two counts."""

    __slots__ = ("nonfinite", "outliers", "values")

    def __init__(self) -> None:
        self.values: array[float] = array("d")
        self.outliers = 0
        self.nonfinite = 0

    def add(self, value: float, window: int) -> None:
        self.values.append(value)
        if len(self.values) > window:
            del self.values[0]


class SpikeTracker:
    """Per-run memory: recent finite values of each loss-like metric, and the counts."""

    __slots__ = ("processed", "rule", "windows")

    def __init__(self, rule: SpikeRule) -> None:
        self.rule = rule
        self.windows: dict[str, MetricWindow] = {}
        self.processed = 0

    @property
    def history(self) -> dict[str, list[float]]:
        return {metric: list(w.values) for metric, w in self.windows.items()}

    @property
    def outliers(self) -> dict[str, int]:
        return {metric: w.outliers for metric, w in self.windows.items()}

    @property
    def nonfinite(self) -> dict[str, int]:
        return {metric: w.nonfinite for metric, w in self.windows.items()}

    def _window(self, metric: str) -> MetricWindow:
        """A metric's window, created (with both counts at 0, so the series exist before their
        first increment) when the metric first appears."""
        found = self.windows.get(metric)
        if found is None:
            found = self.windows[metric] = MetricWindow()
        return found

    def remember(self, metrics: Mapping[str, float]) -> None:
        """Take a step into the history without judging it (history from before we started)."""
        for metric in self.rule.metrics:
            value = metrics.get(metric)
            if value is not None:
                window = self._window(metric)
                if math.isfinite(value):
                    window.add(value, self.rule.window)

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
            window = self._window(metric)
            if not math.isfinite(value):
                window.nonfinite += 1
                nonfinite.append(metric)
                continue
            if len(window.values) >= MIN_HISTORY:
                median = statistics.median(window.values)
                if median > 0 and value >= self.rule.factor * median:
                    window.outliers += 1
                    outliers.append(metric)
            window.add(value, self.rule.window)
        return outliers, nonfinite

    def restore(
        self,
        history: Mapping[str, Iterable[float]],
        outliers: Mapping[str, int],
        nonfinite: Mapping[str, int],
        processed: int,
    ) -> None:
        """Continue from a saved state: the window's values and the counts so far."""
        for metric in {*history, *outliers, *nonfinite}:
            window = self._window(metric)
            for value in history.get(metric, ()):
                if math.isfinite(value):
                    window.add(value, self.rule.window)
            window.outliers += outliers.get(metric, 0)
            window.nonfinite += nonfinite.get(metric, 0)
        self.processed = processed
