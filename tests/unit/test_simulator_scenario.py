"""Scripted scenarios: exact lifecycles and only the scripted anomalies.

Loading and checking scenario files: ``test_simulator_scenario_files.py``.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import random
import statistics
import uuid

import pytest

from exporter.simulator import (
    Scenario,
    ScriptedModel,
    ScriptedSpike,
    SimClock,
)
from exporter.simulator.cohere import SCRIPTED_NOISE, CohereWorld, SimStep

START = 1_700_000_000.0
MS = 0.001
EXAMPLE = pathlib.Path(__file__).parents[2] / "exporter/simulator/scenarios/spike-and-healthy.yaml"


def frozen_clock() -> SimClock:
    return SimClock(start_unix=START, frozen=True)


def world_of(*models: ScriptedModel, seed: int = 1) -> tuple[CohereWorld, SimClock]:
    clock = frozen_clock()
    return CohereWorld(clock=clock, seed=seed, scenario=Scenario(models=models)), clock


def all_steps(model: ScriptedModel) -> list[SimStep]:
    """Every evaluation of ``model`` over its whole run, in a world of its own."""
    world, clock = world_of(model)
    (model_id,) = world.model_ids()
    clock.advance(
        model.queue_seconds + model.total_steps * model.step_seconds + 1 - model.starts_at
    )
    return world.steps(model_id)


def ids_by_name(world: CohereWorld) -> dict[str, str]:
    return {world.model(m)["name"]: m for m in world.model_ids()}


# --------------------------------------------------------------------------- the account


def test_scenario_world_holds_exactly_the_scripted_models() -> None:
    scenario = Scenario(models=tuple(ScriptedModel(name=f"m{i}") for i in range(4)))
    world = CohereWorld(models=50, seed=5, clock=frozen_clock(), scenario=scenario)
    expected = [
        str(uuid.UUID(int=random.Random(f"5:{i}").getrandbits(128), version=4)) for i in range(4)
    ]
    assert world.model_ids() == expected  # same starts_at: in the order given
    assert [world.model(m)["name"] for m in expected] == ["m0", "m1", "m2", "m3"]
    again = CohereWorld(seed=5, clock=frozen_clock(), scenario=scenario)
    for model_id in expected:
        assert world.model(model_id) == again.model(model_id)


def test_models_created_later_are_absent_until_then() -> None:
    world, clock = world_of(ScriptedModel(name="now"), ScriptedModel(name="later", starts_at=60))
    assert [world.model(m)["name"] for m in world.model_ids()] == ["now"]
    later = str(uuid.UUID(int=random.Random("1:1").getrandbits(128), version=4))
    with pytest.raises(KeyError):
        world.model(later)
    clock.advance(60 - MS)
    assert len(world.model_ids()) == 1
    clock.advance(MS)
    assert world.model_ids()[-1] == later
    assert world.status(later) == "STATUS_QUEUED"
    assert world.model(later)["created_at"] == pytest.approx(START + 60)


def test_added_models_are_random_ones_after_the_scripted() -> None:
    world, _ = world_of(ScriptedModel(name="scripted"))
    new = world.add_model()
    assert world.model_ids() == [world.model_ids()[0], new]
    assert world.status(new) == "STATUS_QUEUED"


def test_lifecycle_timings_are_exact() -> None:
    model = ScriptedModel(
        name="timed",
        eval_every=8,
        step_seconds=2.0,
        total_steps=40,
        queue_seconds=5.0,
        deploy_seconds=30.0,
        starts_at=10.0,
    )
    world, clock = world_of(model)
    created, training, trained, ready = 10.0, 15.0, 95.0, 125.0

    def at(offset: float) -> str:
        clock.advance(START + offset - clock.now())
        (model_id,) = world.model_ids()
        return world.status(model_id)

    assert world.model_ids() == []
    assert at(created) == "STATUS_QUEUED"
    assert at(training - MS) == "STATUS_QUEUED"
    (model_id,) = world.model_ids()
    assert world.steps(model_id) == []
    assert at(training + MS) == "STATUS_FINETUNING"
    assert [s.step_number for s in world.steps(model_id)] == [0]
    assert at(trained - MS) == "STATUS_FINETUNING"
    assert at(trained + MS) == "STATUS_DEPLOYING_API"
    assert at(ready - MS) == "STATUS_DEPLOYING_API"
    assert at(ready + MS) == "STATUS_READY"
    steps = world.steps(model_id)
    assert [s.step_number for s in steps] == [0, 8, 16, 24, 32, 40]
    for step in steps:
        assert step.created_at == pytest.approx(START + training + step.step_number * 2.0)
    events = world.events(model_id)
    assert [(e["status"], e["created_at"] - START) for e in events] == [
        ("STATUS_QUEUED", pytest.approx(created)),
        ("STATUS_FINETUNING", pytest.approx(training)),
        ("STATUS_DEPLOYING_API", pytest.approx(trained)),
        ("STATUS_READY", pytest.approx(ready)),
    ]
    assert world.model(model_id)["completed_at"] == pytest.approx(START + trained)


def test_each_step_appears_exactly_on_time() -> None:
    world, clock = world_of(ScriptedModel(name="m", eval_every=8, step_seconds=1.0))
    (model_id,) = world.model_ids()
    clock.advance(5.0 + 96 - MS)
    assert world.newest_step(model_id).step_number == 88  # type: ignore[union-attr]
    clock.advance(2 * MS)
    assert world.newest_step(model_id).step_number == 96  # type: ignore[union-attr]


def test_failure_at_the_scripted_step() -> None:
    model = ScriptedModel(name="f", step_seconds=2.0, total_steps=80, fail_at_step=20)
    world, clock = world_of(model)
    (model_id,) = world.model_ids()
    failed = 5.0 + 20 * 2.0
    clock.advance(failed - MS)
    assert world.status(model_id) == "STATUS_FINETUNING"
    clock.advance(2 * MS)
    assert world.status(model_id) == "STATUS_FAILED"
    clock.advance(10_000)
    assert world.status(model_id) == "STATUS_FAILED"
    assert [s.step_number for s in world.steps(model_id)] == [0, 8, 16]
    assert [e["status"] for e in world.events(model_id)][-1] == "STATUS_FAILED"
    assert world.model(model_id)["completed_at"] == pytest.approx(START + failed)


def test_started_earlier_means_mid_training_or_finished_at_start() -> None:
    world, _ = world_of(
        ScriptedModel(name="mid", step_seconds=1.0, starts_at=-105.0),
        ScriptedModel(name="done", starts_at=-2000.0),
    )
    ids = ids_by_name(world)
    assert world.status(ids["mid"]) == "STATUS_FINETUNING"
    assert world.newest_step(ids["mid"]).step_number == 96  # type: ignore[union-attr]
    assert world.status(ids["done"]) == "STATUS_READY"
    assert len(world.steps(ids["done"])) == 51


# --------------------------------------------------------------------------- values


def ce(steps: list[SimStep], metric: str = "cross_entropy") -> list[float]:
    return [s.metrics[metric] for s in steps]


@pytest.mark.parametrize("seed", range(20))
def test_healthy_model_never_spikes(seed: int) -> None:
    steps = all_steps(ScriptedModel(name="healthy-run", seed=seed, extra_metrics=("loss",)))
    assert len(steps) == 51
    for metric in ("cross_entropy", "generation_cross_entropy", "loss"):
        values = ce(steps, metric)
        assert all(math.isfinite(v) for v in values)
        for i in range(1, len(values)):
            median = statistics.median(values[max(0, i - 10) : i])
            assert values[i] < 2 * median, (metric, i)
        # falling: each value within the noise band of the previous one or below it
        bound = (1 + SCRIPTED_NOISE) / (1 - SCRIPTED_NOISE)
        assert all(b <= a * bound for a, b in itertools.pairwise(values))
    assert ce(steps)[-1] < 1.0 < 3.0 < ce(steps)[0]
    accuracy = ce(steps, "accuracy")
    assert accuracy[-1] > accuracy[0] + 0.2
    assert all(0.0 <= v <= 1.0 for v in accuracy)


@pytest.mark.parametrize(
    ("step", "factor", "evaluations"), [(96, 5.0, 4), (8, 3.0, 1), (392, 10.0, 2)]
)
def test_spike_exactly_where_scripted(step: int, factor: float, evaluations: int) -> None:
    spiky = ScriptedModel(
        name="spiky-run",
        seed=3,
        spikes=(ScriptedSpike(step=step, factor=factor, evaluations=evaluations),),
        extra_metrics=("loss",),
    )
    spiked, plain = all_steps(spiky), all_steps(spiky.model_copy(update={"spikes": ()}))
    expected = set(range(step, step + evaluations * 8, 8))
    for a, b in zip(spiked, plain, strict=True):
        assert a.step_number == b.step_number
        assert a.created_at == b.created_at
        for metric in ("cross_entropy", "generation_cross_entropy", "loss"):
            ratio = a.metrics[metric] / b.metrics[metric]
            if a.step_number in expected:
                assert ratio == pytest.approx(factor, rel=1e-6)
            else:
                assert ratio == 1.0
        assert a.metrics["accuracy"] == b.metrics["accuracy"]
    # Seen the way an alert rule sees it: exactly the scripted evaluations stand out.
    values = ce(spiked)
    flagged = [
        s.step_number
        for i, s in enumerate(spiked)
        if i and values[i] >= 2 * statistics.median(values[max(0, i - 10) : i])
    ]
    assert flagged == sorted(expected)


def test_several_spikes_in_one_run() -> None:
    model = ScriptedModel(
        name="m",
        spikes=(
            ScriptedSpike(step=40, factor=4.0, evaluations=1),
            ScriptedSpike(step=200, factor=6.0, evaluations=3),
        ),
    )
    spiked, plain = all_steps(model), all_steps(model.model_copy(update={"spikes": ()}))
    ratios = {
        a.step_number: round(a.metrics["cross_entropy"] / b.metrics["cross_entropy"], 4)
        for a, b in zip(spiked, plain, strict=True)
        if a.metrics["cross_entropy"] != b.metrics["cross_entropy"]
    }
    assert ratios == {40: 4.0, 200: 6.0, 208: 6.0, 216: 6.0}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_only_at_the_scripted_step(value: str) -> None:
    model = ScriptedModel(name="nan-run", non_finite=((64, value),), extra_metrics=("loss",))
    steps, plain = all_steps(model), all_steps(model.model_copy(update={"non_finite": ()}))
    for a, b in zip(steps, plain, strict=True):
        ce_value = a.metrics["cross_entropy"]
        if a.step_number == 64:
            assert str(ce_value) == {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[value]
            assert math.isfinite(a.metrics["generation_cross_entropy"])
            assert math.isfinite(a.metrics["loss"])
        else:
            assert ce_value == b.metrics["cross_entropy"]
    assert steps[-1].step_number == 400  # training carries on


def test_no_random_anomalies_in_scripted_models() -> None:
    models = tuple(ScriptedModel(name=f"m{i}", seed=i, starts_at=-2000.0) for i in range(12))
    world, _ = world_of(*models)
    for model_id in world.model_ids():
        values = ce(world.steps(model_id))
        assert len(values) == 51
        assert all(math.isfinite(v) for v in values)
        assert all(b < 1.8 * a for a, b in itertools.pairwise(values))


def test_extra_metric_on_every_step_of_models_asking_for_it() -> None:
    world, clock = world_of(*Scenario.load(EXAMPLE).models)
    clock.advance(3000)
    for name, model_id in ids_by_name(world).items():
        steps = world.steps(model_id)
        assert steps
        has_loss = {"loss" in s.metrics for s in steps}
        assert has_loss == {name == "spiky-run"}
        for step in steps:
            assert set(step.metrics) >= {
                "accuracy",
                "cross_entropy",
                "generation_accuracy",
                "generation_cross_entropy",
                "step",
            }
            assert step.metrics["step"] == float(step.step_number)
    spiky = world.steps(ids_by_name(world)["spiky-run"])
    for step in spiky:
        loss, ce_value = step.metrics["loss"], step.metrics["cross_entropy"]
        assert abs(loss / ce_value - 1) <= 2 * SCRIPTED_NOISE + 1e-6  # tracks cross_entropy


def test_values_do_not_depend_on_the_account_seed() -> None:
    model = ScriptedModel(name="m", seed=4)
    a, _ = world_of(model, seed=1)
    b, _ = world_of(model, seed=2)
    assert a.model_ids() != b.model_ids()
    a.clock.advance(500)
    b.clock.advance(500)
    assert a.steps(a.model_ids()[0]) == b.steps(b.model_ids()[0])
