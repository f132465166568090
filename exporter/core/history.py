"""A run's loss curves, bounded and downsampled, for the status page and ``/api/runs``.

The exporter sees every step as it polls, so it can draw a run's curve without asking anyone.
Each loss-like metric keeps at most ``MAX_POINTS`` points spread evenly over the run: points
are taken every ``stride`` steps seen, and when the curve is full every other point is dropped
and the stride doubles, so a run of a million steps costs the same as one of two hundred.
Steps with an outlier or a non-finite value are kept apart (at most ``MAX_MARKS`` of each), so
that downsampling never hides a spike. Values are float32 and steps int32 in ``array``s:
about 1 KB per metric per run. A published curve shares its arrays with the builder, which
copies them only when the run moves on (copy on write): a finished run holds one copy.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_POINTS = 120
MAX_MARKS = 32


@dataclass(frozen=True, slots=True)
class Curve:
    """One metric's points, oldest first. Never changed once published."""

    steps: array[int]
    values: array[float]

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True, slots=True)
class History:
    """What the page draws for one run: a curve per loss-like metric and the marked steps."""

    curves: Mapping[str, Curve] = field(default_factory=lambda: MappingProxyType({}))
    outliers: tuple[tuple[int, str], ...] = ()  # (step, metric)
    nonfinite: tuple[tuple[int, str], ...] = ()


class _Series:
    """A curve being built: every ``stride``-th value offered, halved when full."""

    __slots__ = ("offered", "shared", "steps", "stride", "values")

    def __init__(self) -> None:
        self.steps: array[int] = array("i")
        self.values: array[float] = array("f")
        self.stride = 1
        self.offered = 0
        self.shared = False

    def add(self, step: int, value: float) -> None:
        if self.steps and step <= self.steps[-1]:
            return  # a step seen again (a late evaluation re-read) keeps its first point
        self.offered += 1
        if (self.offered - 1) % self.stride:
            return
        if self.shared:  # the published curve keeps the old arrays
            self.steps, self.values, self.shared = (
                array("i", self.steps),
                array("f", self.values),
                False,
            )
        self.steps.append(step)
        self.values.append(value)
        if len(self.steps) > MAX_POINTS:
            self.steps = self.steps[::2]
            self.values = self.values[::2]
            self.stride *= 2

    def curve(self) -> Curve:
        self.shared = True
        return Curve(self.steps, self.values)


class HistoryBuilder:
    """One run's history as steps arrive; ``history()`` is rebuilt only after a change."""

    __slots__ = ("_changed", "_metrics", "_nonfinite", "_outliers", "_published", "_series")

    def __init__(self, metrics: Iterable[str]) -> None:
        self._metrics = tuple(metrics)
        self._series: dict[str, _Series] = {}
        self._outliers: list[tuple[int, str]] = []
        self._nonfinite: list[tuple[int, str]] = []
        self._published = History()
        self._changed = False

    def add(self, step: int, metrics: Mapping[str, float]) -> None:
        for metric in self._metrics:
            value = metrics.get(metric)
            if value is not None:
                self._series.setdefault(metric, _Series()).add(step, value)
                self._changed = True

    def mark(self, step: int, outliers: Iterable[str], nonfinite: Iterable[str]) -> None:
        for marks, metrics in ((self._outliers, outliers), (self._nonfinite, nonfinite)):
            for metric in metrics:
                marks.append((step, metric))
                del marks[:-MAX_MARKS]
                self._changed = True

    def history(self) -> History:
        if self._changed:
            self._published = History(
                MappingProxyType({m: s.curve() for m, s in sorted(self._series.items())}),
                tuple(self._outliers),
                tuple(self._nonfinite),
            )
            self._changed = False
        return self._published
