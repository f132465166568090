"""A run's curves stay bounded, spread over the whole run, and keep every marked spike."""

from __future__ import annotations

import math

from exporter.core.history import MAX_MARKS, MAX_POINTS, HistoryBuilder
from exporter.core.provider import Run, StepRecord
from exporter.core.spikes import SpikeRule
from exporter.core.tracker import RunTracker


def test_a_long_run_keeps_at_most_max_points_spread_over_all_of_it() -> None:
    builder = HistoryBuilder(["train/loss"])
    for step in range(100_000):
        builder.add(step, {"train/loss": 1.0 / (step + 1)})
    curve = builder.history().curves["train/loss"]
    assert MAX_POINTS // 2 <= len(curve) <= MAX_POINTS
    assert curve.steps[0] == 0
    assert curve.steps[-1] >= 100_000 - 100_000 // len(curve) * 2  # reaches the end
    gaps = {b - a for a, b in zip(curve.steps, curve.steps[1:], strict=False)}
    assert len(gaps) == 1  # evenly spread


def test_a_published_history_does_not_change_when_the_run_moves_on() -> None:
    builder = HistoryBuilder(["loss"])
    for step in range(10):
        builder.add(step, {"loss": float(step)})
    published = builder.history()
    assert builder.history() is published  # nothing new: the same object, no copy
    builder.add(10, {"loss": 10.0})
    assert len(published.curves["loss"]) == 10
    assert len(builder.history().curves["loss"]) == 11


def test_marks_are_kept_apart_and_bounded() -> None:
    builder = HistoryBuilder(["loss"])
    for step in range(MAX_MARKS + 5):
        builder.mark(step, ["loss"], [])
    builder.mark(999, [], ["loss"])
    history = builder.history()
    assert len(history.outliers) == MAX_MARKS
    assert history.outliers[-1] == (MAX_MARKS + 4, "loss")
    assert history.nonfinite == ((999, "loss"),)


def test_a_tracker_draws_the_history_it_read_and_marks_the_spikes_it_judged() -> None:
    rule = SpikeRule(metrics=("train/loss",), factor=2.0, window=4)
    run = Run(id="ft-1", status="running", phase="training")
    tracker = RunTracker(run, rule, max_metrics=100, history=True)
    tracker.absorb([StepRecord(n, None, {"train/loss": 1.0}) for n in range(5)])
    tracker.absorb(
        [StepRecord(5, None, {"train/loss": 9.0}), StepRecord(6, None, {"train/loss": math.nan})]
    )
    history = tracker.view("together").history
    assert history is not None
    assert list(history.curves["train/loss"].steps) == [0, 1, 2, 3, 4, 5, 6]
    assert history.outliers == ((5, "train/loss"),)
    assert history.nonfinite == ((6, "train/loss"),)
    assert RunTracker(run, rule, max_metrics=100).view("together").history is None
