"""The live part of ``/metrics``: what changes between snapshots and is read at scrape time.

Request and retry counters, each provider's request budget, the asyncio task count and the
standard process metrics live in their own registry, encoded at most once a second; run data
never passes through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

from prometheus_client import (
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import contract as c
from exporter.upstream.budget import RequestBudget
from exporter.upstream.client import ClientObserver

# ``*_created`` series double the counter lines and no dashboard or rule here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class ApiTelemetry:
    """The request and retry counters of every provider's client."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            c.API_REQUESTS.name, c.API_REQUESTS.help, c.API_REQUESTS.labels, registry=registry
        )
        self.retries = Counter(
            c.API_RETRIES.name, c.API_RETRIES.help, c.API_RETRIES.labels, registry=registry
        )

    def observer(self, provider: str) -> ClientObserver:
        return _ProviderObserver(self, c.provider_label_values(provider))


class _ProviderObserver(ClientObserver):
    def __init__(self, telemetry: ApiTelemetry, labels: list[str]) -> None:
        self._telemetry = telemetry
        self._labels = labels

    def request_done(self, endpoint: str, code: str) -> None:
        self._telemetry.requests.labels(*self._labels, endpoint, code).inc()

    def retrying(self, endpoint: str, reason: str, delay: float) -> None:
        self._telemetry.retries.labels(*self._labels, endpoint, reason).inc()


class BudgetCollector(Collector):
    """Each provider's client-side request budget, read live (it changes between cycles).

    Example::

        finetune_api_budget_remaining{provider="cohere"} 398.0
        finetune_api_budget_requests_per_minute{provider="cohere"} 400.0
        finetune_api_backoff_seconds{provider="cohere"} 0.0
    """

    def __init__(self, budgets: Mapping[str, RequestBudget]) -> None:
        self._budgets = budgets

    def collect(self) -> Iterator[Metric]:
        families = [
            GaugeMetricFamily(f.name, f.help, labels=f.labels)
            for f in (c.BUDGET_REMAINING, c.BUDGET_PER_MINUTE, c.BACKOFF)
        ]
        remaining, per_minute, backoff = families
        for provider, budget in sorted(self._budgets.items()):
            labels = c.provider_label_values(provider)
            remaining.add_metric(labels, float(budget.remaining))
            per_minute.add_metric(labels, float(budget.per_minute))
            backoff.add_metric(labels, budget.hold_remaining)
        yield from families


class RuntimeCollector(Collector):
    """Live asyncio task count: a leak shows up here long before memory does.

    Example::

        finetune_exporter_asyncio_tasks 3.0
    """

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # collected outside the event loop (tests, tooling)
            return
        yield GaugeMetricFamily(c.ASYNCIO_TASKS.name, c.ASYNCIO_TASKS.help, value=float(tasks))


def live_registry(budgets: Mapping[str, RequestBudget]) -> tuple[CollectorRegistry, ApiTelemetry]:
    """The registry of everything read at scrape time, and the counters clients report to."""
    registry = CollectorRegistry(auto_describe=False)
    for standard in (ProcessCollector, PlatformCollector, GCCollector):
        standard(registry=registry)
    telemetry = ApiTelemetry(registry)
    registry.register(BudgetCollector(budgets))
    registry.register(RuntimeCollector())
    return registry, telemetry
