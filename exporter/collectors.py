"""Collectors that turn one snapshot into metric families, one class per concern.

They read the snapshot they were built for and nothing else: no I/O, no awaiting, no global
``Gauge.labels()``. ``registry_for(snapshot)`` is the one way production code builds them, once
per published snapshot, so a run that leaves the snapshot leaves ``/metrics`` with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

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

        # HELP finetune_step_train_loss Provider metric 'train/loss' (together) at the ...
        # TYPE finetune_step_train_loss gauge
        finetune_step_train_loss{finetune_id="ft-44129430-...",provider="together"} 0.77
        finetune_step_number{finetune_id="ft-44129430-...",provider="together"} 140.0
        finetune_step_timestamp_seconds{finetune_id="ft-44129430-...",provider="together"} 1.7e+09
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        number, taken = gauge(c.STEP_NUMBER), gauge(c.STEP_TIMESTAMP)
        stepped = [(v, v.newest_step) for v in self._snapshot.runs if v.newest_step is not None]
        names: dict[str, set[str]] = {}
        for view, step in stepped:
            names.setdefault(view.provider, set()).update(step.metrics)
        owners = c.owners(names)
        families = {name: gauge(c.step_family(name, sources)) for name, sources in owners.items()}
        owned = {
            (provider, metric): name
            for name, sources in owners.items()
            for provider, metric in sources.items()
        }
        for view, step in stepped:
            labels = c.run_label_values(view.provider, view.id)
            number.add_metric(labels, float(step.number))
            if step.created_at is not None:
                taken.add_metric(labels, step.created_at)
            for metric, value in step.metrics.items():
                name = owned.get((view.provider, metric))
                if name is not None:
                    families[name].add_metric(labels, value)
        yield number
        yield taken
        for name in sorted(families):
            yield families[name]


class RunCollector(Collector):
    """Per-run description, phase, provider status, progress and poll health.

    Example::

        finetune_run_info{base_model="command-r",...,name="chat-ft",provider="cohere"} 1.0
        finetune_run_phase{finetune_id="...",phase="training",provider="cohere"} 1.0
        finetune_run_status{finetune_id="...",provider="cohere",status="STATUS_FINETUNING"} 1.0
        finetune_run_total_steps{finetune_id="ft-...",provider="together"} 500.0
        finetune_run_up{finetune_id="...",provider="cohere"} 1.0
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(
            c.RUN_INFO.name, c.help_text(c.RUN_INFO, c.POLLED), labels=c.RUN_INFO.labels
        )
        phase, status = gauge(c.RUN_PHASE), gauge(c.RUN_STATUS)
        total, eta, tokens = gauge(c.RUN_TOTAL_STEPS), gauge(c.RUN_ETA), gauge(c.RUN_TOKENS)
        up, last_success = gauge(c.RUN_UP), gauge(c.RUN_LAST_SUCCESS)
        for view in self._snapshot.runs:
            labels = c.run_label_values(view.provider, view.id)
            up.add_metric(labels, 1.0 if view.up else 0.0)
            if view.last_success is not None:
                last_success.add_metric(labels, view.last_success)
            run = view.run
            if view.missing or not run.status:
                continue
            info.add_metric(labels, {"name": run.name, "base_model": run.base_model, **run.labels})
            for value in c.PHASE_VALUES:
                phase.add_metric([*labels, value], 1.0 if value == run.phase else 0.0)
            status.add_metric([*labels, run.status], 1.0)
            for family, known in ((total, run.total_steps), (eta, run.eta_seconds)):
                if known is not None:
                    family.add_metric(labels, float(known))
            if run.tokens is not None:
                tokens.add_metric(labels, float(run.tokens))
        yield from (info, phase, status, total, eta, tokens, up, last_success)


class StepCountersCollector(Collector):
    """Counts over every logged step, so a spike between two scrapes is not lost.

    Example::

        finetune_steps_processed_total{finetune_id="...",provider="cohere"} 42.0
        finetune_step_outliers_total{finetune_id="...",metric="cross_entropy",...} 1.0
        finetune_step_nonfinite_total{finetune_id="...",metric="train_loss",...} 0.0
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
            for family, counts in ((outliers, view.outliers), (nonfinite, view.nonfinite)):
                for metric, count in sorted(by_label(counts).items()):
                    family.add_metric([*labels, metric], float(count))
        yield from (processed, outliers, nonfinite)


class ProviderCollector(Collector):
    """Each provider's poll health, and the exporter's version.

    Example::

        finetune_up{provider="together"} 1.0
        finetune_poll_duration_seconds{provider="together"} 0.21
        finetune_exporter_build_info{version="0.2.0"} 1.0
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


def by_label(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts keyed by the provider's metric names, keyed instead by the ``metric`` label that
    names them on /metrics (the family suffix: ``train/loss`` → ``train_loss``)."""
    labelled: dict[str, int] = {}
    for metric, count in sorted(counts.items()):
        label = c.metric_label(metric)
        if label is not None:
            labelled.setdefault(label, count)
    return labelled


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
