"""Measurement 8: the first scrape after a new snapshot, against scrapes served from the cache.

The exporter of the scaling table at ``first_scrape_runs`` runs (half each provider) goes on
polling after its counted cycles, and every cycle publishes a new snapshot even with nothing
new upstream (its poll durations and each run's last poll time change), at the end of the
cycle and, in a long cycle, every few seconds of it: each one encoded again in every format.
One client scrapes ``/metrics`` as Prometheus 3 does (its ``Accept`` header and gzip) on a
fixed period over one kept-alive connection, and times each scrape from sending the request to
the last byte. Off the timing path, it inflates the first kilobytes of the body, where each
provider's poll duration is: a changed value means the scrape was the first to see a new
snapshot, an unchanged one that it was served what an earlier scrape got.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from commands import METRICS_PATH
from cycles import inflate_prefix, parse_poll_durations
from fleet import Exporter
from harness import Deadline, log
from plan import Plan
from scrape import request_headers
from table import Row, exporter_row, fmt_ms, percentile, verdict

#: The target: p99 of the first scrapes at most this many times the p99 of cached ones.
MAX_FIRST_VS_CACHED = 1.5
#: What Prometheus 3 sends by default on every scrape: its ``Accept`` header, and gzip.
PROMETHEUS_HEADERS = request_headers("openmetrics", True)


@dataclass
class FirstScrapes:
    runs: int
    interval: float
    ready_s: float = 0.0
    first_ms: list[float] = field(default_factory=list)
    cached_ms: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0


def classify(previous: dict[str, float] | None, current: dict[str, float]) -> str | None:
    """``first`` when the poll durations changed since the previous scrape (a new snapshot),
    ``cached`` when not, None for the very first scrape (nothing to compare with)."""
    if previous is None:
        return None
    return "cached" if current == previous else "first"


class Scraper:
    """One kept-alive connection scraping the way Prometheus 3 does."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def scrape(self) -> tuple[float, int, bytes]:
        """Milliseconds from sending to the last byte, the status and the raw body."""
        started = time.perf_counter()
        self._conn.request("GET", METRICS_PATH, headers=PROMETHEUS_HEADERS)
        response = self._conn.getresponse()
        body = response.read()
        return 1000.0 * (time.perf_counter() - started), response.status, body

    def close(self) -> None:
        self._conn.close()


def collect(url: str, result: FirstScrapes, plan: Plan, deadline: Deadline, limit: float) -> None:
    scraper = Scraper(url)
    previous: dict[str, float] | None = None
    started = time.monotonic()
    try:
        while len(result.first_ms) < plan.first_scrape_samples:
            if time.monotonic() - started > limit:
                log(f"first scrapes: only {len(result.first_ms)} after {limit:.0f} s")
                break
            deadline.check(what="the first scrapes after new snapshots")
            due = time.monotonic() + plan.first_scrape_period
            ms, status, body = scraper.scrape()
            if status != 200:
                result.failures += 1
            else:
                current = parse_poll_durations(inflate_prefix(body))
                kind = classify(previous, current)
                if kind == "first":
                    result.first_ms.append(ms)
                    log(f"  new snapshot, first scrape {ms:.1f} ms")
                elif kind == "cached":
                    result.cached_ms.append(ms)
                previous = current
            time.sleep(max(0.0, due - time.monotonic()))
    finally:
        scraper.close()
        result.seconds = time.monotonic() - started


def measure_first_scrapes(
    exporter: Exporter, runs: int, interval: float, plan: Plan, deadline: Deadline
) -> FirstScrapes:
    """Scrape ``exporter`` until ``first_scrape_samples`` first scrapes were seen (or give up
    after 30 s per sample wanted)."""
    result = FirstScrapes(runs, interval, exporter.ready_s)
    log(f"{runs:,} runs: scraping for first scrapes after new snapshots")
    collect(exporter.url, result, plan, deadline, 30 * plan.first_scrape_samples + 60)
    if exporter.proc.poll() is not None:
        raise RuntimeError("the exporter of the first scrapes exited (see its log)")
    return result


def first_scrape_rows(result: FirstScrapes, plan: Plan) -> Iterator[Row]:
    first, cached = result.first_ms, result.cached_ms
    short = len(first) < 20
    what = (
        f"first scrape after a new snapshot, {result.runs:,} runs, OpenMetrics + gzip "
        f"(Prometheus 3), one scraper every {plan.first_scrape_period * 1000:.0f} ms, poll every "
        f"{result.interval:g} s: p50 / p99 of {len(first)} first"
        + (" (fewer than 20: --quick or too few snapshots)" if short else "")
        + f" and {len(cached)} cached scrapes"
    )
    if not first or not cached:
        yield exporter_row("8", what, "-", "no samples", "", "MISS")
        return
    p99_first, p99_cached = percentile(first, 99), percentile(cached, 99)
    ratio = p99_first / p99_cached
    yield exporter_row(
        "8",
        what,
        f"first {fmt_ms(percentile(first, 50))} / {fmt_ms(p99_first)}, cached "
        f"{fmt_ms(percentile(cached, 50))} / {fmt_ms(p99_cached)}"
        + (f", {result.failures} failed" if result.failures else ""),
        f"{ratio:.2f}x cached p99",
        f"p99 ≤ {MAX_FIRST_VS_CACHED:g}x cached p99",
        verdict(ratio <= MAX_FIRST_VS_CACHED and not result.failures),
    )
