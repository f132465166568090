"""Collectors that turn the current snapshot into metric families, one class per concern.

They read ``snapshot_source()`` once per scrape and nothing else: no I/O, no awaiting, no global
``Gauge.labels()``. A model that leaves the snapshot therefore leaves ``/metrics`` on the next
scrape, with nothing left behind in a registry.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.api.budget import RequestBudget
from exporter.snapshot import Snapshot

SnapshotSource = Callable[[], Snapshot]

PREFIX = "cohere_finetune"
MODEL_LABEL = "finetuned_model_id"
STEP_PREFIX = f"{PREFIX}_step_"
POLLED = "Polled from the Cohere fine-tuning API."
KNOWN_STATUSES = (
    "STATUS_UNSPECIFIED",
    "STATUS_QUEUED",
    "STATUS_FINETUNING",
    "STATUS_DEPLOYING_API",
    "STATUS_READY",
    "STATUS_FAILED",
    "STATUS_DELETED",
    "STATUS_TEMPORARILY_OFFLINE",
    "STATUS_PAUSED",
)
# Cohere metric names that would clash with a fixed family or with a suffix that Prometheus
# and OpenMetrics reserve for counters, histograms and info metrics get "_value" appended.
_RESERVED_NAMES = frozenset({"number", "timestamp_seconds", "outliers", "nonfinite"})
_RESERVED_SUFFIXES = (
    "_total",
    "_created",
    "_count",
    "_sum",
    "_bucket",
    "_info",
    "_gcount",
    "_gsum",
)
_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_]")
SKIPPED_METRICS = frozenset({"step"})  # the step number again, already in ..._step_number


def step_family_name(metric: str) -> str | None:
    """The family that carries Cohere metric ``metric``, or None when nothing usable is left."""
    cleaned = _INVALID_CHARS.sub("_", metric)
    if not cleaned.strip("_"):
        return None
    if cleaned in _RESERVED_NAMES or cleaned.endswith(_RESERVED_SUFFIXES):
        cleaned += "_value"
    return STEP_PREFIX + cleaned


class StepMetricsCollector(Collector):
    """The newest step of each model, one gauge family per Cohere metric name.

    Example::

        # HELP cohere_finetune_step_cross_entropy Cohere metric "cross_entropy" at the ...
        # TYPE cohere_finetune_step_cross_entropy gauge
        cohere_finetune_step_cross_entropy{finetuned_model_id="fee37446-..."} 0.77
        cohere_finetune_step_number{finetuned_model_id="fee37446-..."} 9.0
        cohere_finetune_step_timestamp_seconds{finetuned_model_id="fee37446-..."} 1.7055e+09
    """

    def __init__(self, snapshot_source: SnapshotSource) -> None:
        self._source = snapshot_source

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        number = GaugeMetricFamily(
            f"{PREFIX}_step_number",
            f"Number of the newest evaluated training step. {POLLED}",
            labels=[MODEL_LABEL],
        )
        taken = GaugeMetricFamily(
            f"{PREFIX}_step_timestamp_seconds",
            f"created_at of the newest evaluated training step, Unix seconds. {POLLED}",
            labels=[MODEL_LABEL],
        )
        families: dict[str, tuple[str, GaugeMetricFamily]] = {}
        for model in snapshot.models:
            step = model.newest_step
            if step is None:
                continue
            number.add_metric([model.id], float(step.number))
            if step.created_at is not None:
                taken.add_metric([model.id], step.created_at)
            for metric in sorted(step.metrics):
                if metric in SKIPPED_METRICS:
                    continue
                name = step_family_name(metric)
                if name is None:
                    continue
                owner = families.get(name)
                if owner is None:
                    family = GaugeMetricFamily(
                        name,
                        f"Cohere metric {metric!r} at the newest evaluated step. {POLLED}",
                        labels=[MODEL_LABEL],
                    )
                    owner = families[name] = (metric, family)
                elif owner[0] != metric:
                    continue  # two Cohere names sanitise alike: the first (sorted) keeps it
                owner[1].add_metric([model.id], step.metrics[metric])
        yield number
        yield taken
        for _, (_, family) in sorted(families.items()):
            yield family


class ModelCollector(Collector):
    """Per-model metadata, status and poll health.

    Example::

        cohere_finetune_model_info{base_model="command-r",...,name="chat-ft"} 1.0
        cohere_finetune_model_status{finetuned_model_id="...",status="STATUS_READY"} 1.0
        cohere_finetune_model_up{finetuned_model_id="..."} 1.0
        cohere_finetune_last_poll_success_timestamp_seconds{finetuned_model_id="..."} 1.7e+09
    """

    def __init__(self, snapshot_source: SnapshotSource) -> None:
        self._source = snapshot_source

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        info = InfoMetricFamily(
            f"{PREFIX}_model",
            f"Descriptive labels of a fine-tuned model; always 1. {POLLED}",
            labels=[MODEL_LABEL],
        )
        status = GaugeMetricFamily(
            f"{PREFIX}_model_status",
            f"State set: 1 for the model's current status, 0 for the others. {POLLED}",
            labels=[MODEL_LABEL, "status"],
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_model_up",
            f"1 if the last poll of this model succeeded, else 0. {POLLED}",
            labels=[MODEL_LABEL],
        )
        last_success = GaugeMetricFamily(
            f"{PREFIX}_last_poll_success_timestamp_seconds",
            f"When this model was last polled successfully, Unix seconds. {POLLED}",
            labels=[MODEL_LABEL],
        )
        for model in snapshot.models:
            up.add_metric([model.id], 1.0 if model.up else 0.0)
            if model.last_success is not None:
                last_success.add_metric([model.id], model.last_success)
            if not model.status:
                continue
            info.add_metric(
                [model.id],
                {
                    "name": model.name,
                    "base_model": model.base_model,
                    "base_model_version": model.base_model_version,
                    "base_type": model.base_type,
                    "strategy": model.strategy,
                },
            )
            states: tuple[str, ...] = KNOWN_STATUSES
            if model.status not in states:
                states = (*states, model.status)
            for state in states:
                status.add_metric([model.id, state], 1.0 if state == model.status else 0.0)
        yield from (info, status, up, last_success)


class ExporterCollector(Collector):
    """The exporter's own health, read from the snapshot.

    Example::

        cohere_finetune_up 1.0
        cohere_finetune_poll_duration_seconds 0.21
        cohere_finetune_build_info{version="0.1.0"} 1.0
    """

    def __init__(self, snapshot_source: SnapshotSource) -> None:
        self._source = snapshot_source

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        yield GaugeMetricFamily(
            f"{PREFIX}_up",
            "1 if the last poll cycle reached the Cohere API and was authorised, else 0.",
            value=1.0 if snapshot.up else 0.0,
        )
        if snapshot.poll_duration is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_poll_duration_seconds",
                "Wall-clock duration of the last poll cycle.",
                value=snapshot.poll_duration,
            )
        dropped = CounterMetricFamily(
            f"{PREFIX}_dropped",
            "Models and metric names left out by --limits.*, counted each time they are cut.",
            labels=["kind"],
        )
        for kind in ("models", "metric_names"):
            dropped.add_metric([kind], float(snapshot.dropped.get(kind, 0)))
        yield dropped
        build = InfoMetricFamily(f"{PREFIX}_build", "Version of cohere-finetune-exporter.")
        build.add_metric([], {"version": __version__})
        yield build


class BudgetCollector(Collector):
    """The client-side request budget, read live (it changes between poll cycles).

    Example::

        cohere_finetune_api_budget_remaining 398.0
        cohere_finetune_api_budget_requests_per_minute 400.0
        cohere_finetune_api_backoff_seconds 0.0
    """

    def __init__(self, budget: RequestBudget) -> None:
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{PREFIX}_api_budget_remaining",
            "API requests that may still start in the current one-minute window.",
            value=float(self._budget.remaining),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_api_budget_requests_per_minute",
            "Client-side ceiling on API requests per minute (--cohere.max-requests-per-minute).",
            value=float(self._budget.per_minute),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_api_backoff_seconds",
            "Seconds left in the pause that a 429 answer imposed on every request.",
            value=self._budget.hold_remaining,
        )


class RuntimeCollector(Collector):
    """Live asyncio task count: a leak shows up here long before memory does.

    Example::

        cohere_finetune_asyncio_tasks 3.0
    """

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # collected outside the event loop (tests, tooling)
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_asyncio_tasks", "asyncio tasks alive in the exporter.", value=float(tasks)
        )


class StepCountersCollector(Collector):
    """Counts over every evaluated step, so a spike between two scrapes is not lost.

    Example::

        cohere_finetune_steps_processed_total{finetuned_model_id="..."} 42.0
        cohere_finetune_step_outliers_total{finetuned_model_id="...",metric="cross_entropy"} 1.0
        cohere_finetune_step_nonfinite_total{finetuned_model_id="...",metric="cross_entropy"} 0.0
    """

    def __init__(self, snapshot_source: SnapshotSource) -> None:
        self._source = snapshot_source

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        processed = CounterMetricFamily(
            f"{PREFIX}_steps_processed",
            f"Evaluated steps processed since the exporter started. {POLLED}",
            labels=[MODEL_LABEL],
        )
        outliers = CounterMetricFamily(
            f"{PREFIX}_step_outliers",
            "Steps whose loss-like metric was at least --spike.factor times the median of the "
            f"previous --spike.window steps. {POLLED}",
            labels=[MODEL_LABEL, "metric"],
        )
        nonfinite = CounterMetricFamily(
            f"{PREFIX}_step_nonfinite",
            f"Steps whose loss-like metric was NaN or infinite. {POLLED}",
            labels=[MODEL_LABEL, "metric"],
        )
        for model in snapshot.models:
            if model.newest_step is None:
                continue
            processed.add_metric([model.id], float(model.steps_processed))
            for metric, count in sorted(model.outliers.items()):
                outliers.add_metric([model.id, metric], float(count))
            for metric, count in sorted(model.nonfinite.items()):
                nonfinite.add_metric([model.id, metric], float(count))
        yield from (processed, outliers, nonfinite)


def snapshot_collectors(snapshot_source: SnapshotSource) -> list[Collector]:
    return [
        ExporterCollector(snapshot_source),
        ModelCollector(snapshot_source),
        StepMetricsCollector(snapshot_source),
        StepCountersCollector(snapshot_source),
    ]
