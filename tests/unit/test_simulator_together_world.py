"""The simulated Together AI account: deterministic, lifecycle-consistent, lazy, and quirky in
every way the API is documented (or not confirmed) to be."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import time
import typing
import uuid

import pytest
from together.types.finetune_event_type import FinetuneEventType

from exporter.simulator import SimClock
from exporter.simulator.together import TogetherWorld
from exporter.simulator.together.jobs import stages
from exporter.simulator.together.metrics import MetricsQuery

START = 1_780_000_000.0
#: Longer than any random run: 60 s queued + 3,600 steps of at most 1.6 s, evals and uploads.
FINISHED = 30_000.0
STATUS_ORDER = ["pending", "queued", "running", "compressing", "uploading", "completed"]
EVENT_TYPES = set(typing.get_args(FinetuneEventType))


def world_of(jobs: int = 5, seed: int = 1) -> tuple[TogetherWorld, SimClock]:
    clock = SimClock(start_unix=START, frozen=True)
    return TogetherWorld(jobs=jobs, seed=seed, clock=clock), clock


def parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def train_entries(entries: list[dict[str, typing.Any]]) -> list[dict[str, typing.Any]]:
    return [e for e in entries if "train/global_step" in e]


def eval_entries(entries: list[dict[str, typing.Any]]) -> list[dict[str, typing.Any]]:
    return [e for e in entries if any(k.startswith("eval/") for k in e)]


# --------------------------------------------------------------------------- the account


def test_same_seed_same_account_other_seed_other_ids() -> None:
    a, _ = world_of(seed=7)
    b, _ = world_of(seed=7)
    c, _ = world_of(seed=8)
    assert a.job_ids() == b.job_ids()
    for job_id in a.job_ids():
        assert a.job(job_id) == b.job(job_id)
        assert a.metrics(job_id) == b.metrics(job_id)
    assert set(a.job_ids()).isdisjoint(c.job_ids())


def test_ids_are_ft_uuid4_from_the_documented_derivation() -> None:
    world, _ = world_of(jobs=4, seed=5)
    expected = {
        "ft-" + str(uuid.UUID(int=random.Random(f"together:5:{i}").getrandbits(128), version=4))
        for i in range(4)
    }
    assert set(world.job_ids()) == expected
    for job_id in world.job_ids():
        assert uuid.UUID(job_id.removeprefix("ft-")).version == 4


def test_showcase_jobs_at_start() -> None:
    world, _ = world_of()
    by_index = {world.plan(j).index: j for j in world.job_ids()}
    statuses = {i: world.status(j) for i, j in by_index.items()}
    assert statuses == {
        0: "running",
        1: "completed",
        2: "running",
        3: "queued",
        4: "pending",
    }
    assert train_entries(world.metrics(by_index[0]))  # data at once
    mid = world.plan(by_index[2])
    done = len(train_entries(world.metrics(by_index[2])))
    logged_total = sum(mid.is_logged(s) for s in range(1, mid.total_steps + 1))
    assert 0.2 * logged_total < done < 0.8 * logged_total


def test_jobs_range_from_hundreds_to_thousands_of_steps() -> None:
    world, _ = world_of(jobs=60)
    totals = [world.plan(j).total_steps for j in world.job_ids()]
    assert min(totals) >= 200
    assert max(totals) > 1_000
    assert max(totals) <= 3_600


def test_lifecycle_of_added_jobs_moves_forward_in_order() -> None:
    world, clock = world_of(jobs=0)
    added = [world.add_job() for _ in range(40)]
    seen: dict[str, list[str]] = {job_id: [] for job_id in added}
    for _ in range(0, 8_000, 5):
        for job_id in added:
            status = world.status(job_id)
            if not seen[job_id] or seen[job_id][-1] != status:
                seen[job_id].append(status)
        clock.advance(5.0)
    endings = {tuple(s[-2:]) for s in seen.values()}
    for path in seen.values():
        assert path[0] == "pending"
        if path[-1] == "completed":
            assert path == STATUS_ORDER
        elif path[-1] == "error":
            assert path[:-1] == STATUS_ORDER[:3]
        else:
            assert path[-3:] == ["running", "cancel_requested", "cancelled"], path
    assert ("uploading", "completed") in endings
    assert ("running", "error") in endings
    assert ("cancel_requested", "cancelled") in endings


def test_about_one_in_eight_errors_and_one_in_twelve_is_cancelled() -> None:
    world, _ = world_of(jobs=0)
    plans = [world.plan(world.add_job()) for _ in range(1_200)]
    errors = sum(p.ending == "error" for p in plans)
    cancels = sum(p.ending == "cancelled" for p in plans)
    assert 1_200 / 8 * 0.7 < errors < 1_200 / 8 * 1.3
    assert 1_200 / 12 * 0.7 < cancels < 1_200 / 12 * 1.3


def test_ten_thousand_jobs_construct_lazily() -> None:
    began = time.perf_counter()
    world, _ = world_of(jobs=10_000)
    assert time.perf_counter() - began < 0.2
    assert world._plans == {}
    assert world._logs == {}
    first = world.job_ids()[0]
    world.metrics(first)
    assert len(world._logs) == 1


def test_unknown_job_raises_key_error() -> None:
    world, _ = world_of()
    with pytest.raises(KeyError):
        world.job("ft-00000000-0000-4000-8000-000000000000")
    with pytest.raises(KeyError):
        world.metrics("ft-nope")


# --------------------------------------------------------------------------- job objects


def test_job_objects_follow_their_stage() -> None:
    world, clock = world_of(jobs=30)
    for _ in range(6):
        now = clock.now()
        for job_id in world.job_ids():
            plan = world.plan(job_id)
            full, truncated = world.job(job_id), world.job(job_id, full=False)
            status = full["status"]
            assert truncated["status"] == status
            assert "events" not in truncated
            assert [e["type"] for e in full["events"]] == [e["type"] for e in world.events(job_id)]
            assert ("model_output_name" in full) == (status not in ("pending", "queued"))
            assert ("progress" in full) == (status == "running")
            started = parse_iso(full["started_at"])
            assert started == pytest.approx(
                max(t for t, s in stages(plan) if t <= now and s == status), abs=1e-5
            )
            assert parse_iso(full["created_at"]) <= started <= parse_iso(full["updated_at"])
            assert parse_iso(full["updated_at"]) <= now + 1e-5
            assert isinstance(full["total_price"], int)
            kind = full["training_type"]["type"]
            assert kind in ("Full", "Lora")
            if kind == "Lora":
                assert {"lora_r", "lora_alpha"} <= set(full["training_type"])
            assert full["training_method"]["method"] in ("sft", "dpo")
        clock.advance(2_000)


def test_progress_counts_down_to_the_end_of_training() -> None:
    world, clock = world_of()
    job_id = next(j for j in world.job_ids() if world.plan(j).index == 2)
    first = world.job(job_id)["progress"]
    clock.advance(100)
    second = world.job(job_id)["progress"]
    assert first["estimate_available"]
    assert second["estimate_available"]
    assert first["seconds_remaining"] - second["seconds_remaining"] == pytest.approx(100, abs=1)


def test_events_are_chronological_typed_and_carry_steps() -> None:
    world, clock = world_of(jobs=40)
    clock.advance(FINISHED)
    with_steps = {"training_start", "epoch_complete", "checkpoint_save", "training_complete"}
    for job_id in world.job_ids():
        plan = world.plan(job_id)
        events = world.events(job_id)
        times = [parse_iso(e["created_at"]) for e in events]
        assert times == sorted(times)
        assert {e["type"] for e in events} <= EVENT_TYPES
        assert {e["object"] for e in events} == {"fine-tune-event"}
        for event in events:
            if event["type"] in with_steps:
                assert event["total_steps"] == plan.total_steps
                assert 0 <= event["step"] <= plan.total_steps
            else:
                assert event["step"] is None
        last = events[-1]["type"]
        assert last == {"completed": "job_complete", "error": "job_error"}.get(
            plan.ending, "job_stopped"
        )
        epochs = [e["step"] for e in events if e["type"] == "epoch_complete"]
        assert epochs == [s for s in epochs if s % plan.steps_per_epoch == 0]


def test_checkpoints_appear_with_their_events() -> None:
    world, clock = world_of(jobs=12)
    clock.advance(FINISHED)
    for job_id in world.job_ids():
        saves = [e for e in world.events(job_id) if e["type"] == "checkpoint_save"]
        points = world.checkpoints(job_id)
        assert [c["step"] for c in points] == [e["step"] for e in saves]
        if world.status(job_id) == "completed":
            assert points[-1]["checkpoint_type"] == "Final"
            assert points[-1]["step"] == world.plan(job_id).total_steps


# --------------------------------------------------------------------------- metrics


def test_metrics_are_chronological_and_steps_follow_logging_steps() -> None:
    world, clock = world_of(jobs=20)
    clock.advance(FINISHED)
    for job_id in world.job_ids():
        plan = world.plan(job_id)
        logged = world.logged(job_id)
        times = [t for _, t, _ in logged]
        assert times == sorted(times)
        trains = [e for _, _, e in logged if "train/global_step" in e]
        steps = [e["train/global_step"] for e in trains]
        assert steps == [s for s in range(1, plan.last_step + 1) if plan.is_logged(s)]
        for entry in trains:
            assert entry["train/epoch"] == round(
                entry["train/global_step"] / plan.steps_per_epoch, 4
            )
            assert entry["train/learning_rate"] <= plan.settings["learning_rate"] * (1 + 1e-12)


def test_eval_entries_follow_the_training_entry_of_their_step_in_both_forms() -> None:
    world, clock = world_of(jobs=40)
    clock.advance(FINISHED)
    forms = set()
    for job_id in world.job_ids():
        plan, quirks = world.plan(job_id), world.quirks(job_id)
        logged = world.logged(job_id)
        for (step_a, _, before), (step_b, _, entry) in itertools.pairwise(logged):
            if "eval/loss" not in entry:
                continue
            forms.add(quirks.eval_form)
            assert step_a == step_b  # logged at the step of the training entry before it
            assert before["train/global_step"] == step_b
            assert plan.eval_every is not None
            assert step_b % plan.eval_every == 0
            if quirks.eval_form == "global_step":
                assert entry["eval/global_step"] == step_b
            else:
                assert not any("step" in key for key in entry)
            assert ("eval/perplexity" in entry) == quirks.perplexity
            assert not any(key.startswith("train/") for key in entry)
    assert forms == {"global_step", "none"}


def test_timestamps_are_exact_integer_nanoseconds_or_absent() -> None:
    world, clock = world_of(jobs=20)
    clock.advance(FINISHED)
    beyond_float = 0
    kinds = set()
    for job_id in world.job_ids():
        quirks = world.quirks(job_id)
        kinds.add(quirks.timestamps)
        for _, at_ns, entry in world.logged(job_id):
            if not quirks.timestamps:
                assert "timestamp" not in entry
                continue
            stamp = entry["timestamp"]
            assert type(stamp) is int
            assert stamp == at_ns
            beyond_float += int(float(stamp)) != stamp
    assert kinds == {True, False}
    assert beyond_float > 1_000  # most stamps have more digits than a double holds


def test_exactly_one_job_goes_nan_mid_run_and_carries_on_in_its_form() -> None:
    forms = set()
    for seed in range(1, 12):
        world, clock = world_of(jobs=6, seed=seed)
        clock.advance(FINISHED)
        nan_jobs = [j for j in world.job_ids() if world.quirks(j).nan_step is not None]
        assert len(nan_jobs) == 1
        job_id = nan_jobs[0]
        quirks = world.quirks(job_id)
        assert quirks.nan_step is not None
        forms.add(quirks.nan_form)
        trains = train_entries(world.metrics(job_id))
        at = next(e for e in trains if e["train/global_step"] == quirks.nan_step)
        if quirks.nan_form == "string":
            assert at["train/loss"] == "NaN"
        else:
            assert "train/loss" not in at
        after = [e for e in trains if e["train/global_step"] > quirks.nan_step]
        assert after
        assert all(math.isfinite(e["train/loss"]) for e in after)
        for other in world.job_ids():
            if other != job_id:
                losses = [e.get("train/loss") for e in train_entries(world.metrics(other))]
                assert all(isinstance(v, float) and math.isfinite(v) for v in losses)
    assert forms == {"string", "omit"}


def test_training_curve_falls_and_spikes_are_rare() -> None:
    world, clock = world_of(jobs=10)
    clock.advance(FINISHED)
    spikes = entries = 0
    for job_id in world.job_ids():
        losses = [
            e["train/loss"]
            for e in train_entries(world.metrics(job_id))
            if isinstance(e.get("train/loss"), float)
        ]
        entries += len(losses)
        head, tail = losses[: len(losses) // 10], losses[-len(losses) // 10 :]
        assert sorted(tail)[len(tail) // 2] < sorted(head)[len(head) // 2]
        spikes += sum(1 for a, b in itertools.pairwise(losses) if b > 2 * a)
    assert 1 <= spikes <= entries / 100


# --------------------------------------------------------------------------- queries


def _finished_job(world: TogetherWorld) -> str:
    return next(
        j
        for j in world.job_ids()
        if world.status(j) == "completed"
        and world.plan(j).eval_every
        and world.quirks(j).timestamps
    )


def test_global_step_bounds_are_inclusive() -> None:
    world, clock = world_of(jobs=12)
    clock.advance(FINISHED)
    job_id = _finished_job(world)
    everything = world.logged(job_id)
    steps = sorted({s for s, _, _ in everything})
    low, high = steps[len(steps) // 3], steps[2 * len(steps) // 3]
    got = world.metrics(job_id, MetricsQuery(step_from=low, step_to=high))
    assert got == [e for s, _, e in everything if low <= s <= high]
    assert world.metrics(job_id, MetricsQuery(step_from=steps[-1] + 1)) == []
    assert world.metrics(job_id, MetricsQuery(step_from=high, step_to=low)) == []


def test_logged_at_bounds_are_inclusive_to_the_nanosecond() -> None:
    world, clock = world_of(jobs=12)
    clock.advance(FINISHED)
    job_id = _finished_job(world)
    everything = world.logged(job_id)
    _, first, _ = everything[len(everything) // 4]
    _, last, _ = everything[len(everything) // 2]
    got = world.metrics(job_id, MetricsQuery(logged_from_ns=first, logged_to_ns=last))
    assert got == [e for _, t, e in everything if first <= t <= last]
    assert got[0]["timestamp"] == first
    assert got[-1]["timestamp"] == last
    shifted = world.metrics(job_id, MetricsQuery(logged_from_ns=first + 1, logged_to_ns=last - 1))
    assert shifted == got[1:-1]


@pytest.mark.parametrize("resolution", [1, 2, 7, 50])
def test_resolution_samples_training_entries_uniformly(resolution: int) -> None:
    world, clock = world_of(jobs=12)
    clock.advance(FINISHED)
    job_id = _finished_job(world)
    everything = world.metrics(job_id)
    steps = [e["train/global_step"] for e in train_entries(everything)]
    got = world.metrics(job_id, MetricsQuery(resolution=resolution))
    sampled = [e["train/global_step"] for e in train_entries(got)]
    assert len(sampled) == resolution
    assert sampled[-1] == steps[-1]
    if resolution > 1:
        assert sampled[0] == steps[0]
        positions = [steps.index(s) for s in sampled]
        gaps = {b - a for a, b in itertools.pairwise(positions)}
        assert max(gaps) - min(gaps) <= 1  # uniform
    evals = eval_entries(everything)
    assert eval_entries(got) == evals
    kept = set(sampled)
    assert got == [e for e in everything if e.get("train/global_step") in kept or e in evals]
    assert world.metrics(job_id, MetricsQuery(resolution=len(steps) + 5)) == everything


def test_only_what_has_been_logged_is_visible() -> None:
    world, clock = world_of()
    job_id = next(j for j in world.job_ids() if world.plan(j).index == 0)
    before = world.logged(job_id)
    assert all(t <= round(clock.now() * 1e9) for _, t, _ in before)
    clock.advance(300)
    after = world.logged(job_id)
    assert after[: len(before)] == before
    assert len(after) > len(before)
