"""How big and how long each measurement of ``bench/run.py`` is, for a full and a quick run,
and which measurements a run makes (``--only``).

One frozen value handed to every measurement, so ``--quick`` changes sizes and durations in one
place and the recorded header can state exactly what ran.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from commands import setting_default

#: Every measurement by its short name (``--only``), in the order a run makes them, with the
#: numbers of the table rows it fills.
MEASUREMENTS: dict[str, str] = {
    "scrape": "1 and 4: /metrics under wrk beside two baselines, and peak RSS",
    "poll": "2 and 3: poll-cycle time against the latency bound, requests and connections",
    "cpu": "5: CPU at rest, 100 runs polled every 30 s and scraped every 15 s",
    "per-request": "6: exporter CPU per upstream request, mixed and each provider alone",
    "scaling": "7: RSS, CPU and requests per cycle at each size, and the requests' slope",
    "first-scrape": "8: the first scrape after a new snapshot against cached ones",
    "status-page": "9: time to first byte and size of the status page",
    "long-job": "10: a Together job of 50,000 steps: first poll and backfill",
}


def parse_only(text: str) -> tuple[str, ...]:
    """``--only`` as measurement names in run order; unknown names are an error."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown or not names:
        raise ValueError(
            f"unknown measurement {', '.join(unknown) or '(none)'}; "
            f"known: {', '.join(MEASUREMENTS)}"
        )
    return tuple(name for name in MEASUREMENTS if name in names)


@dataclass(frozen=True)
class Plan:
    quick: bool
    only: tuple[str, ...]
    sizes: tuple[int, ...]
    wrk_seconds: int
    warmup_seconds: int
    poll_models: int
    latency_ms: float
    concurrencies: tuple[int, ...]
    steady_cycles: int
    cpu_models: int
    cpu_poll_interval: float
    cpu_discovery_interval: float
    cpu_concurrency: int
    cpu_scrape_interval: float
    cpu_window: float
    per_request_runs: int
    per_request_interval: float
    per_request_window: float
    scaling_sizes: tuple[int, ...]
    scaling_cycles: int
    first_scrape_runs: int
    first_scrape_samples: int
    first_scrape_period: float
    status_runs: int
    status_requests: int
    deadline: float

    def runs(self, name: str) -> bool:
        return name in self.only


#: The CPU probe runs the exporter as deployed by default, except for the poll interval.
_CPU_DISCOVERY: float = setting_default("poll_discovery_interval")
_CPU_CONCURRENCY: int = setting_default("poll_concurrency")


def make_plan(
    quick: bool,
    sizes: tuple[int, ...] | None,
    deadline: float | None,
    only: tuple[str, ...] | None = None,
) -> Plan:
    full = Plan(
        quick=False,
        only=only or tuple(MEASUREMENTS),
        sizes=(100, 1000, 10_000),
        wrk_seconds=20,
        warmup_seconds=2,
        poll_models=1000,
        latency_ms=50.0,
        concurrencies=(8, 32),
        steady_cycles=4,
        cpu_models=100,
        cpu_poll_interval=30.0,
        cpu_discovery_interval=_CPU_DISCOVERY,
        cpu_concurrency=_CPU_CONCURRENCY,
        cpu_scrape_interval=15.0,
        cpu_window=300.0,
        per_request_runs=1000,
        per_request_interval=5.0,
        per_request_window=60.0,
        scaling_sizes=(100, 1000, 10_000),
        scaling_cycles=3,
        first_scrape_runs=10_000,
        first_scrape_samples=20,
        first_scrape_period=0.15,
        status_runs=2000,
        status_requests=50,
        deadline=3600.0,
    )
    if quick:
        full = replace(
            full,
            quick=True,
            sizes=(100, 1000),
            wrk_seconds=3,
            warmup_seconds=1,
            poll_models=300,
            steady_cycles=2,
            cpu_window=60.0,
            per_request_window=20.0,
            scaling_sizes=(100, 1000),
            first_scrape_runs=1000,
            first_scrape_samples=8,
            deadline=1200.0,
        )
    return replace(full, sizes=sizes or full.sizes, deadline=deadline or full.deadline)
