"""Measurement 6: the exporter's CPU per upstream request, in poll cycles with nothing new.

An exporter polls simulators whose clock runs at a millionth of real time, so every cycle after the
first asks each active run for its steps and finds nothing new. After ``/readyz`` and one more
complete cycle of every provider, nothing touches the exporter for the window: its utime +
stime over the window, divided by the requests both simulators served in it, is what one
request costs the exporter (sending, parsing, judging, and its share of the snapshot that each
cycle publishes). The window is a whole number of poll intervals and starts just after cycle
ends, so it holds whole cycles and no cycle is cut in two.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from commands import METRICS_PATH
from cycles import Watch
from fleet import Exporter, Fleet
from harness import Deadline, cpu_seconds, log
from plan import Plan
from table import Row, exporter_row, verdict

#: The target: exporter CPU per upstream request.
MAX_MS_PER_REQUEST = 0.5


@dataclass(frozen=True)
class PerRequest:
    providers: tuple[str, ...]
    runs: int
    window: float
    cpu_s: float
    requests: int

    @property
    def ms_per_request(self) -> float | None:
        return 1000.0 * self.cpu_s / self.requests if self.requests else None


def whole_intervals(window: float, interval: float) -> float:
    """The window rounded to a whole number of poll intervals (at least one)."""
    return max(1, round(window / interval)) * interval


def served(fleet: Fleet, providers: tuple[str, ...]) -> int:
    total = 0
    for provider in providers:
        total += int(str(fleet.requests(provider)["total"]))
    return total


def measure_window(
    fleet: Fleet,
    exporter: Exporter,
    providers: tuple[str, ...],
    plan: Plan,
    deadline: Deadline,
) -> PerRequest:
    """One more complete cycle of every provider, then the window with nobody scraping."""
    watch = Watch(fleet, exporter, METRICS_PATH, providers)
    watch.start()
    label = "+".join(providers)
    watch.run_until(
        1,
        deadline,
        limit=4 * plan.per_request_interval + 60,
        tolerance=2.0,
        what=f"per-request cycles ({label})",
    )
    window = whole_intervals(plan.per_request_window, plan.per_request_interval)
    deadline.check(window + 10, f"the CPU-per-request window ({label})")
    cpu_before, requests_before = cpu_seconds(exporter.pid), served(fleet, providers)
    started = time.monotonic()
    time.sleep(window)
    cpu = cpu_seconds(exporter.pid) - cpu_before
    requests = served(fleet, providers) - requests_before
    elapsed = time.monotonic() - started
    if exporter.proc.poll() is not None:
        raise RuntimeError(f"exporter ({label}) exited during the CPU-per-request window")
    result = PerRequest(providers, sum(fleet.runs[p] for p in providers), elapsed, cpu, requests)
    log(
        f"CPU per request ({label}): {cpu:.2f} s CPU for {requests} requests in "
        f"{elapsed:.0f} s = {result.ms_per_request or 0:.3f} ms"
    )
    return result


def bench_alone(fleet: Fleet, plan: Plan, deadline: Deadline) -> list[PerRequest]:
    """The window again with an exporter of one provider at a time, on the same simulators."""
    results = []
    for provider in fleet.sims:
        exporter = fleet.start_exporter(
            f"per-request-{provider}",
            deadline,
            providers=(provider,),
            interval=plan.per_request_interval,
            discovery=3600,
        )
        try:
            results.append(measure_window(fleet, exporter, (provider,), plan, deadline))
        finally:
            fleet.stop(exporter)
    return results


def per_request_rows(results: list[PerRequest], plan: Plan) -> Iterator[Row]:
    for result in results:
        ms = result.ms_per_request
        label = " + ".join(result.providers) if len(result.providers) > 1 else result.providers[0]
        yield exporter_row(
            "6",
            f"exporter CPU per upstream request, {label}, {result.runs:,} runs, poll every "
            f"{plan.per_request_interval:g} s with nothing new, no scrapes, "
            f"{result.window:.0f} s window",
            "-"
            if ms is None
            else f"{ms:.3f} ms ({result.cpu_s:.2f} s CPU, {result.requests:,} requests)",
            "-" if ms is None else f"{ms / MAX_MS_PER_REQUEST:.2f}x target",
            f"≤ {MAX_MS_PER_REQUEST:g} ms",
            "-" if ms is None else verdict(ms <= MAX_MS_PER_REQUEST),
        )
