"""The immutable picture of every polled model that the collectors read.

The poller builds a new ``Snapshot`` after each cycle and swaps it in with one assignment, so a
scrape sees either the old cycle or the new one, never half of each, and never waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Step:
    """One evaluated training step: its number, when it was taken, and its metrics."""

    number: int
    created_at: float | None
    metrics: Mapping[str, float]

    @staticmethod
    def of(number: int, created_at: float | None, metrics: Mapping[str, float]) -> Step:
        return Step(number, created_at, MappingProxyType(dict(metrics)))


@dataclass(frozen=True, slots=True)
class ModelView:
    """What the exporter knows about one fine-tuned model at the end of a cycle."""

    id: str
    name: str
    status: str
    base_model: str = ""
    base_model_version: str = ""
    base_type: str = ""
    strategy: str = ""
    newest_step: Step | None = None
    up: bool = False
    last_success: float | None = None
    outliers: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    nonfinite: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    steps_processed: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One poll cycle's result. ``ready`` turns true once the first cycle has finished."""

    models: tuple[ModelView, ...] = ()
    up: bool = False
    poll_duration: float | None = None
    ready: bool = False
    version: int = 0
    dropped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


EMPTY = Snapshot()
