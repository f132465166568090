"""Caps on models and metric names keep a runaway account from flooding Prometheus."""

from __future__ import annotations

import pytest

from tests.stack import simulated_stack

pytestmark = pytest.mark.integration


async def test_models_and_metric_names_are_capped_and_counted() -> None:
    async with simulated_stack(
        models=12, limits_max_models="5", limits_max_metrics_per_model="2"
    ) as stack:
        await stack.exporter.run_cycle()
        kept = [m.id for m in stack.exporter.snapshot.runs]
        assert len(kept) == 5
        newest_five = stack.world.model_ids()[-5:]  # listed oldest first
        assert sorted(kept) == sorted(newest_five)
        for model in stack.exporter.snapshot.runs:
            if model.newest_step is not None:
                assert len(model.newest_step.metrics) == 2
        samples = await stack.samples()
        assert (
            samples[
                ("finetune_dropped_total", frozenset({("provider", "cohere"), ("kind", "runs")}))
            ]
            == 7
        )
        cut = samples[
            (
                "finetune_dropped_total",
                frozenset({("provider", "cohere"), ("kind", "metric_names")}),
            )
        ]
        assert cut > 0
