"""Every evaluated step is processed exactly once, even when several appear between two polls,
and spikes on intermediate steps are counted once; a state file carries this across restarts."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from exporter.simulator import Scenario, ScriptedModel, ScriptedSpike, SimClock
from exporter.simulator.cohere import CohereWorld
from tests.stack import API_KEY, Stack, StepOrder, model_sample, run_labels, simulated_stack

pytestmark = pytest.mark.integration
ORDERS: tuple[StepOrder, ...] = ("newest-first", "oldest-first")
# Created 100 s before the clock starts: steps 0..96 exist at start, then one evaluation every
# 4 s. Step 112 spikes for one evaluation; step 124 is NaN.
SCRIPT = Scenario(
    models=(
        ScriptedModel(
            name="jumpy",
            eval_every=4,
            step_seconds=1.0,
            total_steps=2000,
            queue_seconds=1.0,
            starts_at=-100.0,
            spikes=(ScriptedSpike(step=112, factor=6.0, evaluations=1),),
            non_finite=((124, "NaN"),),
        ),
    )
)


def counters(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], model: str
) -> tuple[float, float, float]:
    def labelled(name: str) -> float:
        key = run_labels(model, metric="cross_entropy")
        return samples[(name, key)]

    processed = model_sample(samples, "finetune_steps_processed_total", model)
    assert processed is not None
    return (
        processed,
        labelled("finetune_step_outliers_total"),
        labelled("finetune_step_nonfinite_total"),
    )


def world(order: StepOrder) -> CohereWorld:
    return CohereWorld(
        clock=SimClock(speed=1.0, frozen=True), step_order=order, api_key=API_KEY, scenario=SCRIPT
    )


@pytest.mark.parametrize("order", ORDERS)
async def test_steps_between_polls_are_each_processed_once(order: StepOrder) -> None:
    async with simulated_stack(world=world(order), poll_page_size=3) as stack:
        (model,) = stack.world.model_ids()
        await stack.exporter.run_cycle()
        assert counters(await stack.samples(), model) == (0, 0, 0)  # first poll: position only
        stack.sim_clock.advance(40)  # ten evaluations appear: 100, 104, ... 136
        stack.poll_clock.advance(60)
        await stack.exporter.run_cycle()
        samples = await stack.samples()
        assert counters(samples, model) == (10, 1, 1)
        assert model_sample(samples, "finetune_step_number", model) == 136
        for _ in range(3):  # nothing new: nothing counted again, one request per cycle
            stack.world.request_counts.clear()
            stack.poll_clock.advance(60)
            await stack.exporter.run_cycle()
            assert stack.world.request_counts["list_step_metrics"] == 1
        assert counters(await stack.samples(), model) == (10, 1, 1)


@pytest.mark.parametrize("order", ORDERS)
async def test_a_restart_with_a_state_file_neither_repeats_nor_skips(
    order: StepOrder, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    shared = world(order)
    async with simulated_stack(world=shared, poll_page_size=3, state_file=state) as first:
        (model,) = shared.model_ids()
        await first.exporter.run_cycle()
        shared.clock.advance(20)  # 100 .. 116, with the spike at 112
        await first.exporter.run_cycle()
        assert counters(await first.samples(), model) == (5, 1, 0)
    shared.clock.advance(20)  # 120 .. 136 appear while no exporter runs, NaN at 124
    async with simulated_stack(world=shared, poll_page_size=3, state_file=state) as second:
        await second.exporter.run_cycle()
        # Counting continues from the saved counts: exactly the five new steps were judged.
        assert counters(await second.samples(), model) == (10, 1, 1)
    async with simulated_stack(world=shared, poll_page_size=3) as stateless:
        await stateless.exporter.run_cycle()
        assert counters(await stateless.samples(), model) == (0, 0, 0)  # position only


async def poll_every_minute(stack: Stack, model: str, minutes: int) -> list[float]:
    """The gauge values a 60-second poll sees, cycle by cycle."""
    seen = []
    for _ in range(minutes):
        stack.sim_clock.advance(60)
        stack.poll_clock.advance(60)
        await stack.exporter.run_cycle()
        value = model_sample(await stack.samples(), "finetune_step_cross_entropy", model)
        assert value is not None
        seen.append(value)
    return seen


async def test_counters_catch_the_spikes_that_a_60_second_gauge_misses() -> None:
    """Evaluations every 20 s, polls every 60 s, twelve one-evaluation spikes."""
    spikes = tuple(ScriptedSpike(step=300 + 110 * i, factor=5.0) for i in range(12))
    script = Scenario(
        models=(
            ScriptedModel(
                name="many-spikes",
                eval_every=10,
                step_seconds=2.0,
                total_steps=2000,
                queue_seconds=1.0,
                spikes=spikes,
            ),
        )
    )
    sim = CohereWorld(clock=SimClock(speed=1.0, frozen=True), api_key=API_KEY, scenario=script)
    async with simulated_stack(world=sim) as stack:
        (model,) = sim.model_ids()
        await stack.exporter.run_cycle()
        gauge = await poll_every_minute(stack, model, minutes=70)  # past the last spike
        caught_by_gauge = sum(
            1
            for i, value in enumerate(gauge)
            if i >= 3 and value >= 2 * statistics.median(gauge[max(0, i - 10) : i])
        )
        _, caught_by_counter, _ = counters(await stack.samples(), model)
    print(
        f"\n12 one-evaluation spikes, evaluations every 20 s, polls every 60 s: "
        f"newest-step gauge caught {caught_by_gauge}, outlier counter caught "
        f"{caught_by_counter:.0f}"
    )
    assert caught_by_counter == 12
    assert caught_by_gauge < 12
