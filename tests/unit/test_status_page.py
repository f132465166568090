"""The status page's HTML and SVG: escaping, curves with gaps and marks, the CSP, the cache."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import hashlib
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from exporter.core.history import History, HistoryBuilder
from exporter.core.snapshot import RunView, Snapshot
from exporter.exposition import ExpositionCache
from exporter.web.app import STATUS_PAGES, build_web_app
from exporter.web.page import card, runs_html
from exporter.web.runs import select
from exporter.web.status import RenderCache, Rendered
from exporter.web.svg import chart, path_data, series_order
from tests.snapshots import cohere_view, snapshot_of, step, together_view
from tests.unit.page_html import parse

HOSTILE = "<img src=x onerror=alert(1)>\"quoted' & \n new line \u00fcml\u00e4ut \u2603"


def history_of(
    curves: dict[str, Sequence[tuple[int, float]]],
    outliers: Sequence[tuple[int, str]] = (),
    nonfinite: Sequence[tuple[int, str]] = (),
) -> History:
    builder = HistoryBuilder(curves)
    for metric, points in curves.items():
        for number, value in points:
            builder.add(number, {metric: value})
    for number, metric in outliers:
        builder.mark(number, [metric], [])
    for number, metric in nonfinite:
        builder.mark(number, [], [metric])
    return builder.history()


def with_history(view: RunView, history: History | None) -> RunView:
    return dataclasses.replace(view, history=history)


def vertices(d: str) -> int:
    numbers = re.findall(r"-?\d+", d)
    assert len(numbers) % 2 == 0
    return len(numbers) // 2


def curve_paths(html: str) -> list[str]:
    return [e.attrs["d"] or "" for e in parse(html).find("path", "l")]


# --------------------------------------------------------------------------- SVG


def test_path_data_breaks_at_gaps_and_dots_lone_points() -> None:
    assert path_data([(0, 10), (2, 8), None, (6, 5), (8, 7)]) == "M0 10l2-2M6 5l2 2"
    assert path_data([(1, 2), None, (3, 4), (5, 6), (7, 6)]) == "M1 2zM3 4l2 2 2 0"
    assert path_data([None, None]) == ""


def test_a_nan_breaks_the_line_and_is_marked() -> None:
    values = [(0, 2.0), (8, 1.5), (16, math.nan), (24, 1.0), (32, 0.8)]
    drawn = chart(history_of({"cross_entropy": values}), "run")
    assert drawn is not None
    (d,) = curve_paths(drawn.svg)
    assert d.count("M") == 2  # the line stops before the NaN and starts again after it
    assert vertices(d) == 4  # every finite point is a vertex, the NaN none
    marks = parse(drawn.svg).find("path", "nf")
    assert [m.all_text() for m in marks] == ["step 16: cross_entropy NaN"]
    assert (drawn.low, drawn.high) == (0.800000011920929, 2.0)  # NaN not in the range


def test_each_point_is_a_vertex_and_train_comes_first() -> None:
    train = [(s, 3.0 - s / 100) for s in range(0, 200, 2)]
    evals = [(s, 3.1 - s / 100) for s in range(0, 200, 20)]
    drawn = chart(history_of({"eval/loss": evals, "train/loss": train}), "run")
    assert drawn is not None
    assert drawn.series == ("train/loss", "eval/loss")
    paths = parse(drawn.svg).find("path", "l")
    assert [sorted(p.classes) for p in paths] == [["l", "s0"], ["l", "s1"]]
    assert [vertices(p.attrs["d"] or "") for p in paths] == [len(train), len(evals)]


def test_evaluation_metrics_come_after_training_ones() -> None:
    names = ["val_loss", "train/loss", "eval/loss", "latest_loss", "generation_cross_entropy"]
    assert series_order(names) == [
        "latest_loss",
        "train/loss",
        "eval/loss",
        "generation_cross_entropy",
        "val_loss",
    ]


def test_outliers_ring_their_point_or_point_down_from_the_top() -> None:
    values = [(s, 5.0 if s == 40 else 1.0) for s in range(0, 100, 8)]
    history = history_of({"loss": values}, outliers=[(40, "loss"), (44, "loss")])
    drawn = chart(history, "run")
    assert drawn is not None
    (ring,) = parse(drawn.svg).find("circle", "o")
    assert ring.attrs["cy"] == "4"  # the top of the range: the spike itself
    assert ring.all_text() == "step 40: loss 5, an outlier"
    (pointer,) = parse(drawn.svg).find("path", "o")  # step 44 has no point: no value known
    assert pointer.all_text() == "step 44: loss, an outlier"
    assert drawn.outliers == 2


def test_no_history_or_an_empty_one_draws_nothing() -> None:
    assert chart(None, "run") is None
    assert chart(History(), "run") is None
    view = cohere_view("m1", "plain", "STATUS_FINETUNING", newest_step=step(8, 1.0, {"loss": 1}))
    assert "<svg" not in card(view)  # --ui.history=false: the card without a curve
    assert "<svg" in card(with_history(view, history_of({"loss": [(8, 1.0)]})))


# --------------------------------------------------------------------------- escaping


def hostile_view() -> RunView:
    view = together_view(
        "ft-" + HOSTILE,
        HOSTILE,
        HOSTILE,
        newest_step=step(10, 1.7e9, {f"{HOSTILE} loss": 1.0, "accuracy": 0.5}),
        total_steps=20,
    )
    run = dataclasses.replace(view.run, base_model=HOSTILE)
    history = history_of({f"{HOSTILE} loss": [(2, 2.0), (10, 1.0)]}, outliers=[(10, HOSTILE)])
    return dataclasses.replace(view, run=run, history=history)


def test_strings_from_an_api_stay_text_wherever_they_land() -> None:
    html = card(hostile_view())
    root = parse(html)
    tags = {e.tag for e in root.walk()}
    assert "img" not in tags
    for element in root.walk():
        assert not any(name.startswith("on") for name in element.attrs), element
        assert "style" not in element.attrs
    (name,) = root.find("span", "n")
    assert name.all_text() == HOSTILE  # HTML text
    (run_id,) = root.find("span", "i")
    assert run_id.all_text() == "ft-" + HOSTILE
    (phase,) = root.find("span", "p")
    assert phase.attrs["title"] == f"status: {HOSTILE}"  # an attribute
    (svg_title,) = root.find("title")
    assert svg_title.all_text() == f"{HOSTILE}: {HOSTILE} loss"  # inside the SVG
    assert HOSTILE in root.find("p", "s")[0].all_text()
    assert [dt.all_text() for dt in root.find("dt")] == [f"{HOSTILE} loss", "accuracy"]


def test_lone_surrogates_and_control_characters_are_replaced() -> None:
    view = cohere_view("m1", "a\ud800b\x00c\x1bd", "STATUS_FINETUNING")
    html = card(view)
    html.encode()  # would raise on a lone surrogate
    assert parse(html).find("span", "n")[0].all_text() == "a\ufffdb\ufffdc\ufffdd"


def test_values_show_losses_then_accuracies_and_non_finite_as_prometheus_spells_it() -> None:
    metrics = {"accuracy": 0.75, "train/loss": math.nan, "eval/loss": math.inf, "lr": 1e-4}
    view = together_view("ft-1", "r", "running", newest_step=step(5, None, metrics))
    root = parse(card(view))
    shown = [
        (dt.all_text(), dd.all_text())
        for dt, dd in zip(root.find("dt"), root.find("dd"), strict=True)
    ]
    assert shown == [("train/loss", "NaN"), ("eval/loss", "+Inf"), ("accuracy", "0.75")]


def test_progress_shows_step_of_total_and_eta() -> None:
    view = together_view(
        "ft-1", "r", "running", newest_step=step(50, None, {}), total_steps=200, eta_seconds=600
    )
    root = parse(card(view))
    (bar,) = root.find("progress")
    assert (bar.attrs["value"], bar.attrs["max"]) == ("50", "200")
    assert root.find("div", "pr")[0].all_text() == "step 50 of 200 · ETA 10 min"
    unknown = parse(card(cohere_view("m", "c", "STATUS_FINETUNING", newest_step=step(8, None, {}))))
    assert unknown.find("progress") == []
    assert unknown.find("div", "pr")[0].all_text() == "step 8"


# --------------------------------------------------------------------------- served page


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[], Snapshot]], TestServer]]:
    servers: list[TestServer] = []

    def start(source: Callable[[], Snapshot]) -> TestServer:
        app = build_web_app(
            ExpositionCache(CollectorRegistry(auto_describe=False)),
            source,
            telemetry_path="/custom/metrics",
            refresh_seconds=0.5,
        )
        server = TestServer(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def sample_snapshot(version: int = 1) -> Snapshot:
    views = [
        with_history(
            cohere_view("m1", HOSTILE, "STATUS_FINETUNING", newest_step=step(8, 1.7e9, {})),
            history_of({"cross_entropy": [(0, 2.0), (8, math.nan)]}),
        ),
        cohere_view("m2", "done", "STATUS_READY"),
    ]
    return snapshot_of(*views, up=True, version=version)


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_the_csp_admits_exactly_the_served_style_and_script(
    serve: Callable[[Callable[[], Snapshot]], TestServer],
) -> None:
    snapshot = sample_snapshot()
    server = serve(lambda: snapshot)
    await server.start_server()
    async with ClientSession() as http, http.get(server.make_url("/")) as response:
        html = await response.text()
        csp = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    root = parse(html)
    (style,) = root.find("style")
    (script,) = root.find("script")
    assert directives == {
        "default-src": "'none'",
        "style-src": sha256_source(style.all_text()),
        "script-src": sha256_source(script.all_text()),
        "img-src": "'self' data:",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert script.attrs == {}  # inline, no src: nothing from another origin
    for element in root.walk():
        assert "style" not in element.attrs
    links = [e.attrs["href"] or "" for e in root.find("a")]
    assert "custom/metrics" in links
    assert {"healthz", "readyz", "api/runs"} <= set(links)
    assert not [link for link in links if link.startswith("/") or "//" in link]
    (body,) = root.find("body")
    assert body.attrs["data-refresh"] == "2"  # never faster than every 2 s


async def test_gzip_is_the_same_page(
    serve: Callable[[Callable[[], Snapshot]], TestServer],
) -> None:
    snapshot = sample_snapshot()
    server = serve(lambda: snapshot)
    await server.start_server()
    async with ClientSession(auto_decompress=False) as http:
        for path in ("/", "/?all=1"):
            plain = await http.get(server.make_url(path), headers={"Accept-Encoding": "identity"})
            zipped = await http.get(server.make_url(path), headers={"Accept-Encoding": "gzip"})
            assert "Content-Encoding" not in plain.headers
            assert zipped.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(await zipped.read()) == await plain.read()


async def test_a_snapshot_is_rendered_once_whatever_the_readers(
    serve: Callable[[Callable[[], Snapshot]], TestServer],
) -> None:
    current = [sample_snapshot(1)]
    server = serve(lambda: current[0])
    await server.start_server()
    pages = server.app[STATUS_PAGES].pages
    async with ClientSession() as http:

        async def get(path: str = "/") -> str:
            async with http.get(server.make_url(path)) as response:
                assert response.status == 200
                return await response.text()

        first = await get()
        assert [await get() for _ in range(3)] == [first] * 3
        assert pages.renders == 1
        await get("/?all=1")
        assert pages.renders == 2  # a selection of its own
        current[0] = sample_snapshot(2)
        answers = await asyncio.gather(*(get() for _ in range(8)))
        assert pages.renders == 3  # eight readers at once, one render
        assert all("snapshot 2 " in answer for answer in answers)


def test_runs_html_says_why_it_is_empty() -> None:
    waiting = Snapshot()
    html = runs_html(waiting, select(waiting, 50), 60)
    assert "No runs to show: waiting for the first poll cycle." in html
    finished = snapshot_of(*(cohere_view(f"m{i}", "x", "STATUS_READY") for i in range(3)))
    html = runs_html(finished, select(finished, 1), 60)
    assert "Showing the 1 most recent of 3 finished runs." in html
    assert 'href="?all=1"' in html


async def test_a_watched_page_is_rendered_before_its_snapshot_is_published(
    serve: Callable[[Callable[[], Snapshot]], TestServer],
) -> None:
    current = [sample_snapshot(1)]
    server = serve(lambda: current[0])
    await server.start_server()
    status = server.app[STATUS_PAGES]
    async with ClientSession() as http:
        async with http.get(server.make_url("/")) as response:
            assert response.status == 200
        assert status.pages.renders == 1
        current[0] = sample_snapshot(2)
        status.prepare(current[0])  # what the hub does before it swaps the snapshot in
        assert status.pages.renders == 2
        assert status.documents.renders == 0  # /api/runs was never asked for: not rendered
        async with http.get(server.make_url("/")) as response:
            assert "snapshot 2 " in await response.text()
        assert status.pages.renders == 2  # the reader found the render ready


async def test_a_page_nobody_watches_any_more_is_forgotten() -> None:
    now = [0.0]
    rendered: list[int] = []

    def render(snapshot: Snapshot, all_runs: bool) -> Rendered:
        rendered.append(snapshot.version)
        return Rendered(b"", b"", select(snapshot, 50))

    cache = RenderCache(render, watched_seconds=180.0, clock=lambda: now[0])
    await cache.get(sample_snapshot(1), False)
    now[0] = 180.0
    cache.prepare(sample_snapshot(2))  # asked 180 s ago: still watched
    now[0] = 181.0
    cache.prepare(sample_snapshot(3))  # not any more: dropped, and its snapshot with it
    assert rendered == [1, 2]
    assert cache._entries == {}
