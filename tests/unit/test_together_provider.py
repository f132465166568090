"""Together's answers read as runs and steps, every unconfirmed form of the format included."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pydantic import ValidationError

from exporter.providers.together.client import TogetherClient
from exporter.providers.together.models import EventList, Job, MetricList, Progress
from exporter.providers.together.provider import (
    WINDOW_STEPS,
    TogetherProvider,
    to_run,
    total_steps,
)
from exporter.providers.together.steps import to_steps

NS = 1_779_196_193_564_587_123  # nanoseconds: beyond a float's 53 bits


def test_a_training_and_an_evaluation_entry_of_one_step_are_one_step() -> None:
    entries = [
        {"train/global_step": 7, "train/loss": 0.5, "timestamp": NS},
        {"eval/global_step": 7, "eval/loss": 0.75},
        {"train/global_step": 14, "train/loss": 0.45, "train/learning_rate": 9e-05},
    ]
    steps, stepless = to_steps(entries)
    assert stepless == 0
    assert [s.number for s in steps] == [7, 14]
    assert steps[0].metrics == {"train/loss": 0.5, "eval/loss": 0.75}
    assert steps[1].created_at is None  # the documented example has no timestamp


def test_an_evaluation_entry_without_a_step_joins_its_training_entry() -> None:
    entries = [
        {"train/global_step": 8, "train/loss": 0.6},
        {"eval/loss": 0.8, "eval/perplexity": 2.2},  # no step key at all
        {"train/global_step": 9, "train/loss": 0.59},
    ]
    steps, _ = to_steps(entries)
    assert steps[0].number == 8
    assert steps[0].metrics == {"train/loss": 0.6, "eval/loss": 0.8, "eval/perplexity": 2.2}
    assert steps[1].metrics == {"train/loss": 0.59}


def test_stepless_entries_before_any_step_join_the_next_and_alone_are_left_out() -> None:
    steps, stepless = to_steps([{"eval/loss": 0.8}, {"train/global_step": 3, "train/loss": 1}])
    assert [(s.number, dict(s.metrics)) for s in steps] == [
        (3, {"eval/loss": 0.8, "train/loss": 1.0})
    ]
    assert stepless == 0
    assert to_steps([{"eval/loss": 0.8}]) == ([], 1)


def test_nanosecond_timestamps_keep_their_precision() -> None:
    (step,), _ = to_steps([{"train/global_step": 1, "train/loss": 1.0, "timestamp": NS}])
    assert step.created_at is not None
    assert math.floor(step.created_at) == NS // 1_000_000_000
    assert round((step.created_at % 1) * 1e6) == (NS % 1_000_000_000) // 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [("NaN", math.nan), ("Infinity", math.inf), ("-Infinity", -math.inf), (2, 2.0)],
)
def test_non_finite_values_as_strings(value: Any, expected: float) -> None:
    (step,), _ = to_steps([{"train/global_step": 1, "train/loss": value}])
    got = step.metrics["train/loss"]
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@pytest.mark.parametrize("value", [None, True, "high", {"a": 1}, [1]])
def test_values_that_are_no_numbers_are_left_out_not_fatal(value: Any) -> None:
    (step,), _ = to_steps([{"train/global_step": 1, "train/loss": 1.0, "other": value}])
    assert step.metrics == {"train/loss": 1.0}


def test_an_omitted_loss_is_simply_absent() -> None:
    (step,), _ = to_steps([{"train/global_step": 5, "train/learning_rate": 1e-4}])
    assert "train/loss" not in step.metrics


@pytest.mark.parametrize("step", ["seven", 7.5, True, "7e3"])
def test_a_step_that_is_no_integer_makes_the_answer_invalid(step: Any) -> None:
    with pytest.raises(ValidationError, match="entry 1"):
        MetricList.model_validate(
            {"metrics": [{"train/global_step": 1}, {"train/global_step": step}]}
        )


def test_a_job_with_every_optional_field_missing_or_null() -> None:
    job = Job.model_validate(
        {
            "id": "ft-1",
            "status": "pending",
            "created_at": "2026-06-01T10:00:00.123Z",
            "updated_at": None,
            "model": None,
            "training_type": None,
            "progress": None,
        }
    )
    run = to_run(job, None)
    assert (run.id, run.phase, run.name, run.base_model) == ("ft-1", "queued", "", "")
    assert (run.eta_seconds, run.tokens, run.total_steps) == (None, None, None)
    assert run.created_at == pytest.approx(1780308000.123)


def test_a_running_job_tells_progress_and_its_kinds() -> None:
    job = Job.model_validate(
        {
            "id": "ft-2",
            "status": "running",
            "created_at": "2026-06-01T10:00:00+00:00",
            "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
            "model_output_name": "acct/Meta-Llama-3.1-8B-demo-1a2b",
            "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
            "training_method": "dpo",
            "token_count": 123456,
            "progress": {"estimate_available": True, "seconds_remaining": 600},
        }
    )
    run = to_run(job, 500)
    assert run.labels == {"training_type": "Lora", "training_method": "dpo"}
    assert (run.total_steps, run.eta_seconds, run.tokens) == (500, 600.0, 123456)
    unsure = job.model_copy(update={"progress": Progress(estimate_available=False)})
    assert to_run(unsure, None).eta_seconds is None


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("pending", "queued"),
        ("queued", "queued"),
        ("running", "training"),
        ("compressing", "deploying"),
        ("uploading", "deploying"),
        ("completed", "succeeded"),
        ("error", "failed"),
        ("cancel_requested", "cancelled"),
        ("cancelled", "cancelled"),
        ("paused-for-tea", "unknown"),
    ],
)
def test_phases(status: str, phase: str) -> None:
    run = to_run(Job(id="ft-3", status=status), None)
    assert (run.status, run.phase) == (status, phase)


def test_total_steps_is_the_newest_any_event_tells() -> None:
    events = EventList.model_validate(
        {
            "data": [
                {"type": "job_start"},
                {"type": "training_start", "total_steps": 300},
                {"type": "job_restarted", "total_steps": 420},
                {"type": "epoch_complete"},
            ]
        }
    ).data
    assert total_steps(events) == 420
    assert total_steps([]) is None


@dataclass
class FakeMetrics:
    """A metrics endpoint over a fixed list of training steps, honouring the window params."""

    last_step: int
    calls: list[dict[str, int | None]] = field(default_factory=list)

    async def list_metrics(
        self,
        job_id: str,
        *,
        step_from: int | None = None,
        step_to: int | None = None,
        resolution: int | None = None,
    ) -> MetricList:
        self.calls.append({"from": step_from, "to": step_to, "resolution": resolution})
        numbers = list(range(self.last_step + 1))
        if resolution is not None:
            stride = max(1, len(numbers) // resolution)
            numbers = numbers[::stride]
        if step_from is not None:
            numbers = [n for n in numbers if n >= step_from]
        if step_to is not None:
            numbers = [n for n in numbers if n <= step_to]
        return MetricList(metrics=[{"train/global_step": n, "train/loss": 1.0} for n in numbers])


def provider_over(fake: FakeMetrics) -> TogetherProvider:
    return TogetherProvider(cast(TogetherClient, fake), concurrency=1)


async def test_a_cycle_with_nothing_new_costs_one_request() -> None:
    fake = FakeMetrics(last_step=40)
    run = to_run(Job(id="ft-1", status="running"), None)
    steps = await provider_over(fake).steps_after(run, 40, {})
    assert [s.number for s in steps] == [40]  # the position's own step, for late evaluations
    assert fake.calls == [{"from": 40, "to": 40 + WINDOW_STEPS - 1, "resolution": None}]


async def test_catching_up_reads_window_after_window_and_no_step_twice() -> None:
    fake = FakeMetrics(last_step=3 * WINDOW_STEPS + 10)
    run = to_run(Job(id="ft-1", status="running"), None)
    steps = await provider_over(fake).steps_after(run, 4, {})
    numbers = [s.number for s in steps]
    assert numbers == list(range(4, fake.last_step + 1))
    assert len(fake.calls) == 4
    assert all(call["resolution"] is None for call in fake.calls)


async def test_a_job_seen_first_is_sampled_then_followed_from_its_newest_sample() -> None:
    fake = FakeMetrics(last_step=50_000)
    run = to_run(Job(id="ft-1", status="running"), None)
    steps = await provider_over(fake).steps_after(run, None, {})
    assert fake.calls[0]["resolution"] is not None
    assert len(fake.calls) == 2  # the sample, then the steps after its newest point
    assert max(s.number for s in steps) == 50_000
    assert len(steps) < 500  # a curve, not 50,000 steps


async def test_backfill_reads_every_step_in_windows() -> None:
    fake = FakeMetrics(last_step=2 * WINDOW_STEPS + 3)
    run = to_run(Job(id="ft-1", status="completed"), None)
    steps = await provider_over(fake).all_steps(run)
    assert [s.number for s in steps] == list(range(fake.last_step + 1))
    assert len(fake.calls) == 4  # three windows with steps, one empty
