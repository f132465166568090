"""``/api/runs`` and ``/`` served by an exporter polling both simulators over loopback: the
document equals what the simulators hold, follows the page's selection, writes NaN as a string,
and basic auth from ``--web.config.file`` covers both."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest

from exporter.core.provider import TERMINAL_PHASES
from exporter.providers.cohere.provider import PHASES as COHERE_PHASES
from exporter.providers.together.provider import PHASES as TOGETHER_PHASES
from exporter.simulator import load_scenario
from exporter.web.api import RunsDocument
from tests.stack import Stack, simulated_stack
from tests.webconfig_support import ALICE_HASH, ALICE_PASSWORD, basic

pytestmark = pytest.mark.integration
PHASES = {"cohere": COHERE_PHASES, "together": TOGETHER_PHASES}


async def document(stack: Stack, query: str = "", **headers: str) -> RunsDocument:
    response = await stack.scrape(f"/api/runs{query}", **headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return RunsDocument.model_validate_json(await response.read())


def truths(stack: Stack) -> dict[str, dict[str, Any]]:
    found = {}
    for provider, sim in stack.sims.items():
        for truth in sim.world.truth():
            phase = PHASES[provider].get(truth["status"], "unknown")
            found[truth["id"]] = {**truth, "provider": provider, "phase": phase}
    return found


async def cycle(stack: Stack, seconds: float) -> None:
    stack.sim_clock.advance(seconds)
    stack.poll_clock.advance(400)  # discovery is due: statuses are fresh
    await stack.exporter.run_cycle()


async def test_the_document_is_what_the_simulators_hold() -> None:
    async with simulated_stack(providers=("cohere", "together"), models=8, seed=5) as stack:
        await stack.exporter.run_cycle()
        await cycle(stack, 120)
        doc = await document(stack, "?all=1")
        truth = truths(stack)
        assert doc.version == stack.exporter.snapshot.version
        assert doc.ready
        assert doc.all
        assert doc.hidden_finished == 0
        assert sorted(run.id for run in doc.runs) == sorted(truth)
        for run in doc.runs:
            told = truth[run.id]
            assert (run.provider, run.name, run.status, run.phase) == (
                told["provider"],
                told["name"],
                told["status"],
                told["phase"],
            )
            newest = told["newest_step"]
            assert run.step == (newest["step_number"] if newest else None), run.id
            assert run.up
            assert run.history is not None
            if newest:
                curve = next(iter(run.history.values()))
                assert curve.steps == sorted(curve.steps)
                assert curve.steps[-1] <= newest["step_number"]
        budgets = stack.exporter.budgets
        assert [p.name for p in doc.providers] == ["cohere", "together"]
        for provider in doc.providers:
            assert provider.up
            assert provider.ready
            assert provider.last_cycle_at is not None
            assert provider.requests_per_minute == budgets[provider.name].per_minute
            assert provider.requests_used is not None
            assert 0 < provider.requests_used <= provider.requests_per_minute


async def test_the_default_selection_keeps_active_runs_and_the_newest_finished() -> None:
    async with simulated_stack(
        providers=("cohere", "together"), models=10, seed=11, ui_finished_runs=2
    ) as stack:
        await stack.exporter.run_cycle()
        truth = truths(stack)
        active = {run for run, told in truth.items() if told["phase"] not in TERMINAL_PHASES}
        finished = len(truth) - len(active)
        assert finished > 2
        doc = await document(stack)
        shown = {run.id for run in doc.runs}
        assert active <= shown
        assert len(shown) == len(active) + 2
        assert doc.hidden_finished == finished - 2
        assert not doc.all
        everything = await document(stack, "?all=1")
        order = [run.id for run in everything.runs if run.id in shown]
        assert order == [run.id for run in doc.runs]  # one order for both


async def test_nan_is_written_as_a_string_and_gzip_is_the_same_document() -> None:
    scenario = load_scenario("spike-and-healthy")  # nan-run: cross_entropy NaN at step 64
    async with simulated_stack(providers=("cohere",), scenario=scenario) as stack:
        await cycle(stack, 20)  # the first steps: the position is known
        await cycle(stack, 100)  # step 64 (t = 69) is judged
        response = await stack.scrape("/api/runs", **{"Accept-Encoding": "identity"})
        raw = await response.read()

        def refuse(constant: str) -> None:
            raise AssertionError(f"{constant} is not JSON")

        parsed = json.loads(raw, parse_constant=refuse)
        (nan_run,) = [run for run in parsed["runs"] if run["name"] == "nan-run"]
        assert [64, "cross_entropy"] in nan_run["nonfinite_steps"]
        curve = nan_run["history"]["cross_entropy"]
        assert curve["values"][curve["steps"].index(64)] == "NaN"
        doc = RunsDocument.model_validate_json(raw)
        (typed,) = [run for run in doc.runs if run.name == "nan-run"]
        assert typed.history is not None
        assert math.isnan(typed.history["cross_entropy"].values[curve["steps"].index(64)])

        async with stack.http.get(
            stack.exporter_url + "/api/runs",
            headers={"Accept-Encoding": "gzip"},
            auto_decompress=False,
        ) as zipped:
            assert zipped.headers["Content-Encoding"] == "gzip"
            unzipped = json.loads(gzip.decompress(await zipped.read()), parse_constant=refuse)
        for volatile in ("generated_at", "providers"):
            unzipped.pop(volatile)
            parsed.pop(volatile)
        assert unzipped == parsed


async def test_basic_auth_covers_the_page_and_the_api(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    async with simulated_stack(web_config_file=str(config)) as stack:
        await stack.exporter.run_cycle()
        for path in ("/", "/api/runs", "/api/runs?all=1", "/?all=1"):
            assert (await stack.scrape(path)).status == 401, path
            wrong = await stack.scrape(path, Authorization=basic("alice", "nope"))
            assert wrong.status == 401, path
            allowed = await stack.scrape(path, Authorization=basic("alice", ALICE_PASSWORD))
            assert allowed.status == 200, path
        assert (await stack.scrape("/healthz")).status == 200  # probes stay open


async def test_without_history_the_cards_have_no_curve() -> None:
    async with simulated_stack(
        providers=("cohere", "together"), models=6, ui_history=False
    ) as stack:
        await stack.exporter.run_cycle()
        await cycle(stack, 60)
        doc = await document(stack, "?all=1")
        assert any(run.step is not None for run in doc.runs)
        assert all(run.history is None for run in doc.runs)
        page = await stack.scrape("/?all=1")
        html = (await page.read()).decode()
        assert html.count('<article class="r ') == len(doc.runs)
        assert "<svg" not in html
