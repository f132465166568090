"""The exporter against the simulator over loopback HTTP: values, request counts, lifecycle."""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from exporter.contract import step_family_name
from exporter.exposition import PROMETHEUS_3_ACCEPT
from exporter.providers.cohere.provider import FINAL_STATUSES, PHASES
from exporter.service import Exporter, new_session
from exporter.settings import load_settings
from tests.promtool import promtool_check_metrics
from tests.stack import (
    API_KEY,
    Stack,
    StepOrder,
    model_sample,
    run_labels,
    same_value,
    simulated_stack,
)

pytestmark = pytest.mark.integration
ORDERS: tuple[StepOrder, ...] = ("newest-first", "oldest-first")
COHERE = frozenset({("provider", "cohere")})


def active_ids(stack: Stack) -> list[str]:
    return [m for m in stack.world.model_ids() if stack.world.status(m) not in FINAL_STATUSES]


async def assert_metrics_match_simulator(stack: Stack, *, statuses: bool = True) -> None:
    """/metrics holds the simulator's newest step of each model (and its status after discovery)."""
    samples = await stack.samples()
    ids = stack.world.model_ids()
    assert ids, "the simulated account has models"
    with_steps = 0
    for model_id in ids:
        truth = stack.world.newest_step(model_id)
        number = model_sample(samples, "finetune_step_number", model_id)
        if truth is None:
            assert number is None, model_id
            continue
        with_steps += 1
        assert number == truth.step_number, model_id
        stamp = model_sample(samples, "finetune_step_timestamp_seconds", model_id)
        assert stamp == pytest.approx(truth.created_at, abs=1e-6)
        for metric, value in truth.metrics.items():
            if metric == "step":
                continue
            family = step_family_name(metric)
            assert family is not None
            assert same_value(model_sample(samples, family, model_id), value), (model_id, metric)
        if statuses:
            labels = run_labels(model_id, status=stack.world.status(model_id))
            assert samples[("finetune_run_status", labels)] == 1.0
            phase = run_labels(model_id, phase=PHASES[stack.world.status(model_id)])
            assert samples[("finetune_run_phase", phase)] == 1.0
        assert model_sample(samples, "finetune_run_up", model_id) == 1.0
    assert with_steps >= 3, "several simulated models have evaluated steps"


@pytest.mark.parametrize("order", ORDERS)
async def test_values_equal_the_newest_simulated_step(order: StepOrder) -> None:
    async with simulated_stack(step_order=order, poll_page_size=4) as stack:
        await stack.exporter.run_cycle()
        await assert_metrics_match_simulator(stack)
        # Training goes on: new evaluations appear and the exporter follows them.
        stack.sim_clock.advance(400)
        await stack.exporter.run_cycle()
        await assert_metrics_match_simulator(stack, statuses=False)  # discovery not due yet
        stack.sim_clock.advance(300)
        stack.poll_clock.advance(10_000)  # discovery and final refresh both due
        await stack.exporter.run_cycle()
        await assert_metrics_match_simulator(stack)


@pytest.mark.parametrize("order", ORDERS)
async def test_one_request_per_active_model_per_cycle(order: StepOrder) -> None:
    async with simulated_stack(models=12, step_order=order, poll_page_size=50) as stack:
        world = stack.world
        await stack.exporter.run_cycle()
        assert world.request_counts["list_models"] == 1
        finals = [m for m in world.model_ids() if world.status(m) in FINAL_STATUSES]
        active = active_ids(stack)
        assert finals, "the account has finished models"
        assert active, "the account has running models"
        for _ in range(3):
            world.request_counts.clear()
            world.steps_by_run.clear()
            stack.poll_clock.advance(60)
            await stack.exporter.run_cycle()
            assert world.request_counts["list_step_metrics"] == len(active)
            assert world.request_counts["list_models"] == 0  # discovery not due yet
            assert all(world.steps_by_run[m] == 1 for m in active)
            assert all(world.steps_by_run[m] == 0 for m in finals)


async def test_oldest_first_resumes_at_the_last_page() -> None:
    """Walking every page once is unavoidable; after that a cycle re-reads only the last page."""
    async with simulated_stack(models=4, step_order="oldest-first", poll_page_size=3) as stack:
        world = stack.world
        await stack.exporter.run_cycle()
        active = active_ids(stack)
        world.request_counts.clear()
        stack.poll_clock.advance(60)
        await stack.exporter.run_cycle()
        assert world.request_counts["list_step_metrics"] == len(active)
        await assert_metrics_match_simulator(stack)


async def test_discovery_and_final_refresh_intervals() -> None:
    async with simulated_stack(
        models=10, poll_discovery_interval=300, poll_final_refresh_interval=3600
    ) as stack:
        world = stack.world
        await stack.exporter.run_cycle()
        finals = [m for m in world.model_ids() if world.status(m) in FINAL_STATUSES]
        walks = []
        for _ in range(10):  # ten one-minute cycles: two discovery walks (at 300 s and 600 s)
            world.request_counts.clear()
            stack.poll_clock.advance(60)
            await stack.exporter.run_cycle()
            walks.append(world.request_counts["list_models"])
        assert sum(walks) == 2
        world.steps_by_run.clear()
        stack.poll_clock.advance(3600)
        await stack.exporter.run_cycle()
        assert all(world.steps_by_run[m] == 1 for m in finals)


async def test_a_run_that_finishes_is_read_once_more_then_left_alone() -> None:
    async with simulated_stack(models=8, poll_discovery_interval=60) as stack:
        world = stack.world
        await stack.exporter.run_cycle()
        running = [m for m in world.model_ids() if world.status(m) == "STATUS_FINETUNING"]
        assert running
        target = running[0]
        for _ in range(200):  # move simulated time until the run is over
            if world.status(target) in FINAL_STATUSES:
                break
            stack.sim_clock.advance(120)
        assert world.status(target) in FINAL_STATUSES
        stack.poll_clock.advance(60)
        await stack.exporter.run_cycle()  # discovery sees the final status, reads once more
        await assert_metrics_match_simulator(stack)
        world.steps_by_run.clear()
        for _ in range(3):
            stack.poll_clock.advance(60)
            await stack.exporter.run_cycle()
        assert world.steps_by_run[target] == 0


async def test_a_removed_model_leaves_metrics() -> None:
    async with simulated_stack(models=6, poll_discovery_interval=120) as stack:
        await stack.exporter.run_cycle()
        gone = stack.world.model_ids()[0]
        assert gone in (await (await stack.scrape()).read()).decode()
        stack.world.delete(gone)
        stack.poll_clock.advance(120)
        await stack.exporter.run_cycle()
        body = (await (await stack.scrape()).read()).decode()
        assert gone not in body
        assert stack.world.model_ids()[0] in body


async def test_live_exposition_passes_promtool() -> None:
    async with simulated_stack(models=10) as stack:
        await stack.exporter.run_cycle()
        body = await (await stack.scrape()).read()
        assert b"finetune_step_cross_entropy" in body
        assert promtool_check_metrics(body) == ""


async def test_content_negotiation_and_gzip() -> None:
    async with simulated_stack(models=6) as stack:
        await stack.exporter.run_cycle()
        plain = await stack.scrape(**{"Accept-Encoding": "identity"})
        assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "Content-Encoding" not in plain.headers
        open_metrics = await stack.scrape(
            Accept="application/openmetrics-text; version=1.0.0", **{"Accept-Encoding": "identity"}
        )
        assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await open_metrics.read()).endswith(b"# EOF\n")
        raw = await stack.http.get(
            stack.exporter_url + "/metrics",
            headers={"Accept-Encoding": "gzip"},
            auto_decompress=False,
        )
        assert raw.headers["Content-Encoding"] == "gzip"
        unzipped = gzip.decompress(await raw.read()).decode().splitlines()
        model_lines = [line for line in unzipped if line.startswith("finetune_step_")]
        assert model_lines
        assert model_lines == [
            line
            for line in (await plain.read()).decode().splitlines()
            if line.startswith("finetune_step_")
        ]


async def test_probes_and_landing_page() -> None:
    async with simulated_stack(models=5) as stack:
        assert (await stack.scrape("/healthz")).status == 200
        assert (await stack.scrape("/readyz")).status == 503
        await stack.exporter.run_cycle()
        assert (await stack.scrape("/readyz")).status == 200
        page = await stack.scrape("/")
        text = (await page.read()).decode()
        assert page.headers["Content-Type"].startswith("text/html")
        name = stack.world.model(stack.world.model_ids()[0])["name"]
        assert name in text
        assert 'href="metrics"' in text


async def test_configured_ids_are_fetched_by_id() -> None:
    async with simulated_stack(models=6) as probe:
        ids = probe.world.model_ids()[:2]
    async with simulated_stack(models=6, cohere_models=",".join([*ids, "no-such-model"])) as stack:
        await stack.exporter.run_cycle()
        assert stack.world.request_counts["list_models"] == 0
        assert stack.world.request_counts["get_model"] == 3
        samples = await stack.samples()
        for model_id in ids:
            assert model_sample(samples, "finetune_run_up", model_id) == 1.0
        assert model_sample(samples, "finetune_run_up", "no-such-model") == 0.0
        assert samples[("finetune_up", COHERE)] == 1.0
        others = set(stack.world.model_ids()) - set(ids)
        assert not any(dict(labels).get("finetune_id") in others for _, labels in samples)


async def test_wrong_key_is_reported_not_fatal() -> None:
    async with simulated_stack(models=4, api_key="sk-wrong") as stack:
        await stack.exporter.run_cycle()
        samples = await stack.samples()
        assert samples[("finetune_up", COHERE)] == 0.0
        key = frozenset({("provider", "cohere"), ("endpoint", "list_models"), ("code", "401")})
        assert samples[("finetune_api_requests_total", key)] == 1.0
        assert (await stack.scrape("/readyz")).status == 200


async def test_identifying_headers_reach_the_api() -> None:
    async with simulated_stack(models=3) as stack:
        await stack.exporter.run_cycle()
        report = await (await stack.http.get(stack.sim_url + "/simulator/requests")).json()
        assert report["last_client_name"] == "integration-tests"
        assert report["last_user_agent"].startswith("finetune-exporter/")


async def test_two_shards_split_the_account_exactly() -> None:
    async with simulated_stack(models=20, shard_count="2", shard_index="0") as stack:
        settings = load_settings(
            cohere_api_url=stack.sim_url, cohere_api_key=API_KEY, shard_count="2", shard_index="1"
        )
        async with new_session(settings) as session:
            other = Exporter(settings, session)
            await stack.exporter.run_cycle()
            await other.run_cycle()
            first = {m.id for m in stack.exporter.snapshot.runs}
            second = {m.id for m in other.snapshot.runs}
        assert first
        assert second
        assert not first & second
        assert first | second == set(stack.world.model_ids())
        assert stack.world.request_counts["list_step_metrics"] == len(stack.world.model_ids())


async def test_basic_auth_from_the_web_config_file(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    async with simulated_stack(models=3, web_config_file=str(config)) as stack:
        await stack.exporter.run_cycle()
        assert (await stack.scrape("/metrics")).status == 401
        assert (await stack.scrape("/")).status == 401
        assert (await stack.scrape("/healthz")).status == 200  # probes stay open
        good = {"Authorization": aiohttp.encode_basic_auth("prometheus", "s3cret")}
        async with stack.http.get(stack.exporter_url + "/metrics", headers=good) as answer:
            assert answer.status == 200
            assert "finetune_up" in await answer.text()
        wrong = {"Authorization": aiohttp.encode_basic_auth("prometheus", "guess")}
        async with stack.http.get(stack.exporter_url + "/metrics", headers=wrong) as answer:
            assert answer.status == 401


async def test_scrapes_serve_the_encoding_prepared_before_publication() -> None:
    async with simulated_stack(models=5) as stack:
        exposition = stack.exporter.exposition
        await stack.exporter.run_cycle()
        renders = exposition.renders  # each publication encoded once, off the event loop
        for _ in range(3):
            for accept in ("", PROMETHEUS_3_ACCEPT):  # text, then what Prometheus 3 asks for
                for encoding in ("identity", "gzip"):
                    answer = await stack.scrape(Accept=accept, **{"Accept-Encoding": encoding})
                    assert answer.status == 200
        assert exposition.renders == renders  # no scrape encoded run data again
        stack.poll_clock.advance(60)
        await stack.exporter.run_cycle()
        assert exposition.renders == renders + 1


@pytest.mark.parametrize("history", [True, False])
async def test_a_run_seen_first_fills_its_curve_from_a_few_pages(history: bool) -> None:
    async with simulated_stack(models=6, poll_page_size=5, ui_history=str(history)) as stack:
        world = stack.world
        await stack.exporter.run_cycle()
        long_runs = [m for m in world.model_ids() if len(world.steps(m)) > 20]
        assert long_runs
        views = {view.id: view for view in stack.exporter.snapshot.runs}
        for model_id in long_runs:
            assert world.steps_by_run[model_id] == (4 if history else 1)
            drawn = views[model_id].history
            if history:
                assert drawn is not None
                assert len(drawn.curves["cross_entropy"]) == 20  # four pages of five steps
            else:
                assert drawn is None
