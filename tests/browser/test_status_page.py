"""The status page in a real browser, served by an exporter polling both simulated providers.

Each provider's simulator plays the same script: a run whose loss spikes once and later turns
NaN, two runs with hostile names, one still queued, and two finished ones (one with an
80-character unbroken name). The page keeps at most one finished run (``--ui.finished-runs 1``)
and reloads itself every 2 s. What the browser shows is compared with what the simulators and
``/api/runs`` say, never with the page's own claims.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser

from exporter.core.provider import TERMINAL_PHASES
from exporter.providers.cohere.provider import PHASES as COHERE_PHASES
from exporter.providers.together.provider import PHASES as TOGETHER_PHASES
from exporter.simulator import Scenario, ScriptedModel, ScriptedSpike
from exporter.web.api import RunDoc, RunsDocument
from tests.browser.chromium import OUTPUT, TIMEOUT_MS, Watched, chromium, open_page
from tests.stack import Stack, simulated_stack

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

HOSTILE = "<img src=x onerror=alert(1)>"
ODD = '"Quote\'s" run\nline two \N{EM DASH} Z\u00fcrich \u65e5\u672c'
LONG = "finished-" + "n" * 80
FINISHED_RUNS = 1
SCRIPT = Scenario(
    models=(
        ScriptedModel(
            name="spiky-run",
            eval_every=8,
            step_seconds=1,
            queue_seconds=1,
            starts_at=-60,
            spikes=(ScriptedSpike(step=96, factor=6, evaluations=1),),
            non_finite=((120, "NaN"),),
            seed=1,
        ),
        ScriptedModel(name=HOSTILE, step_seconds=1, queue_seconds=1, starts_at=-40, seed=2),
        ScriptedModel(name=ODD, step_seconds=1, queue_seconds=1, starts_at=-30, seed=3),
        ScriptedModel(name="waiting-run", queue_seconds=100_000, seed=4),
        ScriptedModel(name="finished-old", starts_at=-6000, seed=5),
        ScriptedModel(name=LONG, starts_at=-3000, seed=6),
    )
)
PROVIDER_PHASES = {"cohere": COHERE_PHASES, "together": TOGETHER_PHASES}

#: Per card: its run ID, how many curves, curve vertices and marks it draws.
CARDS_JS = """() => Array.from(document.querySelectorAll("article.r")).map((card) => ({
  id: card.querySelector(".i").textContent,
  name: card.querySelector(".n").textContent,
  curves: card.querySelectorAll("svg").length,
  vertices: Array.from(card.querySelectorAll("svg path.l")).reduce(
    (n, path) => n + (path.getAttribute("d").match(/-?\\d+/g) || []).length / 2, 0),
  outliers: Array.from(card.querySelectorAll("svg .o")).map((m) => m.textContent),
  nonfinite: card.querySelectorAll("svg .nf").length,
  svgTitle: (card.querySelector("svg > title") || {}).textContent || null,
}))"""


async def advance(stack: Stack, seconds: float) -> None:
    """Simulated time moves on and the exporter polls, with discovery due every cycle."""
    stack.sim_clock.advance(seconds)
    stack.poll_clock.advance(400)
    await stack.exporter.run_cycle()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with simulated_stack(
        providers=("cohere", "together"),
        scenario=SCRIPT,
        poll_interval=2.0,
        ui_finished_runs=FINISHED_RUNS,
    ) as running:
        await running.exporter.run_cycle()  # the spike and the NaN are still ahead
        await advance(running, 100)  # now both are judged
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def api(stack: Stack, query: str = "") -> RunsDocument:
    response = await stack.http.get(f"{stack.exporter_url}/api/runs{query}")
    assert response.status == 200
    return RunsDocument.model_validate_json(await response.read())


def simulated_runs(stack: Stack) -> dict[str, str]:
    """Every run the simulators hold now, by ID, with its phase."""
    phases: dict[str, str] = {}
    for provider, sim in stack.sims.items():
        for truth in sim.world.truth():
            phases[truth["id"]] = PROVIDER_PHASES[provider].get(truth["status"], "unknown")
    return phases


def finite_points(run: RunDoc) -> int:
    curves = (run.history or {}).values()
    return sum(1 for curve in curves for value in curve.values if math.isfinite(value))


def nonfinite_marks(run: RunDoc) -> int:
    marks = {(step, metric) for step, metric in run.nonfinite_steps}
    for metric, curve in (run.history or {}).items():
        marks |= {
            (s, metric)
            for s, v in zip(curve.steps, curve.values, strict=True)
            if not math.isfinite(v)
        }
    return len(marks)


async def cards(watched: Watched, url: str) -> list[dict[str, Any]]:
    await watched.page.goto(url)
    found: list[dict[str, Any]] = await watched.page.evaluate(CARDS_JS)
    return found


async def test_cards_and_curves_are_the_simulators_runs(stack: Stack, browser: Browser) -> None:
    phases = simulated_runs(stack)
    assert len(phases) == 2 * len(SCRIPT.models)
    active = [run for run, phase in phases.items() if phase not in TERMINAL_PHASES]
    finished = len(phases) - len(active)
    assert active
    assert finished > FINISHED_RUNS  # the selection has something to leave out
    everything = await api(stack, "?all=1")
    assert {run.id: run.phase for run in everything.runs} == phases
    selected = await api(stack)
    watched = await open_page(browser)

    shown = await cards(watched, stack.exporter_url + "/")
    assert len(shown) == len(active) + FINISHED_RUNS
    assert {card["id"] for card in shown} == {run.id for run in selected.runs}
    assert set(active) <= {card["id"] for card in shown}

    every = await cards(watched, stack.exporter_url + "/?all=1")
    assert sorted(card["id"] for card in every) == sorted(phases)
    by_id = {run.id: run for run in everything.runs}
    with_steps = {
        t["id"] for sim in stack.sims.values() for t in sim.world.truth() if t["newest_step"]
    }
    assert {card["id"] for card in every if card["curves"]} == with_steps
    for card in every:
        run = by_id[card["id"]]
        assert card["vertices"] == finite_points(run), run.name
        assert card["nonfinite"] == nonfinite_marks(run), run.name
        assert len(card["outliers"]) == len(run.outlier_steps), run.name


async def test_the_scripted_spike_is_marked(stack: Stack, browser: Browser) -> None:
    watched = await open_page(browser)
    spiky = [
        card
        for card in await cards(watched, stack.exporter_url + "/")
        if card["name"] == "spiky-run"
    ]
    assert len(spiky) == 2  # one run at each provider
    for card in spiky:
        assert any(title.startswith("step 96:") for title in card["outliers"]), card


async def test_hostile_names_are_shown_as_text(stack: Stack, browser: Browser) -> None:
    watched = await open_page(browser)
    shown = await cards(watched, stack.exporter_url + "/")
    for name in (HOSTILE, ODD):
        matching = [card for card in shown if card["name"] == name]
        assert len(matching) == 2, name  # Cohere's model name, Together's job suffix
        for card in matching:
            assert card["svgTitle"] is not None
            assert card["svgTitle"].startswith(name + ": ")
    page = watched.page
    assert await page.locator("img").count() == 0
    assert await page.locator("[onerror]").count() == 0
    assert await page.evaluate("document.querySelectorAll('[style]').length") == 0
    assert watched.dialogs == []


async def test_no_console_error_and_no_csp_violation(stack: Stack, browser: Browser) -> None:
    watched = await open_page(browser)
    for path in ("/", "/?all=1"):
        await watched.page.goto(stack.exporter_url + path)
        await watched.page.wait_for_load_state("load")
        assert watched.errors == [], path
        assert await watched.violations() == [], path
    # The watch itself works: an inline style the CSP does not admit is reported.
    await watched.page.evaluate("document.body.setAttribute('style', 'color: red')")
    await watched.page.wait_for_function("window.__violations.length > 0", timeout=TIMEOUT_MS)
    assert any("style-src" in v for v in await watched.violations())


@pytest.mark.parametrize("path", ["/", "/?all=1"])
async def test_375_pixels_wide_has_no_horizontal_scroll(
    stack: Stack, browser: Browser, path: str
) -> None:
    watched = await open_page(browser, width=375, height=800)
    await watched.page.goto(stack.exporter_url + path)
    widths = await watched.page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1], widths


async def test_the_page_reloads_itself_and_keeps_its_scroll(stack: Stack, browser: Browser) -> None:
    watched = await open_page(browser, width=375, height=700)
    page = watched.page
    await page.goto(stack.exporter_url + "/")
    before = await page.evaluate("window.scrollTo(0, 900); window.__marker = 1; scrollY")
    assert before == 900
    await page.wait_for_event("load", timeout=TIMEOUT_MS)  # the page's own reload, after 2 s
    assert await page.evaluate("window.__marker === undefined")  # a new document ...
    assert await page.evaluate("scrollY") == before  # ... at the same place
    times = await page.locator("time").all_text_contents()
    assert times
    assert all(text == "just now" or text.endswith(" ago") for text in times), times

    before_cycle = stack.exporter.snapshot.version
    await advance(stack, 20)
    newest = f"snapshot {stack.exporter.snapshot.version} "
    assert stack.exporter.snapshot.version > before_cycle
    for _ in range(5):  # reloads come every 2 s; the next one shows the new snapshot
        if newest in await page.locator("footer").inner_text():
            break
        await page.wait_for_event("load", timeout=TIMEOUT_MS)
    assert newest in await page.locator("footer").inner_text()
    assert await page.evaluate("scrollY") == before
    assert watched.errors == []


async def test_screenshots(browser: Browser) -> None:
    """Light and dark at a phone's and a laptop's width, from demo-like data: both
    providers, runs in every phase. ``make screenshots`` copies one into docs/."""
    OUTPUT.mkdir(exist_ok=True)
    async with simulated_stack(providers=("cohere", "together"), models=6, seed=3) as demo:
        await demo.exporter.run_cycle()
        for _ in range(3):
            await advance(demo, 120)
        for scheme in ("light", "dark"):
            for width in (375, 1280):
                watched = await open_page(browser, width=width, scheme=scheme)
                await watched.page.goto(demo.exporter_url + "/")
                path = OUTPUT / f"status-page-{scheme}-{width}.png"
                await watched.page.screenshot(path=str(path), full_page=True)
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                assert watched.errors == []
                await watched.page.context.close()
