"""Measurements 6, 7 and 8 on exporters that cycle: CPU per upstream request, how memory, CPU
and requests per cycle grow with the number of runs, and the first scrapes after new snapshots.

For each size (half the runs Cohere, half Together AI, clocks at a millionth of real time so every
cycle after the first finds nothing new), one exporter polls both simulators on a poll interval
that leaves a gap after each cycle, with a discovery interval longer than the measurement (so
no cycle walks the run lists: walks are left out, and any request other than a step read is
reported). The first complete cycle after ``/readyz`` settles and is not counted; the next
``scaling_cycles`` are. At the size of measurement 6 the same simulators serve its windows
first: the mixed exporter's, then one exporter per provider. At the size of measurement 8 the
exporter goes on cycling after its counted cycles while the first scrapes are timed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from commands import METRICS_PATH
from cycles import METRICS_KIND, Cycle, Watch, countable, delta, previous_counts, runs_delta
from first_scrape import FirstScrapes, measure_first_scrapes
from fleet import Exporter, Fleet
from harness import Deadline, log, proc_status_kb
from per_request import PerRequest, bench_alone, measure_window
from plan import Plan
from table import Row, exporter_row, fmt_mb, markdown, verdict

#: Seconds of poll interval per run: a cycle with nothing new at 10,000 runs took 4-7 s on two
#: shared cores (up to 20 s under load), so 20 s leave it a gap; never under 5 s.
INTERVAL_PER_RUN = 0.002
MIN_INTERVAL = 5.0
#: Publications whose implied starts differ by less than this belong to one cycle.
TOLERANCE = 2.0
#: How far the slope of requests against active runs may be from 1.
SLOPE_TOLERANCE = 0.01


def scaling_interval(runs: int) -> float:
    return max(MIN_INTERVAL, round(INTERVAL_PER_RUN * runs))


@dataclass
class ProviderCycles:
    active: int
    requests: list[int] = field(default_factory=list)
    other: list[int] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    each_once: bool = True
    overlapped: int = 0

    @property
    def per_cycle(self) -> float:
        return statistics.median(self.requests) if self.requests else 0.0


@dataclass
class ScalingSize:
    runs: dict[str, int]
    interval: float
    ready_s: float
    providers: dict[str, ProviderCycles] = field(default_factory=dict)
    cpu_per_cycle: float = 0.0
    rss_kb: int = 0
    hwm_kb: int = 0

    @property
    def total(self) -> int:
        return sum(self.runs.values())


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through the points."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ValueError("need at least two distinct x values")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def count_cycles(
    cycles: list[Cycle],
    baseline: Mapping[str, Mapping[str, Any]],
    provider: str,
    active: set[str],
    settle: int,
) -> ProviderCycles:
    """The provider's cycles after the first ``settle``: requests, other requests, durations."""
    found = ProviderCycles(len(active))
    expected = dict.fromkeys(active, 1)
    for cycle in [c for c in cycles if c.provider == provider][settle:]:
        if not countable(cycle, cycles):
            found.overlapped += 1
            continue
        before = previous_counts(cycle, cycles, baseline)
        steps = delta(cycle.end.counts, before, METRICS_KIND[provider])
        found.requests.append(steps)
        found.other.append(delta(cycle.end.counts, before, "total") - steps)
        found.durations.append(cycle.duration)
        found.each_once &= runs_delta(cycle.end.counts, before) == expected
    return found


def cpu_per_cycle(
    cycles: list[Cycle], providers: dict[str, ProviderCycles], settle: int, baseline_cpu: float
) -> float:
    """Exporter CPU between the ends of the slowest provider's counted cycles, per cycle: each
    poll interval holds one cycle of every provider and the snapshots they publish. Counting
    starts at the end of the last settling cycle (or at ``baseline_cpu``, without one)."""
    anchor = max(providers, key=lambda p: statistics.median(providers[p].durations or [0.0]))
    ends = [c.end for c in cycles if c.provider == anchor]
    counted = ends[settle:]
    if not counted:
        return 0.0
    start = ends[settle - 1].cpu_s if settle else baseline_cpu
    return (counted[-1].cpu_s - start) / len(counted)


def observe_size(
    f: Fleet, exporter: Exporter, interval: float, plan: Plan, deadline: Deadline
) -> ScalingSize:
    active = f.active()
    result = ScalingSize(dict(f.runs), interval, exporter.ready_s)
    watch = Watch(f, exporter, METRICS_PATH, tuple(f.sims))
    watch.start()
    settle = 1
    enough = settle + plan.scaling_cycles
    cycles = watch.run_until(
        enough,
        deadline,
        limit=(enough + 2) * interval * 2 + 60,
        tolerance=TOLERANCE,
        what=f"cycles at {f.total_runs:,} runs",
    )
    for provider in f.sims:
        result.providers[provider] = count_cycles(
            cycles, watch.baseline, provider, active[provider], settle
        )
    result.cpu_per_cycle = cpu_per_cycle(cycles, result.providers, settle, watch.baseline_cpu)
    result.rss_kb = proc_status_kb(exporter.pid, "VmRSS")
    result.hwm_kb = proc_status_kb(exporter.pid, "VmHWM")
    return result


@dataclass
class CycleResults:
    """What the cycling exporters of every size found."""

    sizes: list[ScalingSize] = field(default_factory=list)
    per_request: list[PerRequest] = field(default_factory=list)
    first_scrapes: FirstScrapes | None = None


def cycle_sizes(plan: Plan) -> set[int]:
    """The sizes at which a cycling exporter is needed by the measurements that run."""
    sizes = set(plan.scaling_sizes) if plan.runs("scaling") else set()
    if plan.runs("per-request"):
        sizes.add(plan.per_request_runs)
    if plan.runs("first-scrape"):
        sizes.add(plan.first_scrape_runs)
    return sizes


def bench_cycles(f: Fleet, plan: Plan, deadline: Deadline, out: CycleResults) -> None:
    """At the fleet's size: the CPU-per-request window, the counted cycles, the first scrapes,
    each where the plan wants it, on one cycling exporter; then the exporters of one provider
    each for the CPU-per-request windows."""
    runs = f.total_runs
    windows = plan.runs("per-request") and runs == plan.per_request_runs
    interval = plan.per_request_interval if windows else scaling_interval(runs)
    exporter = f.start_exporter("cycles", deadline, interval=interval, discovery=3600)
    log(f"{runs:,} runs: first poll cycle {exporter.ready_s:.1f} s, polling every {interval:g} s")
    try:
        if windows:
            out.per_request.append(measure_window(f, exporter, tuple(f.sims), plan, deadline))
        if plan.runs("scaling") and runs in plan.scaling_sizes:
            out.sizes.append(observe_size(f, exporter, interval, plan, deadline))
        if plan.runs("first-scrape") and runs == plan.first_scrape_runs:
            out.first_scrapes = measure_first_scrapes(exporter, runs, interval, plan, deadline)
    finally:
        f.stop(exporter)
    if windows:
        out.per_request.extend(bench_alone(f, plan, deadline))


# --------------------------------------------------------------------------- rows and table


def _requests_text(cycles: ProviderCycles) -> str:
    if not cycles.requests:
        return "-"
    low, high = min(cycles.requests), max(cycles.requests)
    text = f"{low}" if low == high else f"{low}-{high}"
    others = sum(cycles.other)
    return text + (f" (+{others} other)" if others else "")


def scaling_table(sizes: list[ScalingSize]) -> str:
    """The scaling table, ready to paste into the README."""
    providers = sorted({p for s in sizes for p in s.providers})
    header = [
        "runs",
        "poll interval",
        "first cycle",
        "RSS after the cycles",
        "peak RSS (VmHWM)",
        "exporter CPU per cycle",
        *(f"{p}: active runs / requests per cycle" for p in providers),
        *(f"{p}: cycle (median)" for p in providers),
    ]
    rows = []
    for size in sizes:
        cells = [
            " + ".join(f"{size.runs[p]:,}" for p in providers),
            f"{size.interval:g} s",
            f"{size.ready_s:.1f} s",
            fmt_mb(size.rss_kb),
            fmt_mb(size.hwm_kb),
            f"{size.cpu_per_cycle:.3f} s",
        ]
        for p in providers:
            cycles = size.providers[p]
            cells.append(f"{cycles.active:,} / {_requests_text(cycles)}")
        for p in providers:
            durations = size.providers[p].durations
            cells.append(f"{statistics.median(durations):.2f} s" if durations else "-")
        rows.append(cells)
    slopes = ["least-squares slope", "", "", "", "", ""]
    for p in providers:
        fit = slope_of(sizes, p)
        slopes.append("-" if fit is None else f"{fit[0]:.3f} (intercept {fit[1]:+.1f})")
    slopes += [""] * len(providers)
    rows.append(slopes)
    return markdown(header, rows)


def slope_of(sizes: list[ScalingSize], provider: str) -> tuple[float, float] | None:
    points = [
        (float(s.providers[provider].active), s.providers[provider].per_cycle)
        for s in sizes
        if provider in s.providers and s.providers[provider].requests
    ]
    if len({x for x, _ in points}) < 2:
        return None
    return least_squares([x for x, _ in points], [y for _, y in points])


def scaling_rows(sizes: list[ScalingSize], plan: Plan) -> Iterator[Row]:
    """Per provider: the slope of requests per cycle against active runs, and whether every
    counted cycle asked each active run exactly once."""
    label = ", ".join(f"{s.total:,}" for s in sizes)
    for provider in sorted({p for s in sizes for p in s.providers}):
        fit = slope_of(sizes, provider)
        once = all(s.providers[provider].each_once for s in sizes)
        overlapped = sum(s.providers[provider].overlapped for s in sizes)
        others = sum(sum(s.providers[provider].other) for s in sizes)
        notes = [] if once else ["NOT each active run once"]
        if overlapped:
            notes.append(f"{overlapped} cycles not counted (counters read while another ran)")
        if others:
            notes.append(f"{others} other requests")
        yield exporter_row(
            "7",
            f"{provider}: step requests per cycle with nothing new against active runs, "
            f"least-squares slope over {label} runs ({plan.scaling_cycles} cycles each)",
            "-" if fit is None else f"{fit[0]:.3f} (intercept {fit[1]:+.1f})",
            "; ".join(notes) or "each active run once per cycle",
            f"slope 1 (± {SLOPE_TOLERANCE:g}), each active run once",
            "-"
            if fit is None
            else verdict(abs(fit[0] - 1) <= SLOPE_TOLERANCE and once and not others),
        )
