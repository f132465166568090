"""History backfill: every training step the APIs still list, as OpenMetrics text for promtool.

The live exporter only ever shows the newest step, so Prometheus holds history from the day it
started scraping. ``backfill`` reads every step of every selected run and writes it under the
live names and labels (``exporter.contract``), one sample per step at the step's time, ready
for::

    promtool tsdb create-blocks-from openmetrics history.om DATA_DIR

A series carries, at each moment, what the live exporter would have shown then: the values of
the highest-numbered step created by that moment. A step that a higher-numbered step does not
follow in time (same millisecond, or earlier) is therefore dropped in favour of the later one,
which also keeps every series' timestamps strictly increasing, as OpenMetrics requires.

Samples are written family by family and run by run as they are formatted, so the file can
hold millions of steps without the whole history as objects in memory at once.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from exporter import contract as c
from exporter import encoding
from exporter.core.discovery import Discovery
from exporter.core.provider import Provider, Run, StepRecord
from exporter.core.tracker import trimmed

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BackfillResult:
    """What a run wrote: runs with at least one step, steps placed in time, sample lines.

    ``skipped`` counts the steps left out: those without a time (they cannot be placed) and
    those superseded by a higher-numbered step at the same or an earlier time.
    """

    models: int
    steps: int
    samples: int
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class PlacedStep:
    """One step placed in time: integer milliseconds, and the metrics that become families."""

    ms: int
    number: int
    created_at: float
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RunHistory:
    provider: str
    run: Run
    points: Sequence[PlacedStep]


Source = tuple[Provider, Discovery]


async def backfill(
    sources: Sequence[Source],
    out: TextIO,
    *,
    max_metrics_per_model: int,
    progress: Progress | None = None,
) -> BackfillResult:
    """Read the step history of every source's runs and write it to ``out`` as OpenMetrics.

    Each source's discovery selects the runs (configured IDs or the whole account, this
    shard's). Nothing is written until every run has been read, so an API error leaves ``out``
    untouched and propagates.
    """
    selected: list[tuple[Provider, Run]] = []
    for provider, discovery in sources:
        found = await discovery.discover()
        for error in (*found.missing.values(), *found.failures.values()):
            raise error
        selected.extend((provider, found.runs[run_id]) for run_id in sorted(found.runs))
    histories: list[RunHistory] = []
    skipped = 0
    for done, (provider, run) in enumerate(selected, start=1):
        points, dropped = place_in_time(await provider.all_steps(run), max_metrics_per_model)
        if dropped:
            log.warning("steps left out of the backfill", extra={"run": run.id, "steps": dropped})
        skipped += dropped
        if points:
            histories.append(RunHistory(provider.name, run, points))
        if progress is not None:
            progress(done, len(selected), run.name or run.id)
    samples = write_openmetrics(histories, out)
    return BackfillResult(
        models=len(histories),
        steps=sum(len(h.points) for h in histories),
        samples=samples,
        skipped=skipped,
    )


def place_in_time(steps: Iterable[StepRecord], max_metrics: int) -> tuple[list[PlacedStep], int]:
    """The steps to write, oldest first with strictly increasing milliseconds, and how many not.

    Steps are ordered by number (ties by time). A step is kept only if every higher-numbered
    step was created strictly later (at millisecond resolution); otherwise the live exporter
    would never have shown it once that step existed. Steps without a time cannot be placed
    and are left out. As in the live exporter, a step keeps its first ``max_metrics`` metric
    names in alphabetical order.
    """
    every = list(steps)
    timed = [step for step in every if step.created_at is not None]
    skipped = len(every) - len(timed)
    del every
    timed.sort(key=lambda step: (step.number, step.created_at))
    kept: list[PlacedStep] = []
    earliest_later = math.inf
    for step in reversed(timed):
        created_at = step.created_at
        assert created_at is not None  # only timed steps are left
        ms = milliseconds(created_at)
        if ms >= earliest_later:
            skipped += 1
            continue
        earliest_later = ms
        # Trimmed only when over the limit: a copy of every step's metrics would double them.
        metrics = (
            step.metrics
            if len(step.metrics) <= max_metrics
            else trimmed(step, max_metrics)[0].metrics
        )
        kept.append(PlacedStep(ms, step.number, created_at, metrics))
    kept.reverse()
    return kept, skipped


def milliseconds(unix: float) -> int:
    """Unix seconds to integer milliseconds, the resolution Prometheus stores."""
    return math.floor(unix * 1000 + 0.5)


# --------------------------------------------------------------------------- writing


def write_openmetrics(histories: Sequence[RunHistory], out: TextIO) -> int:
    """Write every family in turn, each family's samples contiguous; returns the sample count.

    A metric whose name sanitises like another's goes to the family of the first of them in
    sorted order, as in the live exporter; the others are left out.
    """
    ordered = sorted(histories, key=lambda h: (h.provider, h.run.id))
    samples = _write_family(
        out,
        c.RUN_INFO,
        c.help_text(c.RUN_INFO, c.BACKFILLED),
        ((_info_labels(h), ((p.ms, "1") for p in h.points)) for h in ordered),
    )
    samples += _write_family(
        out,
        c.STEP_NUMBER,
        c.help_text(c.STEP_NUMBER, c.BACKFILLED),
        ((_run_labels(h), ((p.ms, str(p.number)) for p in h.points)) for h in ordered),
    )
    samples += _write_family(
        out,
        c.STEP_TIMESTAMP,
        c.help_text(c.STEP_TIMESTAMP, c.BACKFILLED),
        ((_run_labels(h), ((p.ms, _value(p.created_at)) for p in h.points)) for h in ordered),
    )
    names: dict[str, set[str]] = {}
    for history in ordered:
        names.setdefault(history.provider, set()).update(
            metric for point in history.points for metric in point.metrics
        )
    for family, sources in sorted(c.owners(names).items()):
        step_family = c.step_family(family, sources)
        samples += _write_family(
            out,
            step_family,
            c.help_text(step_family, c.BACKFILLED),
            (
                (_run_labels(h), _metric_points(h, sources[h.provider]))
                for h in ordered
                if h.provider in sources
            ),
        )
    out.write(encoding.EOF.decode())
    return samples


def _metric_points(history: RunHistory, metric: str) -> Iterator[tuple[int, str]]:
    for point in history.points:
        value = point.metrics.get(metric)
        if value is not None:
            yield point.ms, _value(value)


Series = Iterable[tuple[str, Iterable[tuple[int, str]]]]


#: Sample lines formatted before one write: a run of 50,000 steps is never one string.
WRITE_BATCH = 1024


def _write_family(out: TextIO, family: c.Family, help_text: str, series: Series) -> int:
    """HELP and TYPE once, then every series in turn; nothing at all for a family without data."""
    count = 0
    for labels, points in series:
        lines = (f"{family.sample}{labels} {value} {_seconds(ms)}\n" for ms, value in points)
        while batch := list(itertools.islice(lines, WRITE_BATCH)):
            if count == 0:
                out.write(encoding.header(family, help_text, "openmetrics"))
            out.write("".join(batch))
            count += len(batch)
    return count


def _run_labels(history: RunHistory) -> str:
    values = c.run_label_values(history.provider, history.run.id)
    return encoding.labels(zip(c.RUN_LABELS, values, strict=True))


def _info_labels(history: RunHistory) -> str:
    run = history.run
    values = c.run_label_values(history.provider, run.id)
    extra = {"name": run.name, "base_model": run.base_model, **run.labels}
    return encoding.labels([*zip(c.RUN_LABELS, values, strict=True), *extra.items()])


_value = encoding.number


def _seconds(ms: int) -> str:
    """Integer milliseconds as decimal seconds, exact (no float rounding on the way)."""
    sign = "-" if ms < 0 else ""
    whole, frac = divmod(abs(ms), 1000)
    return f"{sign}{whole}.{frac:03d}"
