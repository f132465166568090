"""The history backfill: strict OpenMetrics with the live exporter's names, every page walked."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample, Timestamp
from pydantic import SecretStr

from exporter.backfill import BackfillResult, backfill
from exporter.contract import step_family_name
from exporter.core.discovery import Discovery
from exporter.core.sharding import EVERY_RUN, Shard
from exporter.providers.cohere.client import CohereClient
from exporter.providers.cohere.models import (
    FinetunedModel,
    ListFinetunedModelsResponse,
    ListTrainingStepMetricsResponse,
    TrainingStepMetrics,
)
from exporter.providers.cohere.provider import CohereProvider
from exporter.simulator import SimClock, build_app
from exporter.simulator.cohere import CohereWorld
from exporter.simulator.cohere.encoding import timestamp
from exporter.upstream.budget import RequestBudget
from exporter.upstream.client import JsonClient, RetryPolicy
from exporter.upstream.errors import ApiResponseError, ApiStatusError
from tests.stack import API_KEY, StepOrder, serve_app

T0 = 1_700_000_000.0
ALPHA = "model-alpha"
BETA = "model-beta"
TRICKY_NAME = 'say "hi"\nback\\slash'


def model(model_id: str, name: str, base: str = "command-r-08-2024") -> FinetunedModel:
    return FinetunedModel.model_validate(
        {
            "id": model_id,
            "name": name,
            "status": "STATUS_READY",
            "settings": {
                "base_model": {
                    "name": base,
                    "version": "1.0",
                    "base_type": "BASE_TYPE_CHAT",
                    "strategy": "STRATEGY_TFEW",
                }
            },
        }
    )


def step(number: int, when: float | None, /, **metrics: Any) -> TrainingStepMetrics:
    data: dict[str, Any] = {"step_number": number, "metrics": metrics}
    if when is not None:
        data["created_at"] = timestamp(when)
    return TrainingStepMetrics.model_validate(data)


class FakeClient:
    """Serves fixed pages; ``pages[model_id][token]`` is (steps, next token)."""

    def __init__(
        self,
        models: Sequence[FinetunedModel],
        pages: Mapping[str, Mapping[str, tuple[list[TrainingStepMetrics], str]]],
        *,
        model_page_size: int = 1,
    ) -> None:
        self.models = list(models)
        self.pages = pages
        self.model_page_size = model_page_size
        self.step_calls: list[tuple[str, str]] = []
        self.get_calls: list[str] = []

    async def list_models(
        self, *, page_size: int = 50, page_token: str = ""
    ) -> ListFinetunedModelsResponse:
        start = int(page_token or "0")
        end = start + self.model_page_size
        token = str(end) if end < len(self.models) else ""
        return ListFinetunedModelsResponse(
            finetuned_models=self.models[start:end], next_page_token=token
        )

    async def get_model(self, model_id: str) -> FinetunedModel:
        self.get_calls.append(model_id)
        for candidate in self.models:
            if candidate.id == model_id:
                return candidate
        raise ApiStatusError("get_model", 404, "not found")

    async def list_step_metrics(
        self, model_id: str, *, page_size: int = 50, page_token: str = ""
    ) -> ListTrainingStepMetricsResponse:
        self.step_calls.append((model_id, page_token))
        steps, token = self.pages[model_id][page_token]
        return ListTrainingStepMetricsResponse(step_metrics=steps, next_page_token=token)

    # The real paging, run over the fixed pages above.
    model_pages = CohereClient.model_pages
    all_step_metrics = CohereClient.all_step_metrics

    def provider(self, page_size: int = 50) -> CohereProvider:
        return CohereProvider(cast(CohereClient, self), page_size=page_size)


def hand_built() -> FakeClient:
    """Two models, steps out of order across pages, a NaN, +Inf, a tricky name and metric."""
    alpha_pages = {
        "": (
            [
                step(16, T0 + 32.5, cross_entropy=0.9, accuracy=0.7, **{"eval/loss-x": 1.5}),
                step(0, T0 + 0.123, cross_entropy=4.0, accuracy=0.4, step=0.0),
            ],
            "a2",
        ),
        "a2": (
            [
                step(8, T0 + 16.25, cross_entropy=math.nan, accuracy=0.5),
                step(24, None, cross_entropy=0.5, accuracy=0.8),  # no created_at: left out
            ],
            "",
        ),
    }
    beta_pages = {
        "": ([step(8, T0 + 100.001, cross_entropy=math.inf, number=3.0)], "b2"),
        "b2": ([step(0, T0 + 90.0, cross_entropy=2.0, number=2.0)], ""),
    }
    return FakeClient(
        [model(BETA, "beta"), model(ALPHA, TRICKY_NAME)],
        {ALPHA: alpha_pages, BETA: beta_pages},
    )


async def run_backfill(
    provider: CohereProvider,
    out: io.StringIO,
    *,
    model_ids: Sequence[str] = (),
    shard: Shard = EVERY_RUN,
    max_metrics_per_model: int = 100,
    **kwargs: Any,
) -> BackfillResult:
    discovery = Discovery(
        provider, run_ids=tuple(dict.fromkeys(model_ids)), max_runs=5000, shard=shard, concurrency=1
    )
    return await backfill(
        [(provider, discovery)], out, max_metrics_per_model=max_metrics_per_model, **kwargs
    )


async def render(fake: FakeClient, **kwargs: Any) -> tuple[str, BackfillResult]:
    out = io.StringIO()
    result = await run_backfill(fake.provider(), out, **kwargs)
    return out.getvalue(), result


def parse(text: str) -> dict[str, list[Sample]]:
    """Strict OpenMetrics parsing (grouping, EOF, escapes); family name → samples."""
    families = text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    return {f.name: list(f.samples) for f in families}


def ms(value: Timestamp | float | None) -> int:
    assert isinstance(value, Timestamp), value
    return value.sec * 1000 + value.nsec // 1_000_000


def series(samples: list[Sample], model_id: str) -> list[tuple[int, float]]:
    return [(ms(s.timestamp), s.value) for s in samples if s.labels["finetune_id"] == model_id]


def at(unix: float) -> int:
    return round(unix * 1000)


async def test_renders_strict_openmetrics_with_the_live_names() -> None:
    text, result = await render(hand_built())
    families = parse(text)
    assert text.endswith("\n# EOF\n")
    assert set(families) == {
        "finetune_run",
        "finetune_step_number",
        "finetune_step_timestamp_seconds",
        "finetune_step_cross_entropy",
        "finetune_step_accuracy",
        "finetune_step_eval_loss_x",
        "finetune_step_number_value",  # Cohere's "number", kept apart from the step number
    }
    assert step_family_name("eval/loss-x") == "finetune_step_eval_loss_x"
    assert "finetune_step_step" not in families
    assert result == BackfillResult(models=2, steps=5, samples=5 * 4 + 3 + 1 + 2, skipped=1)


async def test_steps_are_sorted_and_placed_at_their_timestamps() -> None:
    families = parse((await render(hand_built()))[0])
    numbers = families["finetune_step_number"]
    assert series(numbers, ALPHA) == [(at(T0 + 0.123), 0), (at(T0 + 16.25), 8), (at(T0 + 32.5), 16)]
    assert series(numbers, BETA) == [(at(T0 + 90.0), 0), (at(T0 + 100.001), 8)]
    losses = families["finetune_step_cross_entropy"]
    alpha = series(losses, ALPHA)
    assert [t for t, _ in alpha] == [at(T0 + 0.123), at(T0 + 16.25), at(T0 + 32.5)]
    assert alpha[0][1] == 4.0
    assert math.isnan(alpha[1][1])
    assert alpha[2][1] == 0.9
    assert series(losses, BETA) == [(at(T0 + 90.0), 2.0), (at(T0 + 100.001), math.inf)]
    assert series(families["finetune_step_eval_loss_x"], ALPHA) == [(at(T0 + 32.5), 1.5)]
    assert series(families["finetune_step_timestamp_seconds"], BETA) == [
        (at(T0 + 90.0), T0 + 90.0),
        (at(T0 + 100.001), pytest.approx(T0 + 100.001, abs=1e-6)),
    ]


async def test_info_is_emitted_at_every_step_with_escaped_labels() -> None:
    text, _ = await render(hand_built())
    info = parse(text)["finetune_run"]
    assert all(s.name == "finetune_run_info" and s.value == 1 for s in info)
    alpha = [s for s in info if s.labels["finetune_id"] == ALPHA]
    assert [ms(s.timestamp) for s in alpha] == [at(T0 + 0.123), at(T0 + 16.25), at(T0 + 32.5)]
    assert alpha[0].labels == {
        "provider": "cohere",
        "finetune_id": ALPHA,
        "name": TRICKY_NAME,
        "base_model": "command-r-08-2024",
        "base_model_version": "1.0",
        "base_type": "BASE_TYPE_CHAT",
        "strategy": "STRATEGY_TFEW",
    }
    assert 'name="say \\"hi\\"\\nback\\\\slash"' in text
    assert "# TYPE finetune_run info\n" in text


async def test_layout_metadata_once_samples_contiguous_timestamps_rising() -> None:
    text, _ = await render(hand_built())
    lines = text.splitlines()
    assert lines[-1] == "# EOF"
    assert text.count("# EOF") == 1
    assert "NaN" in text
    assert "+Inf" in text
    helps = [line.split()[2] for line in lines if line.startswith("# HELP")]
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(helps) == len(set(helps)) == len(types)
    finished: set[str] = set()
    current = ""
    last: dict[str, float] = {}
    for line in lines[:-1]:
        if line.startswith("# TYPE"):
            finished.add(current)
            current = line.split()[2]
            assert current not in finished
            continue
        if line.startswith("#"):
            continue
        name_and_labels, _value, stamp = line.rsplit(" ", 2)
        assert name_and_labels.startswith(current)
        assert float(stamp) > last.get(name_and_labels, -math.inf)
        last[name_and_labels] = float(stamp)
        assert len(stamp.split(".")[1]) == 3  # milliseconds, written exactly


async def test_nothing_later_than_the_steps() -> None:
    text, _ = await render(hand_built())
    stamps = [ms(s.timestamp) for samples in parse(text).values() for s in samples]
    assert max(stamps) == at(T0 + 100.001)
    assert min(stamps) == at(T0 + 0.123)


async def test_walks_every_page_and_reports_progress() -> None:
    fake = hand_built()
    seen: list[tuple[int, int, str]] = []
    await render(fake, progress=lambda done, total, name: seen.append((done, total, name)))
    assert sorted(fake.step_calls) == [(ALPHA, ""), (ALPHA, "a2"), (BETA, ""), (BETA, "b2")]
    assert seen == [(1, 2, TRICKY_NAME), (2, 2, "beta")]


async def test_configured_ids_are_fetched_and_sharded() -> None:
    fake = hand_built()
    shard = Shard(index=0, count=2)
    ids = [m for m in (ALPHA, BETA) if shard.owns(m)]
    text, result = await render(fake, model_ids=[ALPHA, BETA, ALPHA], shard=shard)
    assert fake.get_calls == ids
    assert result.models == len(ids)
    numbers = parse(text).get("finetune_step_number", [])
    assert {s.labels["finetune_id"] for s in numbers} == set(ids)


async def test_a_missing_configured_model_fails_before_writing() -> None:
    out = io.StringIO()
    with pytest.raises(ApiStatusError):
        await run_backfill(hand_built().provider(), out, model_ids=["nope"])
    assert out.getvalue() == ""


async def test_a_repeating_step_token_is_an_error() -> None:
    fake = FakeClient(
        [model(ALPHA, "a")],
        {ALPHA: {"": ([step(0, T0)], "t1"), "t1": ([step(1, T0 + 1)], "t1")}},
    )
    with pytest.raises(ApiResponseError, match="next_page_token repeats"):
        await render(fake)


async def test_a_repeating_model_token_is_an_error() -> None:
    class Looping(FakeClient):
        async def list_models(
            self, *, page_size: int = 50, page_token: str = ""
        ) -> ListFinetunedModelsResponse:
            return ListFinetunedModelsResponse(finetuned_models=self.models, next_page_token="x")

    with pytest.raises(ApiResponseError, match="next_page_token repeats"):
        await render(Looping([model(ALPHA, "a")], {}))


async def test_a_sanitisation_clash_goes_to_the_first_sorted_name() -> None:
    assert step_family_name("a-b") == step_family_name("a.b") == "finetune_step_a_b"
    fake = FakeClient(
        [model(ALPHA, "a")],
        {
            ALPHA: {
                "": ([step(0, T0, **{"a.b": 2.0, "a-b": 1.0}), step(1, T0 + 1, **{"a.b": 3.0})], "")
            }
        },
    )
    text = (await render(fake))[0]
    assert series(parse(text)["finetune_step_a_b"], ALPHA) == [(at(T0), 1.0)]


async def test_max_metrics_per_model_keeps_the_first_names() -> None:
    fake = FakeClient(
        [model(ALPHA, "a")],
        {ALPHA: {"": ([step(0, T0, alpha=1.0, beta=2.0, gamma=3.0)], "")}},
    )
    families = parse((await render(fake, max_metrics_per_model=2))[0])
    assert "finetune_step_alpha" in families
    assert "finetune_step_beta" in families
    assert "finetune_step_gamma" not in families


async def test_no_steps_gives_an_empty_but_valid_file() -> None:
    text, result = await render(FakeClient([model(ALPHA, "a")], {ALPHA: {"": ([], "")}}))
    assert text == "# EOF\n"
    assert parse(text) == {}
    assert result == BackfillResult(models=0, steps=0, samples=0)


# --------------------------------------------------------------------------- simulator


@pytest.mark.parametrize("step_order", ["newest-first", "oldest-first"])
async def test_against_the_simulator_every_step_in_both_orders(step_order: StepOrder) -> None:
    world = CohereWorld(
        models=6, seed=7, clock=SimClock(frozen=True), step_order=step_order, api_key=API_KEY
    )
    async with serve_app(build_app(world)) as sim, aiohttp.ClientSession() as session:
        http = JsonClient(
            session,
            base_url=sim.url,
            api_key=SecretStr(API_KEY),
            timeout=10.0,
            budget=RequestBudget(10_000),
            retry=RetryPolicy(max_retries=0),
        )
        out = io.StringIO()
        result = await run_backfill(CohereProvider(CohereClient(http), page_size=3), out)
    families = parse(out.getvalue())
    ids = world.model_ids()
    with_steps = [i for i in ids if world.steps(i)]
    assert len(with_steps) >= 3
    assert result.models == len(with_steps)
    assert result.steps == sum(len(world.steps(i)) for i in ids)
    assert result.skipped == 0
    assert world.request_counts["list_step_metrics"] > 2 * len(with_steps)  # several pages each
    numbers = families["finetune_step_number"]
    losses = families["finetune_step_cross_entropy"]
    names = {s.labels["finetune_id"]: s.labels["name"] for s in families["finetune_run"]}
    for model_id in with_steps:
        expected = world.steps(model_id)
        assert series(numbers, model_id) == [(at(s.created_at), s.step_number) for s in expected]
        got = series(losses, model_id)
        assert [t for t, _ in got] == [at(s.created_at) for s in expected]
        for (_, value), sim_step in zip(got, expected, strict=True):
            want = sim_step.metrics["cross_entropy"]
            assert value == want or (math.isnan(value) and math.isnan(want))
        assert names[model_id] == world.model(model_id)["name"]
    assert any(math.isnan(s.value) for s in losses)  # the simulator's NaN step survives
