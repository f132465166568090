"""Measurement 9: the status page ``/`` at ``status_runs`` runs, its time to first byte and size.

An exporter polls ``status_runs`` runs (half each provider, clocks at a millionth of real time) and,
after its first cycle, no more (an hour's poll interval), so every request after the first is
served from the render of that one snapshot. The very first request after ``/readyz`` renders
the page and is reported apart. Each request opens its own connection, as a page load does,
and asks for gzip, as a browser does; time to first byte is from sending the request to having
read the status line and headers. ``/?all=1`` (every finished run too) is measured alike, for
information: the target is the default page's.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from fleet import fleet, split_runs
from harness import Children, Deadline, log
from plan import Plan
from table import Row, exporter_row, fmt_ms, percentile, verdict

#: Targets of the default page.
MAX_TTFB_MS = 50.0
MAX_PAGE_BYTES = 1024 * 1024
PAGES = ("/", "/?all=1")


@dataclass
class PageTiming:
    path: str
    first_ms: float = 0.0
    ttfb_ms: list[float] = field(default_factory=list)
    plain_bytes: int = 0
    gzip_bytes: int = 0
    failures: int = 0


@dataclass
class StatusPage:
    runs: int
    ready_s: float = 0.0
    pages: dict[str, PageTiming] = field(default_factory=dict)


def fetch(url: str, path: str, *, use_gzip: bool) -> tuple[float, int, bytes]:
    """Milliseconds to first byte (status line and headers read), the status, the raw body."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Accept-Encoding": "gzip"} if use_gzip else {}
    try:
        conn.connect()
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        ttfb = 1000.0 * (time.perf_counter() - started)
        return ttfb, response.status, response.read()
    finally:
        conn.close()


def measure_page(url: str, timing: PageTiming, requests: int, deadline: Deadline) -> None:
    """The first request (it renders), the sizes, then ``requests`` timed requests."""
    timing.first_ms, status, zipped = fetch(url, timing.path, use_gzip=True)
    _, plain_status, plain = fetch(url, timing.path, use_gzip=False)
    if status != 200 or plain_status != 200:
        raise RuntimeError(f"status page {timing.path} answered {status} / {plain_status}")
    timing.gzip_bytes, timing.plain_bytes = len(zipped), len(plain)
    for _ in range(requests):
        deadline.check(what=f"requests of {timing.path}")
        ms, status, _ = fetch(url, timing.path, use_gzip=True)
        if status == 200:
            timing.ttfb_ms.append(ms)
        else:
            timing.failures += 1


def bench_status_page(children: Children, plan: Plan, deadline: Deadline) -> StatusPage:
    runs = plan.status_runs
    result = StatusPage(runs)
    with fleet(children, f"status-{runs}", split_runs(runs), deadline) as f:
        exporter = f.start_exporter("status", deadline, interval=3600, discovery=3600)
        result.ready_s = exporter.ready_s
        log(f"{runs:,} runs: first poll cycle {exporter.ready_s:.1f} s; loading the status page")
        for path in PAGES:
            timing = PageTiming(path)
            measure_page(exporter.url, timing, plan.status_requests, deadline)
            result.pages[path] = timing
            log(
                f"  {path}: first {timing.first_ms:.1f} ms, p99 "
                f"{percentile(timing.ttfb_ms, 99):.1f} ms, {timing.plain_bytes / 1024:.0f} KB "
                f"({timing.gzip_bytes / 1024:.0f} KB gzipped)"
            )
    return result


def status_page_rows(result: StatusPage) -> Iterator[Row]:
    for path, timing in result.pages.items():
        judged = path == PAGES[0]
        p50, p99 = percentile(timing.ttfb_ms, 50), percentile(timing.ttfb_ms, 99)
        yield exporter_row(
            "9",
            f"status page {path} at {result.runs:,} runs, gzip: time to first byte, p50 / p99 "
            f"of {len(timing.ttfb_ms)} requests (the first after /readyz apart)"
            + ("" if judged else ", for information"),
            f"{fmt_ms(p50)} / {fmt_ms(p99)} (first {fmt_ms(timing.first_ms)})"
            + (f", {timing.failures} failed" if timing.failures else ""),
            f"{p99 / MAX_TTFB_MS:.2f}x target" if judged else "-",
            f"p99 ≤ {MAX_TTFB_MS:g} ms" if judged else "-",
            verdict(p99 <= MAX_TTFB_MS and not timing.failures) if judged else "-",
        )
        size = timing.plain_bytes
        yield exporter_row(
            "9",
            f"status page {path} at {result.runs:,} runs: body size plain (gzip)"
            + ("" if judged else ", for information"),
            f"{size / 1024:,.0f} KB ({timing.gzip_bytes / 1024:,.0f} KB)",
            f"{size / MAX_PAGE_BYTES:.2f}x target" if judged else "-",
            "≤ 1 MB" if judged else "-",
            verdict(size <= MAX_PAGE_BYTES) if judged else "-",
        )
