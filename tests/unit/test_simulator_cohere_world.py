"""The simulated account: deterministic, lifecycle-consistent and lazy."""

from __future__ import annotations

import itertools
import math
import random
import time
import uuid

import pytest

from exporter.simulator import SimClock
from exporter.simulator.cohere import CohereWorld

START = 1_700_000_000.0
# Longer than any run: 30 s queue + 400 steps x 2.2 s + 61 s deploy, plus the staggering.
FINISHED = 20_000.0


def frozen_clock() -> SimClock:
    return SimClock(start_unix=START, frozen=True)


def test_clock_frozen_and_advance() -> None:
    clock = SimClock(start_unix=START, frozen=True)
    assert clock.now() == START
    clock.advance(12.5)
    assert clock.now() == START + 12.5
    with pytest.raises(ValueError, match="cannot move"):
        clock.advance(-1)


def test_clock_speed_runs_and_freeze_stops() -> None:
    clock = SimClock(speed=1000.0, start_unix=START)
    first = clock.now()
    deadline = time.monotonic() + 5
    while clock.now() == first and time.monotonic() < deadline:
        pass
    assert clock.now() > first
    clock.freeze()
    frozen_at = clock.now()
    assert clock.now() == frozen_at


def test_same_seed_same_account() -> None:
    a = CohereWorld(models=6, seed=7, clock=frozen_clock())
    b = CohereWorld(models=6, seed=7, clock=frozen_clock())
    assert a.model_ids() == b.model_ids()
    for model_id in a.model_ids():
        assert a.model(model_id) == b.model(model_id)
        assert a.steps(model_id) == b.steps(model_id)


def test_other_seed_other_account() -> None:
    a = CohereWorld(models=6, seed=7, clock=frozen_clock())
    b = CohereWorld(models=6, seed=8, clock=frozen_clock())
    assert set(a.model_ids()).isdisjoint(b.model_ids())


def test_ids_follow_the_documented_derivation() -> None:
    world = CohereWorld(models=3, seed=5, clock=frozen_clock())
    expected = {
        str(uuid.UUID(int=random.Random(f"5:{i}").getrandbits(128), version=4)) for i in range(3)
    }
    assert set(world.model_ids()) == expected


def test_model_ids_in_created_at_order() -> None:
    world = CohereWorld(models=12, clock=frozen_clock())
    created = [world.model(m)["created_at"] for m in world.model_ids()]
    assert created == sorted(created)


def test_account_is_staggered_at_start() -> None:
    world = CohereWorld(models=5, clock=frozen_clock())
    first = str(uuid.UUID(int=random.Random("1:0").getrandbits(128), version=4))
    assert world.status(first) == "STATUS_FINETUNING"
    assert len(world.steps(first)) >= 3
    statuses = {world.status(m) for m in world.model_ids()}
    assert {"STATUS_FINETUNING", "STATUS_READY", "STATUS_QUEUED"} <= statuses


def test_lifecycle_moves_forward_in_order() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=1, clock=clock)
    model_id = world.add_model()
    order = ["STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_DEPLOYING_API", "STATUS_READY"]
    seen: list[str] = []
    for _ in range(2000):
        status = world.status(model_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        clock.advance(1.0)
    assert seen in (order, [*order[:2], "STATUS_FAILED"])
    model = world.model(model_id)
    assert model["created_at"] <= model["updated_at"] <= clock.now()
    assert model["completed_at"] > model["created_at"]


def test_completed_at_only_when_finished() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=20, clock=clock)
    for model_id in world.model_ids():
        model = world.model(model_id)
        finished = model["status"] in ("STATUS_READY", "STATUS_FAILED")
        assert bool(model["completed_at"]) == finished


def test_events_match_status_and_system_events_have_no_user() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=10, clock=clock)
    clock.advance(FINISHED)
    for model_id in world.model_ids():
        events = world.events(model_id)
        assert events[-1]["status"] == world.status(model_id)
        times = [e["created_at"] for e in events]
        assert times == sorted(times)
        for event in events:
            system = event["status"] in ("STATUS_READY", "STATUS_FAILED")
            assert (event["user_id"] == "") == system


def test_steps_ascending_visible_and_evaluated_regularly() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=8, clock=clock)
    for model_id in world.model_ids():
        steps = world.steps(model_id)
        assert all(s.created_at <= clock.now() for s in steps)
        numbers = [s.step_number for s in steps]
        assert numbers == sorted(set(numbers))
        if steps:
            assert numbers[0] == 0
            gaps = {b - a for a, b in itertools.pairwise(numbers)}
            assert gaps <= {8, 16}
            assert [s.created_at for s in steps] == sorted({s.created_at for s in steps})
            assert world.newest_step(model_id) == steps[-1]
            assert all(s.metrics["step"] == float(s.step_number) for s in steps)


def test_steps_appear_as_time_passes() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=1, clock=clock)
    model_id = world.model_ids()[0]
    before = len(world.steps(model_id))
    clock.advance(120)
    assert len(world.steps(model_id)) > before


def test_training_curve_improves() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=6, clock=clock)
    clock.advance(FINISHED)
    for model_id in world.model_ids():
        steps = world.steps(model_id)
        first, last = steps[0].metrics, steps[-1].metrics
        if world.status(model_id) == "STATUS_READY":
            assert 3.0 < first["cross_entropy"] < 5.0
            assert last["cross_entropy"] < 1.0
            assert last["accuracy"] > first["accuracy"] + 0.2


def test_spikes_and_exactly_one_nan_over_a_finished_run() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=40, clock=clock)
    clock.advance(FINISHED)
    nan_models = []
    spikes = evaluations = 0
    for model_id in world.model_ids():
        ce = [s.metrics["cross_entropy"] for s in world.steps(model_id)]
        evaluations += len(ce)
        if any(math.isnan(v) for v in ce):
            nan_models.append(model_id)
        finite = [v for v in ce if not math.isnan(v)]
        spikes += sum(1 for a, b in itertools.pairwise(finite) if b > 1.8 * a)
    assert len(nan_models) == 1
    assert 1 <= spikes <= evaluations * 0.1


def test_no_nan_model_in_tiny_accounts() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=2, clock=clock)
    clock.advance(FINISHED)
    for model_id in world.model_ids():
        assert not any(math.isnan(s.metrics["cross_entropy"]) for s in world.steps(model_id))


def test_delete_and_add_model() -> None:
    clock = frozen_clock()
    world = CohereWorld(models=3, clock=clock)
    victim = world.model_ids()[1]
    world.delete(victim)
    assert victim not in world.model_ids()
    with pytest.raises(KeyError):
        world.model(victim)
    new = world.add_model()
    assert world.model_ids()[-1] == new
    assert world.status(new) == "STATUS_QUEUED"
    assert world.model(new)["created_at"] == clock.now()
    assert world.steps(new) == []
    assert world.newest_step(new) is None


def test_unknown_model_raises_key_error() -> None:
    world = CohereWorld(models=2, clock=frozen_clock())
    with pytest.raises(KeyError):
        world.steps("00000000-0000-4000-8000-000000000000")


def test_ten_thousand_models_construct_lazily() -> None:
    began = time.perf_counter()
    world = CohereWorld(models=10_000, clock=frozen_clock())
    assert time.perf_counter() - began < 0.2
    assert world._plans == {}
    assert world._steps == {}
    first = world.model_ids()[0]
    world.steps(first)
    assert len(world._steps) == 1
