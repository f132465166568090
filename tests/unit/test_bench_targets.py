"""The benchmark's verdicts: each row of the table says PASS or MISS against its target, by
size where the target depends on it, and names the baseline a throughput missed against. Built
from made-up readings, so a target that drifts from ``bench/README.md`` fails here, not in a
half-hour run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import fleet
import long_job
import per_request
import plan
import poll
import report
import scaling
import scrape
import status_page
import wrk
from first_scrape import FirstScrapes, first_scrape_rows


def test_scrape_targets_are_stricter_at_ten_thousand_runs() -> None:
    assert report.scrape_targets(1000) == (0.5, 2.0)
    assert report.scrape_targets(10_000) == (0.8, 1.5)


def _size(
    runs: int, per_cycle: dict[str, tuple[int, int]], **kwargs: object
) -> scaling.ScalingSize:
    """A scaling size whose providers had ``(active, requests)`` in each of two cycles."""
    size = scaling.ScalingSize(fleet.split_runs(runs), 5.0, 1.0)
    for provider, (active, requests) in per_cycle.items():
        size.providers[provider] = scaling.ProviderCycles(
            active, [requests, requests], [0, 0], [0.5, 0.5]
        )
        for name, value in kwargs.items():
            setattr(size.providers[provider], name, value)
    return size


def test_scaling_passes_only_with_slope_one_and_each_active_run_once() -> None:
    sizes = [_size(100, {"cohere": (30, 30)}), _size(1000, {"cohere": (310, 310)})]
    fit = scaling.slope_of(sizes, "cohere")
    assert fit is not None
    assert fit[0] == pytest.approx(1.0)
    assert next(scaling.scaling_rows(sizes, plan.make_plan(True, None, None)))[-1] == "PASS"
    doubled = [_size(100, {"cohere": (30, 60)}), _size(1000, {"cohere": (310, 620)})]
    assert scaling.slope_of(doubled, "cohere") == pytest.approx((2.0, 0.0))
    assert next(scaling.scaling_rows(doubled, plan.make_plan(True, None, None)))[-1] == "MISS"
    twice = [_size(100, {"cohere": (30, 30)}), _size(1000, {"cohere": (310, 310)}, each_once=False)]
    row = next(scaling.scaling_rows(twice, plan.make_plan(True, None, None)))
    assert row[-1] == "MISS"
    assert "NOT each active run once" in row[5]
    assert scaling.slope_of(sizes[:1], "cohere") is None  # one size: no line


def _wrk(rps: float, p99: float) -> wrk.WrkResult:
    return wrk.WrkResult(rps, int(rps * 3), p99 / 2, p99, 0, 0)


def _scrape_size(runs: int, exporter: tuple[float, float]) -> scrape.ScrapeSize:
    """A size where the exporter did ``(rps, p99)``, client_python 5/500 and static 1000/10."""
    size = scrape.ScrapeSize(runs, fleet.split_runs(runs))
    body = scrape.Body(20 * runs, 100 * runs, 10 * runs, "text/plain", Path("/dev/null"))
    size.bodies = {"text": body, "openmetrics": body}
    for fmt, use_gzip in scrape.CELLS:
        size.results[("exporter", fmt, use_gzip)] = _wrk(*exporter)
        size.results[("client_python", fmt, use_gzip)] = _wrk(5, 500)
        size.results[("static", fmt, use_gzip)] = _wrk(1000, 10)
    return size


def test_scrape_rows_judge_throughput_and_p99_by_size() -> None:
    # 600 req/s and p99 18 ms: 0.6x static and 1.8x its p99, enough below 10,000 runs only.
    small = list(report.scrape_rows(_scrape_size(1000, (600, 18))))
    large = list(report.scrape_rows(_scrape_size(10_000, (600, 18))))
    assert len(small) == 3 * len(scrape.CELLS)
    assert {row[-1] for row in small if row[1].endswith("p50")} == {""}
    assert {row[-1] for row in small if not row[1].endswith("p50")} == {"PASS"}
    assert {row[-1] for row in large if row[1].endswith("requests/s")} == {"MISS (static)"}
    assert {row[-1] for row in large if row[1].endswith("p99")} == {"MISS"}
    slow = list(report.scrape_rows(_scrape_size(1000, (150, 5))))
    assert {row[-1] for row in slow if row[1].endswith("requests/s")} == {"MISS (static)"}
    assert {row[-1] for row in slow if row[1].endswith("p99")} == {"PASS"}


def test_peak_rss_is_judged_where_a_target_exists() -> None:
    sizes = []
    for runs, exporter_mb in ((100, 59), (1000, 500), (10_000, 151)):
        size = _scrape_size(runs, (600, 18))
        size.peak_rss_kb = {"exporter": exporter_mb * 1024, "client_python": 1, "static": 1}
        sizes.append(size)
    assert [row[-1] for row in report.memory_rows(sizes)] == ["PASS", "-", "MISS"]


def _poll_cycle(duration: float, steps: int, lists: int = 0, new: int = 0) -> poll.Cycle:
    return poll.Cycle(0.0, duration, steps, lists, 0, True, new)


def test_poll_cycle_is_judged_against_the_latency_bound() -> None:
    run = poll.PollRun(32, 300, 100, 50.0, 2.0, 5.0, first_cycle_connections=32)
    assert run.bound == pytest.approx(0.2)  # ⌈100/32⌉ = 4 rounds of 50 ms
    assert run.list_pages == 3
    run.cycles = [_poll_cycle(0.24, 100), _poll_cycle(0.26, 100, lists=3), _poll_cycle(0.25, 100)]
    rows = list(report.poll_rows(run))
    assert rows[0][-1] == "PASS"  # median 0.245 s ≤ 1.25 x 0.2 s
    assert rows[1][-1] == "PASS"
    assert rows[3][-1] == "PASS"
    run.cycles = [_poll_cycle(0.3, 100), _poll_cycle(0.3, 99, new=2)]
    rows = list(report.poll_rows(run))
    assert [rows[0][-1], rows[1][-1], rows[3][-1]] == ["MISS", "MISS", "MISS"]


def test_cpu_per_request_is_judged_against_half_a_millisecond() -> None:
    quick = plan.make_plan(True, None, None)
    results = [
        per_request.PerRequest(("cohere", "together"), 1000, 20.0, 1.0, 2000),
        per_request.PerRequest(("cohere",), 500, 20.0, 1.2, 2000),
        per_request.PerRequest(("together",), 500, 20.0, 1.0, 0),
    ]
    assert results[0].ms_per_request == pytest.approx(0.5)
    rows = list(per_request.per_request_rows(results, quick))
    assert [row[-1] for row in rows] == ["PASS", "MISS", "-"]
    assert "cohere + together" in rows[0][1]


def test_first_scrapes_are_judged_against_cached_p99() -> None:
    quick = plan.make_plan(True, None, None)
    result = FirstScrapes(1000, 5.0, first_ms=[10.0] * 8, cached_ms=[8.0] * 40)
    row = next(first_scrape_rows(result, quick))
    assert (row[5], row[-1]) == ("1.25x cached p99", "PASS")
    result.first_ms = [13.0] * 8
    assert next(first_scrape_rows(result, quick))[-1] == "MISS"
    result.first_ms = []
    assert next(first_scrape_rows(result, quick))[-1] == "MISS"


def test_status_page_is_judged_by_ttfb_and_plain_size() -> None:
    page = status_page.PageTiming(
        "/", 120.0, [5.0] * 49 + [40.0], plain_bytes=900 * 1024, gzip_bytes=90 * 1024
    )
    everything = status_page.PageTiming(
        "/?all=1", 300.0, [70.0] * 50, plain_bytes=3 * 1024 * 1024, gzip_bytes=300 * 1024
    )
    result = status_page.StatusPage(2000, 4.0, {"/": page, "/?all=1": everything})
    rows = list(status_page.status_page_rows(result))
    assert [row[-1] for row in rows] == ["PASS", "PASS", "-", "-"]  # ?all=1 is information
    assert rows[1][2] == "900 KB (90 KB)"
    assert "first 120 ms" in rows[0][2]
    page.plain_bytes = 1024 * 1024 + 1
    page.ttfb_ms = [5.0] * 45 + [60.0] * 5
    assert [row[-1] for row in status_page.status_page_rows(result)][:2] == ["MISS", "MISS"]


def _job(steps: int, hwm_mb: float, backfill_mb: float, written: int) -> long_job.JobRead:
    return long_job.JobRead(
        steps=steps,
        newest=steps,
        status="completed",
        exporter_hwm_kb=int(hwm_mb * 1024),
        exporter_newest=float(steps),
        exporter_processed=0.0,
        exporter_phase="succeeded",
        backfill_kb=int(backfill_mb * 1024),
        backfill_code=0,
        backfill_s=1.0,
        backfilled_steps=written,
    )


def test_long_job_is_judged_by_growth_and_every_step() -> None:
    short = _job(100, 50, 60, 100)
    rows = list(long_job.long_job_rows(long_job.LongJob(_job(50_000, 75, 85, 50_000), short)))
    assert [row[-1] for row in rows] == ["PASS", "PASS"]
    assert rows[0][2].startswith("+25.0 MB")
    rows = list(long_job.long_job_rows(long_job.LongJob(_job(50_000, 81, 85, 49_999), short)))
    assert [row[-1] for row in rows] == ["MISS", "MISS"]


def test_a_baseline_too_slow_against_the_exporter_is_named() -> None:
    size = _scrape_size(1000, (600, 18))
    for fmt, use_gzip in scrape.CELLS:
        size.results[("client_python", fmt, use_gzip)] = _wrk(40, 500)  # only 15x
    rows = [row for row in report.scrape_rows(size) if row[1].endswith("requests/s")]
    assert {row[-1] for row in rows} == {"MISS (client_python)"}
