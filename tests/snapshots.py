"""Hand-built snapshots for the exposition tests: one provider's runs as the core would publish."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from exporter.core.provider import Run, StepRecord
from exporter.core.snapshot import ProviderPart, RunView, Snapshot
from exporter.providers.cohere.provider import PHASES
from exporter.providers.together.provider import PHASES as TOGETHER_PHASES


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


def together_view(
    run_id: str,
    name: str,
    status: str,
    *,
    newest_step: StepRecord | None = None,
    total_steps: int | None = None,
    eta_seconds: float | None = None,
    tokens: int | None = None,
    up: bool = True,
) -> RunView:
    run = Run(
        id=run_id,
        name=name,
        base_model="meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
        status=status,
        phase=TOGETHER_PHASES.get(status, "unknown"),
        labels=MappingProxyType({"training_type": "Lora", "training_method": "sft"}),
        total_steps=total_steps,
        eta_seconds=eta_seconds,
        tokens=tokens,
    )
    return RunView("together", run, newest_step=newest_step, up=up)


def snapshot_of(
    *runs: RunView, up: bool = False, poll_duration: float | None = None, version: int = 1
) -> Snapshot:
    """Each provider's runs as its part; every part healthy or not alike."""
    names = sorted({view.provider for view in runs} or {"cohere"})
    parts = [
        ProviderPart(
            name,
            runs=tuple(view for view in runs if view.provider == name),
            up=up,
            poll_duration=poll_duration,
            ready=True,
        )
        for name in names
    ]
    return Snapshot.join(parts, version)
