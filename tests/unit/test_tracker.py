"""One run's tracker: every (step, metric) judged once, the newest step kept, state saved."""

from __future__ import annotations

import math

from exporter.core.provider import Run, StepRecord
from exporter.core.spikes import SpikeRule
from exporter.core.tracker import RunTracker

RULE = SpikeRule(metrics=("train/loss", "eval/loss"), factor=2.0, window=4)
RUN = Run(id="ft-1", status="running", phase="training")


def steps(*numbers: int, **metrics: float) -> list[StepRecord]:
    return [StepRecord(n, float(n), dict(metrics)) for n in numbers]


def test_an_evaluation_logged_after_its_step_is_judged_once_when_it_comes() -> None:
    tracker = RunTracker(RUN, RULE, max_metrics=100)
    tracker.absorb(steps(1, 2, 3, 4, **{"train/loss": 1.0, "eval/loss": 1.0}))  # history
    tracker.absorb(steps(5, **{"train/loss": 1.0}))  # polled before step 5's evaluation
    assert tracker.spikes.processed == 1
    tracker.absorb(
        [
            StepRecord(5, 5.0, {"train/loss": 1.0, "eval/loss": 9.0}),
            *steps(6, **{"train/loss": 1.0}),
        ]
    )
    assert tracker.spikes.outliers["eval/loss"] == 1  # the late evaluation was judged
    assert tracker.spikes.outliers["train/loss"] == 0
    assert tracker.spikes.processed == 2  # step 5 was not counted twice
    tracker.absorb(steps(6, **{"train/loss": 1.0}))  # the same step again: nothing new
    assert tracker.spikes.processed == 2
    assert tracker.newest is not None
    assert tracker.newest.number == 6


def test_the_judged_values_of_the_position_survive_a_restart() -> None:
    tracker = RunTracker(RUN, RULE, max_metrics=100)
    tracker.absorb(steps(1, 2, 3, 4, **{"train/loss": 1.0}))
    tracker.absorb(steps(5, **{"train/loss": 5.0}))
    assert tracker.spikes.outliers["train/loss"] == 1
    saved = tracker.saved()
    assert saved is not None
    restarted = RunTracker(RUN, RULE, max_metrics=100, saved=saved)
    restarted.absorb(steps(5, **{"train/loss": 5.0}))  # re-read after the restart
    assert restarted.spikes.outliers["train/loss"] == 1
    assert restarted.spikes.processed == saved.processed


def test_each_metric_keeps_its_newest_value_between_evaluations() -> None:
    tracker = RunTracker(RUN, RULE, max_metrics=100)
    tracker.absorb(
        [
            StepRecord(10, 10.0, {"train/loss": 1.0, "eval/loss": 1.5}),
            StepRecord(11, 11.0, {"train/loss": 0.9}),
        ]
    )
    tracker.absorb([StepRecord(12, 12.0, {"train/loss": 0.8})])
    assert tracker.newest is not None
    assert tracker.newest.number == 12
    assert dict(tracker.newest.metrics) == {"train/loss": 0.8, "eval/loss": 1.5}
    tracker.absorb([StepRecord(12, 12.0, {"train/loss": 0.8, "eval/loss": 1.2})])
    assert dict(tracker.newest.metrics) == {"train/loss": 0.8, "eval/loss": 1.2}


def test_runs_alike_share_one_copy_of_their_counts() -> None:
    first, second = (RunTracker(Run(id=i, status="running"), RULE, max_metrics=100) for i in "ab")
    for tracker in (first, second):
        tracker.absorb(steps(1, 2, 3, 4, **{"train/loss": 1.0}))
    one, other = first.view("sim"), second.view("sim")
    assert one.outliers == {"train/loss": 0}
    assert one.outliers is other.outliers  # ten thousand quiet runs cost one mapping
    assert first.view("sim") is one  # nothing changed, nothing rebuilt
    first.absorb(steps(5, **{"train/loss": 9.0}))
    changed = first.view("sim")
    assert changed is not one
    assert changed.outliers["train/loss"] == 1
    assert other.outliers["train/loss"] == 0  # the shared copy was not touched


def test_the_same_newest_step_read_again_keeps_the_published_one() -> None:
    tracker = RunTracker(RUN, RULE, max_metrics=100)
    tracker.absorb([StepRecord(7, 7.0, {"train/loss": math.nan, "eval/loss": 0.5})])
    kept = tracker.newest
    tracker.absorb([StepRecord(7, 7.0, {"train/loss": math.nan, "eval/loss": 0.5})])
    assert tracker.newest is kept  # nothing new, NaN included: no new object to encode
    tracker.absorb([StepRecord(7, 7.0, {"train/loss": math.nan, "eval/loss": 0.4})])
    assert tracker.newest is not kept
    assert tracker.newest is not None
    assert tracker.newest.metrics["eval/loss"] == 0.4
