"""Measurements 1 and 4: ``/metrics`` of the exporter and of both baselines under ``wrk``, at
one number of runs (half Cohere, half Together AI, one exporter polling both), in every format
and encoding, and the peak memory that serving cost.

Each format is asked for the way its clients ask: the classic text format with no ``Accept``
header, OpenMetrics with the ``Accept`` header Prometheus 3 sends, so the OpenMetrics cells
measure ``/metrics`` as a default Prometheus scrapes it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from commands import METRICS_PATH, PYTHON
from fleet import Fleet
from harness import (
    BENCH,
    MB,
    Deadline,
    count_series,
    free_port,
    http,
    log,
    proc_status_kb,
    wait_all_idle,
    wait_ok,
)
from plan import Plan
from table import fmt_ms
from wrk import WrkResult, run_wrk

from exporter.encoding import FORMATS, Format
from exporter.exposition import PROMETHEUS_3_ACCEPT

SERVERS = ("exporter", "client_python", "static")
#: What a client of each format sends: nothing for the classic text format (the exporter's
#: answer to a bare request), Prometheus 3's own header for OpenMetrics.
ACCEPT: dict[Format, dict[str, str]] = {
    "text": {},
    "openmetrics": {"Accept": PROMETHEUS_3_ACCEPT},
}
#: Every (format, gzip) combination a scrape may ask for, each one measured on every server.
CELLS: tuple[tuple[Format, bool], ...] = tuple(
    (fmt, use_gzip) for fmt in FORMATS for use_gzip in (False, True)
)
_FORMAT_NAMES: dict[Format, str] = {"text": "", "openmetrics": "OpenMetrics "}


def cell_label(fmt: Format, use_gzip: bool) -> str:
    """The cell's name in the table: plain or gzip for the text format, as recorded before
    OpenMetrics was measured, so old and new results read alike; OpenMetrics plain or gzip."""
    return _FORMAT_NAMES[fmt] + ("gzip" if use_gzip else "plain")


def request_headers(fmt: Format, use_gzip: bool) -> dict[str, str]:
    headers = dict(ACCEPT[fmt])
    if use_gzip:
        headers["Accept-Encoding"] = "gzip"
    return headers


@dataclass(frozen=True)
class Body:
    """One format of the exporter's ``/metrics`` as captured after its first poll cycle."""

    series: int
    plain_bytes: int
    gzip_bytes: int
    content_type: str
    source: Path  # the plain bytes, handed to the baselines


@dataclass
class ScrapeSize:
    models: int
    runs: dict[str, int] = field(default_factory=dict)  # provider → runs
    first_cycle_s: float = 0.0
    bodies: dict[Format, Body] = field(default_factory=dict)
    results: dict[tuple[str, Format, bool], WrkResult] = field(default_factory=dict)
    peak_rss_kb: dict[str, int] = field(default_factory=dict)
    exporter_rss_before_kb: int = 0


def capture(exp_url: str, logdir: Path, models: int, fmt: Format) -> Body:
    """The exporter's body in ``fmt``, kept on disk for the baselines to serve."""
    answer = http(f"{exp_url}{METRICS_PATH}", headers=request_headers(fmt, False))
    if answer.status != 200:
        raise RuntimeError(f"exporter {METRICS_PATH} ({fmt}) answered {answer.status}")
    content_type = answer.headers.get("Content-Type")
    if not content_type:
        raise RuntimeError(f"exporter {METRICS_PATH} ({fmt}) answered without a Content-Type")
    zipped = http(f"{exp_url}{METRICS_PATH}", headers=request_headers(fmt, True), decode_gzip=False)
    source = logdir / f"exposition-{models}.{fmt}"
    source.write_bytes(answer.body)
    return Body(count_series(answer.body), len(answer.body), len(zipped.body), content_type, source)


def baseline_argv(kind: str, port: int, bodies: dict[Format, Body]) -> list[str]:
    text, openmetrics = bodies["text"], bodies["openmetrics"]
    return [
        PYTHON,
        str(BENCH / "baselines.py"),
        kind,
        "--port",
        str(port),
        "--path",
        METRICS_PATH,
        "--source",
        str(text.source),
        "--content-type",
        text.content_type,
        "--openmetrics-source",
        str(openmetrics.source),
        "--openmetrics-content-type",
        openmetrics.content_type,
    ]


def check_baseline(kind: str, url: str, result: ScrapeSize) -> None:
    """Warn when a baseline serves other series than the exporter: the ratios would be unfair."""
    for fmt in FORMATS:
        served = count_series(http(url, headers=ACCEPT[fmt], timeout=120).body)
        if served != result.bodies[fmt].series:
            log(
                f"warning: {kind} serves {served} series as {fmt}, "
                f"the exporter {result.bodies[fmt].series}"
            )


def load_all(
    result: ScrapeSize,
    urls: dict[str, str],
    pids: dict[str, int],
    plan: Plan,
    deadline: Deadline,
) -> None:
    """Every server in every cell: a thrown-away warm-up, then the measured run, each after all
    servers have gone idle."""
    for server in SERVERS:
        for fmt, use_gzip in CELLS:
            headers = request_headers(fmt, use_gzip)
            wait_all_idle(pids.values(), deadline)
            run_wrk(urls[server], plan.warmup_seconds, headers, deadline)
            wait_all_idle(pids.values(), deadline)
            measured = run_wrk(urls[server], plan.wrk_seconds, headers, deadline)
            result.results[(server, fmt, use_gzip)] = measured
            log(
                f"  {server:<13} {cell_label(fmt, use_gzip):<17} "
                f"{measured.rps:9.1f} req/s  p50 {fmt_ms(measured.p50_ms):>9}  "
                f"p99 {fmt_ms(measured.p99_ms):>9}"
            )


def bench_scrape(f: Fleet, plan: Plan, deadline: Deadline) -> ScrapeSize:
    """Measurements 1 and 4 at one size: an exporter polling the fleet's simulators and both
    baselines under ``wrk``."""
    models = f.total_runs
    result = ScrapeSize(models, dict(f.runs))
    cp_port, static_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # One poll cycle an hour: the data stays put, and no cycle competes with a wrk run.
        exporter = f.start_exporter("scrape", deadline, interval=3600, discovery=3600)
        procs.append(exporter.proc)
        exp_url = exporter.url
        result.first_cycle_s = exporter.ready_s
        result.bodies = {fmt: capture(exp_url, f.children.logdir, models, fmt) for fmt in FORMATS}
        baseline: dict[str, subprocess.Popen[bytes]] = {}
        for kind, port in (("client_python", cp_port), ("static", static_port)):
            baseline[kind] = f.children.start(
                f"{kind}-{models}", baseline_argv(kind, port, result.bodies)
            )
            procs.append(baseline[kind])
        urls = {
            "exporter": f"{exp_url}{METRICS_PATH}",
            "client_python": f"http://127.0.0.1:{cp_port}{METRICS_PATH}",
            "static": f"http://127.0.0.1:{static_port}{METRICS_PATH}",
        }
        pids = {"exporter": exporter.pid} | {k: p.pid for k, p in baseline.items()}
        result.exporter_rss_before_kb = proc_status_kb(exporter.pid, "VmHWM")
        for kind, proc in baseline.items():
            wait_ok(urls[kind], proc, deadline, limit=120, what=f"baseline {kind}")
            check_baseline(kind, urls[kind], result)
        for fmt, body in result.bodies.items():
            log(
                f"{models} runs, {fmt}: {body.series} series, {body.plain_bytes / MB:.1f} MB "
                f"({body.gzip_bytes / MB:.2f} MB gzipped)"
            )
        log(f"{models} runs: first poll cycle {result.first_cycle_s:.1f} s")
        load_all(result, urls, pids, plan, deadline)
        for server, pid in pids.items():
            result.peak_rss_kb[server] = proc_status_kb(pid, "VmHWM")
        return result
    finally:
        for proc in reversed(procs):
            f.children.stop(proc)
