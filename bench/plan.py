"""How big and how long each measurement of ``bench/run.py`` is, for a full and a quick run.

One frozen value handed to every measurement, so ``--quick`` changes sizes and durations in one
place and the recorded header can state exactly what ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import setting_default


@dataclass(frozen=True)
class Plan:
    quick: bool
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
    deadline: float


#: The CPU probe runs the exporter as deployed by default, except for the poll interval.
_CPU_DISCOVERY: float = setting_default("poll_discovery_interval")
_CPU_CONCURRENCY: int = setting_default("poll_concurrency")


def make_plan(quick: bool, sizes: tuple[int, ...] | None, deadline: float | None) -> Plan:
    if quick:
        return Plan(
            quick=True,
            sizes=sizes or (100, 1000),
            wrk_seconds=3,
            warmup_seconds=1,
            poll_models=300,
            latency_ms=50.0,
            concurrencies=(8, 32),
            steady_cycles=2,
            cpu_models=100,
            cpu_poll_interval=30.0,
            cpu_discovery_interval=_CPU_DISCOVERY,
            cpu_concurrency=_CPU_CONCURRENCY,
            cpu_scrape_interval=15.0,
            cpu_window=60.0,
            deadline=deadline or 420.0,
        )
    return Plan(
        quick=False,
        sizes=sizes or (100, 2000, 10_000),
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
        deadline=deadline or 2100.0,
    )
