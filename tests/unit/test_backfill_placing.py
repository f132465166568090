"""Backfill's pure parts: which steps are placed in time, and how a family is written."""

from __future__ import annotations

import io

from exporter import contract as c
from exporter.backfill import WRITE_BATCH, _write_family, place_in_time
from exporter.core.provider import StepRecord

T0 = 1_700_000_000.0


def timed(number: int, when: float | None, **metrics: float) -> StepRecord:
    return StepRecord(number, when, metrics)


def test_a_later_step_supersedes_one_it_does_not_follow_in_time() -> None:
    steps = [
        timed(3, T0 + 3.0),
        timed(1, T0 + 1.0),
        timed(2, T0 + 3.0004),  # same millisecond as step 3: step 3 wins
        timed(0, T0 + 0.0),
        timed(5, T0 + 4.0),
        timed(4, T0 + 4.5),  # after step 5: never the newest step, dropped
        timed(6, None),
    ]
    points, skipped = place_in_time(steps, max_metrics=100)
    assert [(p.number, p.ms) for p in points] == [
        (0, 1_700_000_000_000),
        (1, 1_700_000_001_000),
        (3, 1_700_000_003_000),
        (5, 1_700_000_004_000),
    ]
    assert skipped == 3


def test_placed_steps_keep_the_first_metrics_alphabetically_over_the_limit() -> None:
    wide = timed(1, 10.0, b=2.0, a=1.0, c=3.0)
    narrow = timed(2, 20.0, z=9.0)
    points, skipped = place_in_time([wide, narrow], max_metrics=2)
    assert skipped == 0
    assert [dict(point.metrics) for point in points] == [{"a": 1.0, "b": 2.0}, {"z": 9.0}]
    assert points[1].metrics is narrow.metrics  # under the limit: the step's own, not a copy


def test_a_series_longer_than_a_batch_is_written_whole_under_one_header() -> None:
    out = io.StringIO()
    points = [(1_000 * n, str(n)) for n in range(2 * WRITE_BATCH + 5)]
    written = _write_family(out, c.STEP_NUMBER, "h", [('{x="1"}', iter(points))])
    lines = out.getvalue().splitlines()
    assert written == len(points)
    assert [line for line in lines if line.startswith("# ")] == [
        "# HELP finetune_step_number h",
        "# TYPE finetune_step_number gauge",
    ]
    assert lines[2:] == [f'finetune_step_number{{x="1"}} {n} {n}.000' for n in range(len(points))]
