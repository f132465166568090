"""Scenarios on the Together AI world: the same file format, read as training steps."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest

from exporter.simulator import (
    PROVIDERS,
    Scenario,
    ScriptedModel,
    ScriptedSpike,
    SimClock,
    build_app,
    load_scenario,
    new_world,
)
from exporter.simulator.cohere import CohereWorld
from exporter.simulator.scenario import SCRIPTED_NOISE
from exporter.simulator.together import TogetherWorld
from exporter.simulator.together.metrics import MetricsQuery

START = 1_780_000_000.0
MS = 0.001


def world_of(*models: ScriptedModel, seed: int = 1) -> tuple[TogetherWorld, SimClock]:
    clock = SimClock(start_unix=START, frozen=True)
    return TogetherWorld(clock=clock, seed=seed, scenario=Scenario(models=models)), clock


def run_of(model: ScriptedModel) -> list[dict[str, Any]]:
    """Every metrics entry of ``model`` over its whole run, in a world of its own."""
    world, clock = world_of(model)
    clock.advance(model.queue_seconds + model.total_steps * model.step_seconds + 1)
    (job_id,) = world.job_ids()
    return world.metrics(job_id)


def by_step(entries: list[dict[str, Any]], key: str) -> dict[int, Any]:
    """``key`` of the training entries (or, for eval keys, of the eval entries) by step."""
    found: dict[int, Any] = {}
    step = 0
    for entry in entries:
        step = entry.get("train/global_step", step)
        if key in entry:
            found[step] = entry[key]
    return found


def test_providers_and_dispatch() -> None:
    assert PROVIDERS == ("cohere", "together")
    clock = SimClock(start_unix=START, frozen=True)
    cohere = new_world("cohere", runs=3, seed=2, clock=clock)
    together = new_world("together", runs=3, seed=2, clock=clock, api_key="k")
    assert isinstance(cohere, CohereWorld)
    assert isinstance(together, TogetherWorld)
    assert len(together.job_ids()) == 3
    assert together.api_key == "k"
    together_paths = {r.canonical for r in build_app(together).router.resources()}
    cohere_paths = {r.canonical for r in build_app(cohere).router.resources()}
    assert "/v1/fine-tunes/{id}/metrics" in together_paths
    assert "/v1/finetuning/finetuned-models" in cohere_paths
    assert "/simulator/truth" in together_paths & cohere_paths
    with pytest.raises(ValueError, match="unknown provider"):
        new_world("openai", runs=1, seed=1, clock=clock)


def test_scripted_timeline_is_exact() -> None:
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

    def at(offset: float) -> str:
        clock.advance(START + offset - clock.now())
        (job_id,) = world.job_ids()
        return world.status(job_id)

    assert world.job_ids() == []
    assert at(10.0) == "queued"  # a scripted job is never pending
    assert at(15.0 - MS) == "queued"
    assert at(15.0 + MS) == "running"
    assert at(95.0 - MS) == "running"
    assert at(95.0 + MS) == "compressing"
    assert at(110.0 + MS) == "uploading"
    assert at(125.0 + MS) == "completed"
    (job_id,) = world.job_ids()
    logged = world.logged(job_id)
    trains = [(s, t) for s, t, e in logged if "train/global_step" in e]
    assert [s for s, _ in trains] == list(range(1, 41))
    for step, at_ns in trains:
        assert at_ns == round((START + 15.0 + 2.0 * step) * 1e9)
    evals = [s for s, _, e in logged if "eval/loss" in e]
    assert evals == [8, 16, 24, 32, 40]  # an eval entry every eval_every steps


def test_each_step_appears_exactly_on_time() -> None:
    world, clock = world_of(ScriptedModel(name="m", eval_every=8, step_seconds=1.0))
    (job_id,) = world.job_ids()
    clock.advance(5.0 + 96 - MS)
    assert max(by_step(world.metrics(job_id), "train/global_step")) == 95
    clock.advance(2 * MS)
    assert max(by_step(world.metrics(job_id), "train/global_step")) == 96


def test_failure_at_the_scripted_step() -> None:
    world, clock = world_of(
        ScriptedModel(name="f", step_seconds=2.0, total_steps=80, fail_at_step=20)
    )
    (job_id,) = world.job_ids()
    clock.advance(5.0 + 40.0 - MS)
    assert world.status(job_id) == "running"
    clock.advance(2 * MS)
    assert world.status(job_id) == "error"
    clock.advance(10_000)
    assert world.status(job_id) == "error"
    assert max(by_step(world.metrics(job_id), "train/global_step")) == 19
    assert world.events(job_id)[-1]["type"] == "job_error"


@pytest.mark.parametrize(("step", "factor", "evaluations"), [(96, 5.0, 4), (8, 3.0, 1)])
def test_spikes_multiply_train_and_eval_loss_exactly(
    step: int, factor: float, evaluations: int
) -> None:
    spike = ScriptedSpike(step=step, factor=factor, evaluations=evaluations)
    spiky = ScriptedModel(name="spiky", seed=3, spikes=(spike,), extra_metrics=("loss",))
    spiked, plain = run_of(spiky), run_of(spiky.model_copy(update={"spikes": ()}))
    end = step + (evaluations - 1) * 8
    for key in ("train/loss", "loss", "eval/loss"):
        a, b = by_step(spiked, key), by_step(plain, key)
        assert a.keys() == b.keys()
        for number in a:
            ratio = a[number] / b[number]
            if step <= number <= end:
                assert ratio == pytest.approx(factor, rel=1e-9), (key, number)
            else:
                assert ratio == 1.0, (key, number)
    grads_a, grads_b = by_step(spiked, "train/grad_norm"), by_step(plain, "train/grad_norm")
    assert grads_a == grads_b


def test_healthy_scripted_job_has_mild_noise_only() -> None:
    entries = run_of(ScriptedModel(name="healthy", seed=2))
    losses = list(by_step(entries, "train/loss").values())
    assert len(losses) == 400
    bound = (1 + SCRIPTED_NOISE) / (1 - SCRIPTED_NOISE)
    assert all(b <= a * bound for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0] / 2


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_replaces_train_loss_in_the_jobs_form(value: str) -> None:
    model = ScriptedModel(name="nan-run", non_finite=((64, value),))
    world, clock = world_of(model)
    clock.advance(1_000)
    (job_id,) = world.job_ids()
    entries = world.metrics(job_id)
    at = next(e for e in entries if e.get("train/global_step") == 64)
    if world.quirks(job_id).nan_form == "string":
        assert at["train/loss"] == value
    else:
        assert "train/loss" not in at
    others = by_step(entries, "train/loss")
    assert all(math.isfinite(v) for n, v in others.items() if n != 64)
    assert max(others) == 400  # training carries on


def test_bundled_scenario_on_together() -> None:
    clock = SimClock(start_unix=START, frozen=True)
    world = TogetherWorld(clock=clock, scenario=load_scenario("spike-and-healthy"))
    names = {world.plan(j).suffix: j for j in world.job_ids()}
    assert set(names) == {"spiky-run", "healthy-run", "finished-run", "nan-run"}
    assert world.status(names["finished-run"]) == "completed"
    assert world.status(names["spiky-run"]) == "queued"
    clock.advance(5 + 130)
    spiky = by_step(world.metrics(names["spiky-run"]), "train/loss")
    baseline = (spiky[80] + spiky[88]) / 2
    assert all(spiky[s] > 3 * baseline for s in range(96, 121))
    assert spiky[121] < 1.2 * baseline


def test_fifty_thousand_steps_are_built_once_and_served_fast() -> None:
    model = ScriptedModel(
        name="long", total_steps=50_000, step_seconds=0.5, eval_every=500, starts_at=-30_000
    )
    world, _ = world_of(model)
    (job_id,) = world.job_ids()
    assert world.status(job_id) == "completed"
    body = world.metrics_body(job_id)  # builds the log once
    assert body.count(b'"train/global_step"') == 50_000
    assert body.count(b'"eval/loss"') == 100
    log = world._logs[world.plan(job_id).index]
    began = time.perf_counter()
    for i in range(200):
        tail = world.metrics_body(job_id, MetricsQuery(step_from=49_000 + i))
        assert tail.startswith(b'{"metrics":[')
    assert time.perf_counter() - began < 2.0  # a rebuild would take about a second each time
    assert world._logs[world.plan(job_id).index] is log
