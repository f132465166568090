"""``/api/runs``: the status page's data as JSON, its shape stated once as pydantic models.

The field names are a contract (scripts and other dashboards read them), so they live here
and in the README's table and nowhere else; a unit test keeps the two equal. JSON has no
literal for NaN or infinities, and a loss that turned NaN is exactly what a reader needs to
see, so every metric value is written as a number or as one of the strings ``"NaN"``,
``"+Inf"``, ``"-Inf"`` (Prometheus's spelling) and read back the same way. Times are Unix
seconds, as on ``/metrics``.

The document is served in two parts: the run list, encoded once per snapshot and selection,
and the few top-level fields that change with every request (the time, the request budgets).
``head_json`` writes the latter so that appending the former completes one valid document.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, field_serializer

from exporter.core.history import History
from exporter.core.provider import Phase
from exporter.core.snapshot import RunView
from exporter.web.text import clean

_WRITTEN: Final = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}


def write_value(value: float) -> float | str:
    """A metric value for JSON: the number, or "NaN", "+Inf", "-Inf"."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def read_value(value: Any) -> Any:
    """The inverse of ``write_value`` for validation; anything else is left to pydantic."""
    return _WRITTEN.get(value, value) if isinstance(value, str) else value


Value = Annotated[float, BeforeValidator(read_value)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CurveDoc(_Doc):
    """One metric's curve, oldest first: ``values[i]`` was logged at ``steps[i]``."""

    steps: list[int]
    values: list[Value]

    @field_serializer("values", when_used="json")
    def _write(self, values: list[float]) -> list[float | str]:
        return [write_value(v) for v in values]


class ProviderDoc(_Doc):
    name: str
    up: bool
    ready: bool
    last_cycle_at: float | None
    poll_duration_seconds: float | None
    requests_per_minute: int | None
    requests_used: int | None


class RunDoc(_Doc):
    provider: str
    id: str
    name: str
    base_model: str
    status: str
    phase: Phase
    created_at: float | None
    labels: dict[str, str]
    step: int | None
    step_at: float | None
    total_steps: int | None
    eta_seconds: float | None
    tokens: int | None
    up: bool
    missing: bool
    last_success_at: float | None
    metrics: dict[str, Value]
    steps_processed: int
    outliers: dict[str, int]
    nonfinite: dict[str, int]
    history: dict[str, CurveDoc] | None
    outlier_steps: list[tuple[int, str]]
    nonfinite_steps: list[tuple[int, str]]

    @field_serializer("metrics", when_used="json")
    def _write(self, metrics: dict[str, float]) -> dict[str, float | str]:
        return {name: write_value(v) for name, v in metrics.items()}


class RunsDocument(_Doc):
    """The whole answer of ``/api/runs``; ``runs`` stays the last field (see ``head_json``)."""

    version: int
    generated_at: float
    ready: bool
    all: bool
    hidden_finished: int
    providers: list[ProviderDoc]
    runs: list[RunDoc]


RUN_LIST: Final = TypeAdapter(list[RunDoc])
_EMPTY_TAIL: Final = b'"runs":[]}'


def _texts(mapping: Mapping[str, str]) -> dict[str, str]:
    return {clean(key): clean(value) for key, value in mapping.items()}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def float32_values(values: array[float]) -> list[float]:
    """A curve's float32 values as the short decimals they stand for (``0.8296``, not the
    ``0.8295999765396118`` a float32 widened to a double prints as): seven significant digits
    where those read back as the same float32, else eight, else nine (always enough). This
    halves ``/api/runs`` and loses nothing the history kept."""
    short = [float(f"{value:.7g}") for value in values]
    if array("f", short) != values:  # NaN never equals itself: those are checked one by one
        for i, (back, kept) in enumerate(zip(array("f", short), values, strict=True)):
            if back != kept and not (math.isnan(back) and math.isnan(kept)):
                eight = float(f"{kept:.8g}")
                short[i] = eight if array("f", [eight])[0] == kept else float(f"{kept:.9g}")
    return short


def _history(history: History | None) -> dict[str, CurveDoc] | None:
    if history is None:
        return None
    return {
        clean(name): CurveDoc.model_construct(steps=list(c.steps), values=float32_values(c.values))
        for name, c in history.curves.items()
    }


def run_doc(view: RunView) -> RunDoc:
    """One run as ``/api/runs`` writes it. Built without re-validating: every value comes
    from a snapshot that the core has already checked."""
    run, newest, history = view.run, view.newest_step, view.history
    return RunDoc.model_construct(
        provider=view.provider,
        id=clean(run.id),
        name=clean(run.name),
        base_model=clean(run.base_model),
        status="" if view.missing else clean(run.status),
        phase=run.phase,
        created_at=_finite(run.created_at),
        labels=_texts(run.labels),
        step=newest.number if newest is not None else None,
        step_at=_finite(newest.created_at) if newest is not None else None,
        total_steps=run.total_steps,
        eta_seconds=_finite(run.eta_seconds),
        tokens=run.tokens,
        up=view.up,
        missing=view.missing,
        last_success_at=view.last_success,
        metrics={clean(k): v for k, v in newest.metrics.items()} if newest is not None else {},
        steps_processed=view.steps_processed,
        outliers={clean(k): v for k, v in view.outliers.items()},
        nonfinite={clean(k): v for k, v in view.nonfinite.items()},
        history=_history(history),
        outlier_steps=[(s, clean(m)) for s, m in history.outliers] if history else [],
        nonfinite_steps=[(s, clean(m)) for s, m in history.nonfinite] if history else [],
    )


def runs_json(views: tuple[RunView, ...]) -> bytes:
    """The ``runs`` array plus the document's closing brace: the cached part."""
    return RUN_LIST.dump_json([run_doc(view) for view in views]) + b"}"


def head_json(document: RunsDocument) -> bytes:
    """``document`` (whose ``runs`` is empty) up to and including ``"runs":``."""
    encoded = document.model_dump_json().encode()
    if document.runs or not encoded.endswith(_EMPTY_TAIL):
        raise ValueError("the head of the runs document must end with an empty run list")
    return encoded[: -len(b"[]}")]
