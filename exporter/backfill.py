"""History backfill: every training step the API still lists, as OpenMetrics text for promtool.

The live exporter only ever shows the newest step, so Prometheus holds history from the day it
started scraping. ``backfill`` reads every step of every selected model and writes it with the
same metric names and labels as the live exporter, one sample per step at the step's
``created_at``, ready for::

    promtool tsdb create-blocks-from openmetrics history.om DATA_DIR

A series carries, at each moment, what the live exporter would have shown then: the values of
the highest-numbered step created by that moment. A step that a higher-numbered step does not
follow in time (same millisecond, or earlier) is therefore dropped in favour of the later one,
which also keeps every series' timestamps strictly increasing, as OpenMetrics requires.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from exporter.api.client import CohereClient
from exporter.api.models import FinetunedModel, TrainingStepMetrics
from exporter.collector import MODEL_LABEL, PREFIX, SKIPPED_METRICS, step_family_name
from exporter.sharding import Shard

log = logging.getLogger(__name__)

BACKFILLED = "Backfilled from the Cohere fine-tuning API."
INFO_FAMILY = f"{PREFIX}_model"
NUMBER_FAMILY = f"{PREFIX}_step_number"
TIMESTAMP_FAMILY = f"{PREFIX}_step_timestamp_seconds"

Progress = Callable[[int, int, str], None]
EVERY_MODEL = Shard()  # one shard: every model


@dataclass(frozen=True)
class BackfillResult:
    """What a run wrote: models with at least one step, steps placed in time, sample lines.

    ``skipped`` counts the steps left out: those without ``created_at`` (they cannot be placed
    in time) and those superseded by a higher-numbered step at the same or an earlier time.
    """

    models: int
    steps: int
    samples: int
    skipped: int = 0


@dataclass(frozen=True)
class PlacedStep:
    """One step placed in time: integer milliseconds, and the metrics that become families."""

    ms: int
    number: int
    created_at: float
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class ModelHistory:
    model: FinetunedModel
    points: Sequence[PlacedStep]


async def backfill(
    client: CohereClient,
    out: TextIO,
    *,
    model_ids: Sequence[str] = (),
    shard: Shard = EVERY_MODEL,
    page_size: int = 100,
    max_metrics_per_model: int = 100,
    progress: Progress | None = None,
) -> BackfillResult:
    """Read the step history of the selected models and write it to ``out`` as OpenMetrics.

    ``model_ids`` empty means every model of the account. Nothing is written until every model
    has been read, so an API error leaves ``out`` untouched and propagates.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    if max_metrics_per_model < 1:
        raise ValueError(f"max_metrics_per_model must be at least 1, got {max_metrics_per_model}")
    models = await _select_models(client, model_ids, shard, page_size)
    histories: list[ModelHistory] = []
    skipped = 0
    for done, model in enumerate(models, start=1):
        steps = await client.all_step_metrics(model.id, page_size=page_size)
        points, dropped = place_in_time(steps, max_metrics_per_model)
        if dropped:
            log.warning(
                "steps left out of the backfill",
                extra={"model": model.id, "steps": dropped},
            )
        skipped += dropped
        if points:
            histories.append(ModelHistory(model, points))
        if progress is not None:
            progress(done, len(models), model.name or model.id)
    samples = write_openmetrics(histories, out)
    return BackfillResult(
        models=len(histories),
        steps=sum(len(h.points) for h in histories),
        samples=samples,
        skipped=skipped,
    )


# --------------------------------------------------------------------------- reading


async def _select_models(
    client: CohereClient, model_ids: Sequence[str], shard: Shard, page_size: int
) -> list[FinetunedModel]:
    """Configured IDs (fetched for their labels) or the whole listing; this shard's, by ID."""
    if model_ids:
        chosen: list[FinetunedModel] = []
        for model_id in dict.fromkeys(model_ids):
            if not shard.owns(model_id):
                continue
            model = await client.get_model(model_id)
            if model.id != model_id:  # keyed by the ID the user gave, as the poller does
                model = model.model_copy(update={"id": model_id})
            chosen.append(model)
        return chosen
    listed: dict[str, FinetunedModel] = {}
    for model in await client.all_models(page_size=page_size):
        if model.id and shard.owns(model.id):
            listed.setdefault(model.id, model)
    return [listed[model_id] for model_id in sorted(listed)]


def place_in_time(
    steps: Iterable[TrainingStepMetrics], max_metrics: int = 100
) -> tuple[list[PlacedStep], int]:
    """The steps to write, oldest first with strictly increasing milliseconds, and how many not.

    Steps are ordered by number (ties by ``created_at``). A step is kept only if every
    higher-numbered step was created strictly later (at millisecond resolution); otherwise the
    live exporter would never have shown it once that step existed. Steps without
    ``created_at`` cannot be placed and are left out. As in the live exporter, a step keeps its
    first ``max_metrics`` metric names in alphabetical order.
    """
    timed: list[tuple[int, float, TrainingStepMetrics]] = []
    skipped = 0
    for step in steps:
        if step.created_at is None:
            skipped += 1
        else:
            timed.append((step.step_number, step.created_at, step))
    timed.sort(key=lambda item: (item[0], item[1]))
    kept: list[PlacedStep] = []
    earliest_later = math.inf
    for number, created_at, step in reversed(timed):
        ms = _milliseconds(created_at)
        if ms >= earliest_later:
            skipped += 1
            continue
        earliest_later = ms
        names = sorted(step.metrics)[:max_metrics]
        kept.append(
            PlacedStep(ms, number, created_at, {name: step.metrics[name] for name in names})
        )
    kept.reverse()
    return kept, skipped


def _milliseconds(unix: float) -> int:
    """Unix seconds to integer milliseconds, the resolution Prometheus stores."""
    return math.floor(unix * 1000 + 0.5)


# --------------------------------------------------------------------------- writing


def write_openmetrics(histories: Sequence[ModelHistory], out: TextIO) -> int:
    """Write every family in turn, each family's samples contiguous; returns the sample count.

    A Cohere metric whose name sanitises like another's goes to the family of the first of
    them in sorted order, as in the live exporter; the others are left out.
    """
    ordered = sorted(histories, key=lambda h: h.model.id)
    samples = _write_family(
        out,
        INFO_FAMILY,
        "info",
        f"Descriptive labels of a fine-tuned model; always 1. {BACKFILLED}",
        ((_info_labels(h.model), ((p.ms, "1") for p in h.points)) for h in ordered),
    )
    samples += _write_family(
        out,
        NUMBER_FAMILY,
        "gauge",
        f"Number of the newest evaluated training step. {BACKFILLED}",
        ((_model_labels(h), ((p.ms, str(p.number)) for p in h.points)) for h in ordered),
    )
    samples += _write_family(
        out,
        TIMESTAMP_FAMILY,
        "gauge",
        f"created_at of the newest evaluated training step, Unix seconds. {BACKFILLED}",
        ((_model_labels(h), ((p.ms, _value(p.created_at)) for p in h.points)) for h in ordered),
    )
    for family, metric in sorted(_family_owners(ordered).items()):
        samples += _write_family(
            out,
            family,
            "gauge",
            f"Cohere metric {metric!r} at the newest evaluated step. {BACKFILLED}",
            ((_model_labels(h), _metric_points(h, metric)) for h in ordered),
        )
    out.write("# EOF\n")
    return samples


def _family_owners(histories: Iterable[ModelHistory]) -> dict[str, str]:
    """Family name → the Cohere metric that fills it (the first in sorted order)."""
    names: set[str] = set()
    for history in histories:
        for point in history.points:
            names.update(point.metrics)
    owners: dict[str, str] = {}
    for metric in sorted(names - SKIPPED_METRICS):
        family = step_family_name(metric)
        if family is not None:
            owners.setdefault(family, metric)
    return owners


def _metric_points(history: ModelHistory, metric: str) -> Iterator[tuple[int, str]]:
    for point in history.points:
        value = point.metrics.get(metric)
        if value is not None:
            yield point.ms, _value(value)


Series = Iterable[tuple[str, Iterable[tuple[int, str]]]]


def _write_family(out: TextIO, name: str, kind: str, help_text: str, series: Series) -> int:
    """HELP and TYPE once, then every series in turn; nothing at all for a family without data."""
    count = 0
    for labels, points in series:
        lines = [
            f"{name}{_sample_suffix(kind)}{{{labels}}} {value} {_seconds(ms)}\n"
            for ms, value in points
        ]
        if not lines:
            continue
        if count == 0:
            out.write(f"# HELP {name} {_escape(help_text)}\n# TYPE {name} {kind}\n")
        out.write("".join(lines))
        count += len(lines)
    return count


def _sample_suffix(kind: str) -> str:
    return "_info" if kind == "info" else ""


def _model_labels(history: ModelHistory) -> str:
    return f'{MODEL_LABEL}="{_escape(history.model.id)}"'


def _info_labels(model: FinetunedModel) -> str:
    base = model.settings.base_model
    pairs = (
        (MODEL_LABEL, model.id),
        ("name", model.name),
        ("base_model", base.name),
        ("base_model_version", base.version),
        ("base_type", base.base_type),
        ("strategy", base.strategy),
    )
    return ",".join(f'{key}="{_escape(value)}"' for key, value in pairs)


def _escape(text: str) -> str:
    """OpenMetrics escaping of label values and HELP text: backslash, newline, double quote."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    """An OpenMetrics number: shortest round-trip decimal, or NaN, +Inf, -Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _seconds(ms: int) -> str:
    """Integer milliseconds as decimal seconds, exact (no float rounding on the way)."""
    sign = "-" if ms < 0 else ""
    whole, frac = divmod(abs(ms), 1000)
    return f"{sign}{whole}.{frac:03d}"
