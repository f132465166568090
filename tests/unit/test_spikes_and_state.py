"""Outlier counting rules and the state file's round trip."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from exporter.core.spikes import SpikeRule, SpikeTracker
from exporter.core.state import SavedRun, load_state, save_state

RULE = SpikeRule(metrics=("cross_entropy",), factor=2.0, window=4)


def test_an_outlier_is_twice_the_median_of_the_window() -> None:
    tracker = SpikeTracker(RULE)
    for value in (1.0, 1.0, 1.0, 1.0):
        tracker.judge({"cross_entropy": value})
    tracker.judge({"cross_entropy": 1.99})
    assert tracker.outliers["cross_entropy"] == 0
    tracker.judge({"cross_entropy": 4.0})
    assert tracker.outliers["cross_entropy"] == 1
    assert tracker.processed == 6


def test_the_window_forgets_old_values() -> None:
    tracker = SpikeTracker(RULE)
    for value in (10.0, 10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0):
        tracker.judge({"cross_entropy": value})
    tracker.judge({"cross_entropy": 3.0})  # 3x the last four, though below the old tens
    assert tracker.outliers["cross_entropy"] == 1


def test_non_finite_values_are_counted_apart_and_kept_out_of_the_median() -> None:
    tracker = SpikeTracker(RULE)
    for value in (1.0, math.nan, 1.0, math.inf, 1.0, -math.inf):
        tracker.judge({"cross_entropy": value})
    assert tracker.nonfinite["cross_entropy"] == 3
    assert list(tracker.history["cross_entropy"]) == [1.0, 1.0, 1.0]
    assert tracker.outliers["cross_entropy"] == 0


def test_too_little_history_or_a_zero_median_judges_nothing() -> None:
    tracker = SpikeTracker(RULE)
    tracker.judge({"cross_entropy": 1.0})
    tracker.judge({"cross_entropy": 100.0})  # only one value before it
    zeros = SpikeTracker(RULE)
    for _ in range(4):
        zeros.judge({"cross_entropy": 0.0})
    zeros.judge({"cross_entropy": 0.5})
    assert tracker.outliers["cross_entropy"] == 0
    assert zeros.outliers["cross_entropy"] == 0


def test_remembered_history_is_not_counted_but_is_used() -> None:
    tracker = SpikeTracker(RULE)
    for _ in range(4):
        tracker.remember({"cross_entropy": 1.0, "accuracy": 0.5})
    assert tracker.processed == 0
    assert dict(tracker.outliers) == {"cross_entropy": 0}  # the series exists at zero
    tracker.judge({"cross_entropy": 5.0})
    assert tracker.outliers["cross_entropy"] == 1


def test_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    saved = {
        "cohere": {
            "m": SavedRun(
                position=7,
                cursor={"order": "oldest-first", "resume_token": "tok"},
                history={"cross_entropy": [1.0, 2.0]},
                outliers={"loss": 2},
                nonfinite={"loss": 1},
                processed=9,
            )
        },
        "together": {"ft-1": SavedRun(position=3)},
    }
    save_state(path, saved)
    assert load_state(path) == saved
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left


def test_a_version_1_file_resumes_cohere_models(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(
        '{"version":1,"models":{"m":{"position":7,"order":"oldest-first",'
        '"resume_token":"tok","history":{"cross_entropy":[1.0]},"outliers":{"cross_entropy":2},'
        '"nonfinite":{},"processed":9}}}'
    )
    (saved,) = load_state(path)["cohere"].values()
    assert saved.position == 7
    assert saved.cursor == {"order": "oldest-first", "resume_token": "tok"}
    assert (saved.outliers, saved.processed) == ({"cross_entropy": 2}, 9)


def test_missing_state_is_a_first_start(tmp_path: Path) -> None:
    assert load_state(tmp_path / "absent.json") == {}


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"version": 99, "models": {}}',
        '{"version": 1, "models": {"m": {}}}',
        '{"version": 2, "providers": {"cohere": {"m": {"position": "seven"}}}}',
        '{"version": 2, "providers": {"cohere": {"m": {"position": 1, "surprise": 1}}}}',
        "[" * 100_000,
    ],
)
def test_broken_state_is_ignored_with_a_warning(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with caplog.at_level(logging.WARNING):
        assert load_state(path) == {}
    assert "state file" in caplog.text


def test_an_unwritable_state_file_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    problem = save_state(blocker / "state.json", {"cohere": {"m": SavedRun(position=1)}})
    assert problem is not None
    assert "NotADirectoryError" in problem or "FileExistsError" in problem
