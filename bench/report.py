"""The table of one run, each number next to its target, and the header that records it: date,
command line, machine, software and the exporter's commit, since the numbers belong to that
code on that machine.
"""

from __future__ import annotations

import itertools
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from cpu import CpuResult
from harness import BENCH, MB
from plan import MEASUREMENTS, Plan
from poll import PollRun
from scrape import CELLS, SERVERS, ScrapeSize, cell_label
from table import Row, fmt_ms, fmt_ratio, ratio, verdict
from wrk import WRK_CONNECTIONS, WRK_THREADS, fmt_rps, wrk_version

# Targets.
MIN_VS_STATIC = 0.5
MIN_VS_CLIENT_PYTHON = 20.0
MAX_P99_VS_STATIC = 2.0
#: From this many runs on, /metrics must come closer to static: the targets at 10,000 runs.
LARGE_RUNS = 10_000
MIN_VS_STATIC_LARGE = 0.8
MAX_P99_VS_STATIC_LARGE = 1.5
MAX_POLL_VS_BOUND = 1.25
RSS_TARGETS_MB = {100: 60.0, 10_000: 150.0}
MAX_CPU_PERCENT = 1.0


def scrape_targets(runs: int) -> tuple[float, float]:
    """The least throughput against static, and the most p99 against static's, at ``runs``."""
    if runs >= LARGE_RUNS:
        return MIN_VS_STATIC_LARGE, MAX_P99_VS_STATIC_LARGE
    return MIN_VS_STATIC, MAX_P99_VS_STATIC


def runs_label(size: ScrapeSize) -> str:
    """``10,000 runs (5,000 cohere + 5,000 together)``."""
    split = " + ".join(f"{n:,} {provider}" for provider, n in size.runs.items())
    return f"{size.models:,} runs" + (f" ({split})" if split else "")


def scrape_rows(size: ScrapeSize) -> Iterator[Row]:
    min_vs_static, max_p99 = scrape_targets(size.models)
    for fmt, use_gzip in CELLS:
        body = size.bodies[fmt]
        head = (
            f"/metrics, {runs_label(size)}, {body.series:,} series, "
            f"{body.plain_bytes / MB:.2f} MB, {body.gzip_bytes / MB:.2f} MB gzipped"
        )
        enc = cell_label(fmt, use_gzip)
        exp, cp, st = (size.results[(s, fmt, use_gzip)] for s in SERVERS)
        vs_static = ratio(exp.rps, st.rps)
        vs_cp = ratio(exp.rps, cp.rps)
        failures = [
            name
            for name, value, floor in (
                ("static", vs_static, min_vs_static),
                ("client_python", vs_cp, MIN_VS_CLIENT_PYTHON),
            )
            if value is None or value < floor
        ]
        yield (
            "1",
            f"{head}, {enc}: requests/s",
            fmt_rps(exp),
            fmt_rps(cp),
            fmt_rps(st),
            f"{fmt_ratio(vs_static or 0)} static, {fmt_ratio(vs_cp or 0)} client_python",
            f"≥ {min_vs_static:g}x static, ≥ {MIN_VS_CLIENT_PYTHON:g}x client_python",
            verdict(not failures) + (f" ({', '.join(failures)})" if failures else ""),
        )
        yield (
            "1",
            f"{size.models:,} runs, {enc}: p50",
            fmt_ms(exp.p50_ms),
            fmt_ms(cp.p50_ms),
            fmt_ms(st.p50_ms),
            "",
            "",
            "",
        )
        p99 = ratio(exp.p99_ms, st.p99_ms)
        yield (
            "1",
            f"{size.models:,} runs, {enc}: p99",
            fmt_ms(exp.p99_ms),
            fmt_ms(cp.p99_ms),
            fmt_ms(st.p99_ms),
            "-" if p99 is None else f"{fmt_ratio(p99)} static",
            f"≤ {max_p99:g}x static",
            "-" if p99 is None else verdict(p99 <= max_p99),
        )


def poll_rows(run: PollRun) -> Iterator[Row]:
    c = run.concurrency
    steady = run.steady
    durations = [cycle.duration for cycle in steady]
    median = statistics.median(durations)
    worst = max(durations)
    yield (
        "2",
        f"poll cycle, {run.models:,} models ({run.active} active), {run.latency_ms:g} ms per "
        f"request, C={c}: median (max) of {len(steady)} cycles with nothing new",
        f"{median:.3f} s ({worst:.3f} s)",
        "-",
        "-",
        f"{median / run.bound:.2f}x ({worst / run.bound:.2f}x) bound "
        f"⌈{run.active}/{c}⌉x{run.latency_ms:g} ms = {run.bound:.2f} s",
        f"≤ {MAX_POLL_VS_BOUND:g}x bound",
        verdict(median / run.bound <= MAX_POLL_VS_BOUND),
    )
    per_cycle = sorted({cycle.step_requests for cycle in run.cycles})
    others = sum(cycle.other_requests for cycle in run.cycles) + sum(
        cycle.list_requests for cycle in steady
    )
    each_once = all(cycle.each_active_once for cycle in run.cycles)
    ok = per_cycle == [run.active] and others == 0 and each_once
    yield (
        "3",
        f"API requests per cycle with nothing new, C={c} ({len(run.cycles)} cycles)",
        ", ".join(map(str, per_cycle)) + (f" (+{others} other)" if others else ""),
        "-",
        "-",
        f"{run.active} active models" + ("; each once" if each_once else "; NOT each once"),
        "== active models",
        verdict(ok),
    )
    gaps = [b - a for a, b in itertools.pairwise(run.walks)]
    pages = sorted({cycle.list_requests for cycle in run.cycles if cycle.list_requests})
    # Due once a discovery interval has passed since the last walk ended, so a walk starts on
    # the first poll slot after that: between D and D + one poll interval (+ detection slack).
    slack = 0.5
    walk_ok = (
        pages == [run.list_pages]
        and bool(gaps)
        and all(run.discovery - slack <= g <= run.discovery + run.interval + slack for g in gaps)
    )
    yield (
        "3",
        f"model-list walks, C={c}: requests per walk; seconds between walk starts",
        f"{', '.join(map(str, pages))} requests; {', '.join(f'{g:.1f}' for g in gaps)} s apart",
        "-",
        "-",
        f"{run.list_pages} pages; discovery interval {run.discovery:g} s, poll {run.interval:g} s",
        "1 walk per discovery interval (+ at most 1 poll interval)",
        verdict(walk_ok),
    )
    new = sum(cycle.new_connections for cycle in run.cycles)
    yield (
        "3",
        f"TCP connections the simulator accepted, C={c}",
        f"{run.first_cycle_connections} in the first cycle, +{new} in the next {len(run.cycles)}",
        "-",
        "-",
        f"{run.first_cycle_connections / c:.2f} per concurrent request",
        "no new connection after the first cycle",
        verdict(new == 0),
    )


def memory_rows(sizes: list[ScrapeSize]) -> Iterator[Row]:
    for size in sizes:
        target = RSS_TARGETS_MB.get(size.models)
        mb = {k: v / 1024 for k, v in size.peak_rss_kb.items()}
        yield (
            "4",
            f"peak RSS (VmHWM), {runs_label(size)}, history on, after the scrapes above",
            f"{mb['exporter']:.1f} MB ({size.exporter_rss_before_kb / 1024:.1f} MB before the "
            "scrapes)",
            f"{mb['client_python']:.1f} MB",
            f"{mb['static']:.1f} MB",
            "-" if target is None else f"{mb['exporter'] / target:.2f}x target",
            "-" if target is None else f"≤ {target:g} MB",
            "-" if target is None else verdict(mb["exporter"] <= target),
        )


def cpu_row(plan: Plan, cpu: CpuResult) -> Row:
    return (
        "5",
        f"CPU, {plan.cpu_models} models, poll every {plan.cpu_poll_interval:g} s, scraped every "
        f"{plan.cpu_scrape_interval:g} s (gzip, OpenMetrics), {cpu.window:.0f} s window",
        f"{cpu.percent:.3f} % of one core ({cpu.cpu_s:.2f} s CPU, {cpu.scrapes} scrapes"
        + (f", {cpu.scrape_failures} failed" if cpu.scrape_failures else "")
        + ")",
        "-",
        "-",
        "-",
        f"< {MAX_CPU_PERCENT:g} %",
        verdict(cpu.percent < MAX_CPU_PERCENT and not cpu.scrape_failures),
    )


# --------------------------------------------------------------------------- the recorded header


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def exporter_revision() -> str:
    root = BENCH.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "exporter"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" with uncommitted changes in exporter/" if dirty else "")


def run_summary(plan: Plan, elapsed: float) -> str:
    """What ran and how long: only the parts of the plan of the measurements that ran."""
    parts = []
    if plan.runs("scrape"):
        sizes = ", ".join(f"{n:,}" for n in plan.sizes)
        parts.append(
            f"/metrics at {sizes} runs (half Cohere, half Together), wrk -t{WRK_THREADS} "
            f"-c{WRK_CONNECTIONS} for {plan.wrk_seconds} s per cell after a "
            f"{plan.warmup_seconds} s warm-up"
        )
    if plan.runs("poll"):
        parts.append(f"poll cycles at {plan.poll_models:,} models")
    if plan.runs("cpu"):
        parts.append(f"CPU window {plan.cpu_window:.0f} s")
    if plan.runs("per-request"):
        parts.append(f"CPU-per-request windows of {plan.per_request_window:.0f} s")
    if plan.runs("scaling"):
        sizes = ", ".join(f"{n:,}" for n in plan.scaling_sizes)
        parts.append(f"scaling at {sizes} runs, {plan.scaling_cycles} cycles each")
    if plan.runs("first-scrape"):
        parts.append(
            f"first scrapes at {plan.first_scrape_runs:,} runs ({plan.first_scrape_samples} wanted)"
        )
    parts.append(f"whole run {elapsed / 60:.1f} min")
    return "; ".join(parts)


def report(
    plan: Plan,
    table: str,
    started: datetime,
    elapsed: float,
    revision: str,
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """The recorded entry: header, the table, and any further table under its own title."""
    versions = ", ".join(f"{name} {version(name)}" for name in ("aiohttp", "prometheus_client"))
    selected = ", ".join(plan.only)
    everything = plan.only == tuple(MEASUREMENTS)
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC{' (--quick)' if plan.quick else ''}",
        "",
        f"- command: `{shlex.join(sys.orig_argv)}`",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, Python "
        f"{platform.python_version()}, Linux {platform.release()}",
        f"- software: exporter at {revision}, {wrk_version()}, {versions}",
        f"- measurements: {'all' if everything else selected + ' (--only)'}",
        f"- run: {run_summary(plan, elapsed)}",
        "",
        table,
        "",
    ]
    for title, text in extra:
        lines += [f"### {title}", "", text, ""]
    return "\n".join(lines)


def append_results(out: Path, text: str) -> None:
    if not out.exists():
        out.write_text(
            "# Benchmark results\n\nAppended by `bench/run.py`, newest last; "
            "see `bench/README.md` for what each row means.\n\n",
            encoding="utf-8",
        )
    with out.open("a", encoding="utf-8") as handle:
        handle.write("\n" + text)
