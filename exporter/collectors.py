"""Collectors that turn one snapshot into metric families, one class per concern.

They read the snapshot they were built for and nothing else: no I/O, no awaiting, no global
``Gauge.labels()``. ``registry_for(snapshot)`` is the one way production code builds them, once
per published snapshot, so a run that leaves the snapshot leaves ``/metrics`` with it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import contract as c
from exporter.core.snapshot import Snapshot


def gauge(family: c.Family) -> GaugeMetricFamily:
    return GaugeMetricFamily(family.name, c.help_text(family, c.POLLED), labels=family.labels)


def counter(family: c.Family) -> CounterMetricFamily:
    return CounterMetricFamily(family.name, c.help_text(family, c.POLLED), labels=family.labels)


class StepMetricsCollector(Collector):
    """The newest step of each run, one gauge family per provider metric name.

    Example::

        # HELP cohere_finetune_step_cross_entropy Cohere metric 'cross_entropy' at the ...
        # TYPE cohere_finetune_step_cross_entropy gauge
        cohere_finetune_step_cross_entropy{finetuned_model_id="fee37446-..."} 0.77
        cohere_finetune_step_number{finetuned_model_id="fee37446-..."} 9.0
        cohere_finetune_step_timestamp_seconds{finetuned_model_id="fee37446-..."} 1.7055e+09
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        number, taken = gauge(c.STEP_NUMBER), gauge(c.STEP_TIMESTAMP)
        stepped = [(v, v.newest_step) for v in self._snapshot.runs if v.newest_step is not None]
        owners = c.owners({metric for _, step in stepped for metric in step.metrics})
        families = {name: gauge(c.step_family(name, metric)) for name, metric in owners.items()}
        owned = {metric: name for name, metric in owners.items()}
        for view, step in stepped:
            labels = c.run_label_values(view.provider, view.id)
            number.add_metric(labels, float(step.number))
            if step.created_at is not None:
                taken.add_metric(labels, step.created_at)
            for metric, value in step.metrics.items():
                name = owned.get(metric)
                if name is not None:
                    families[name].add_metric(labels, value)
        yield number
        yield taken
        for name in sorted(families):
            yield families[name]


class RunCollector(Collector):
    """Per-run metadata, status and poll health.

    Example::

        cohere_finetune_model_info{base_model="command-r",...,name="chat-ft"} 1.0
        cohere_finetune_model_status{finetuned_model_id="...",status="STATUS_READY"} 1.0
        cohere_finetune_model_up{finetuned_model_id="..."} 1.0
        cohere_finetune_last_poll_success_timestamp_seconds{finetuned_model_id="..."} 1.7e+09
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(
            c.RUN_INFO.name, c.help_text(c.RUN_INFO, c.POLLED), labels=c.RUN_INFO.labels
        )
        status, up, last_success = gauge(c.RUN_STATUS), gauge(c.RUN_UP), gauge(c.RUN_LAST_SUCCESS)
        statuses = {part.name: part.statuses for part in self._snapshot.providers}
        for view in self._snapshot.runs:
            labels = c.run_label_values(view.provider, view.id)
            up.add_metric(labels, 1.0 if view.up else 0.0)
            if view.last_success is not None:
                last_success.add_metric(labels, view.last_success)
            run = view.run
            if view.missing or not run.status:
                continue
            info.add_metric(labels, {"name": run.name, "base_model": run.base_model, **run.labels})
            states = statuses.get(view.provider, ())
            if run.status not in states:
                states = (*states, run.status)
            for state in states:
                status.add_metric([*labels, state], 1.0 if state == run.status else 0.0)
        yield from (info, status, up, last_success)


class StepCountersCollector(Collector):
    """Counts over every evaluated step, so a spike between two scrapes is not lost.

    Example::

        cohere_finetune_steps_processed_total{finetuned_model_id="..."} 42.0
        cohere_finetune_step_outliers_total{finetuned_model_id="...",metric="cross_entropy"} 1.0
        cohere_finetune_step_nonfinite_total{finetuned_model_id="...",metric="cross_entropy"} 0.0
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        processed = counter(c.STEPS_PROCESSED)
        outliers, nonfinite = counter(c.STEP_OUTLIERS), counter(c.STEP_NONFINITE)
        for view in self._snapshot.runs:
            if view.newest_step is None:
                continue
            labels = c.run_label_values(view.provider, view.id)
            processed.add_metric(labels, float(view.steps_processed))
            for metric, count in sorted(view.outliers.items()):
                outliers.add_metric([*labels, metric], float(count))
            for metric, count in sorted(view.nonfinite.items()):
                nonfinite.add_metric([*labels, metric], float(count))
        yield from (processed, outliers, nonfinite)


class ProviderCollector(Collector):
    """Each provider's poll health, and the exporter's version.

    Example::

        cohere_finetune_up 1.0
        cohere_finetune_poll_duration_seconds 0.21
        cohere_finetune_build_info{version="0.1.0"} 1.0
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        up, duration, dropped = gauge(c.UP), gauge(c.POLL_DURATION), counter(c.DROPPED)
        for part in self._snapshot.providers:
            labels = c.provider_label_values(part.name)
            up.add_metric(labels, 1.0 if part.up else 0.0)
            if part.poll_duration is not None:
                duration.add_metric(labels, part.poll_duration)
            for kind in c.DROPPED_KINDS:
                dropped.add_metric([*labels, kind], float(part.dropped.get(kind, 0)))
        build = InfoMetricFamily(c.BUILD_INFO.name, c.BUILD_INFO.help)
        build.add_metric([], c.BUILD_LABELS)
        yield from (up, duration, dropped, build)


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    """The registry that exposes ``snapshot``: built once per published snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (
        ProviderCollector(snapshot),
        RunCollector(snapshot),
        StepMetricsCollector(snapshot),
        StepCountersCollector(snapshot),
    ):
        registry.register(collector)
    return registry
