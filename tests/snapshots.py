"""Hand-built snapshots for the exposition tests: one provider's runs as the core would publish."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from exporter.core.provider import Run, StepRecord
from exporter.core.snapshot import ProviderPart, RunView, Snapshot
from exporter.providers.cohere.provider import PHASES, STATUSES


def step(number: int, created_at: float | None, metrics: Mapping[str, float]) -> StepRecord:
    return StepRecord(number, created_at, MappingProxyType(dict(metrics)))


def cohere_view(
    run_id: str,
    name: str,
    status: str,
    *,
    base_model: str = "",
    labels: Mapping[str, str] | None = None,
    newest_step: StepRecord | None = None,
    up: bool = False,
    last_success: float | None = None,
) -> RunView:
    run = Run(
        id=run_id,
        name=name,
        base_model=base_model,
        status=status,
        phase=PHASES.get(status, "unknown"),
        labels=MappingProxyType(dict(labels or {})),
    )
    return RunView("cohere", run, newest_step=newest_step, up=up, last_success=last_success)


def snapshot_of(
    *runs: RunView, up: bool = False, poll_duration: float | None = None, version: int = 1
) -> Snapshot:
    part = ProviderPart(
        "cohere", runs=runs, statuses=STATUSES, up=up, poll_duration=poll_duration, ready=True
    )
    return Snapshot.join([part], version)
