"""Together's metric entries as steps: the unconfirmed details of the format, coped with.

Entries are flat objects of numbers. Training entries carry ``train/global_step``; the step of
an evaluation entry may be ``eval/global_step`` or nothing at all, in which case it belongs to
the training entry logged with it (the entry before it in the list, or after it when it comes
first). Entries of one step are merged into one step. ``timestamp`` is integer nanoseconds (or
missing). A value may be a number, a non-finite value spelled as a string (``"NaN"``), or
missing; anything else (``null``, a boolean, an object) is left out of that step, never fatal.
A step number that is not an integer makes the whole answer invalid, as for Cohere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from exporter.core import shared
from exporter.core.provider import StepRecord
from exporter.upstream.values import parse_double, parse_int

STEP_KEYS = ("train/global_step", "eval/global_step")
NOT_METRICS = frozenset({*STEP_KEYS, "timestamp"})
NANOS = 1_000_000_000


def step_of(entry: Mapping[str, Any]) -> int | None:
    """The step an entry names, None when it names none; ValueError when it names nonsense."""
    for key in STEP_KEYS:
        value = entry.get(key)
        if value is not None:
            return parse_int(value)
    return None


def seconds_of(entry: Mapping[str, Any]) -> float | None:
    """``timestamp`` (integer nanoseconds, beyond float precision) as Unix seconds."""
    value = entry.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    whole, nanos = divmod(int(value), NANOS)
    return whole + nanos / NANOS


def metrics_of(entry: Mapping[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in entry.items():
        if key in NOT_METRICS or isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float | str):
            try:
                found[shared.name(key)] = parse_double(value)
            except ValueError:
                continue  # a string that is no number: not a metric value
    return found


def to_steps(entries: Iterable[Mapping[str, Any]]) -> tuple[list[StepRecord], int]:
    """The entries as steps in step order, and how many entries named no step at all (left
    out: nothing in the answer tells which step they belong to)."""
    steps: dict[int, tuple[float | None, dict[str, float]]] = {}
    waiting: list[Mapping[str, Any]] = []  # stepless entries before the first stepped one
    previous: int | None = None

    def merge(step: int, entry: Mapping[str, Any]) -> None:
        when, metrics = steps.get(step, (None, {}))
        metrics.update(metrics_of(entry))
        steps[step] = (when if when is not None else seconds_of(entry), metrics)

    for entry in entries:
        step = step_of(entry)
        if step is None:
            if previous is None:
                waiting.append(entry)
            else:
                merge(previous, entry)
            continue
        previous = step
        merge(step, entry)
        for early in waiting:
            merge(step, early)
        waiting.clear()
    records = [StepRecord(n, when, metrics) for n, (when, metrics) in sorted(steps.items())]
    return records, len(waiting)
