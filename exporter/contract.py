"""The metrics contract, stated once: family names, types, HELP texts, labels and sanitising.

The live collectors, ``backfill`` and the dashboard generator all read this module, so a name
or a label changes here or nowhere. Every name and label value that comes from an API passes
through ``step_family_name`` or the exposition's escaping before it reaches a scrape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from exporter import __version__

PREFIX = "cohere_finetune"
RUN_LABELS: tuple[str, ...] = ("finetuned_model_id",)
INFO_LABELS: tuple[str, ...] = ("name", "base_model")
PROVIDER_LABELS: tuple[str, ...] = ()
POLLED = "Polled from the Cohere fine-tuning API."
BACKFILLED = "Backfilled from the Cohere fine-tuning API."

FamilyType = Literal["gauge", "counter", "info", "stateset"]


@dataclass(frozen=True)
class Family:
    """One metric family: ``name`` without the ``_total``/``_info`` suffix the format adds."""

    name: str
    type: FamilyType
    help: str
    labels: tuple[str, ...] = ()


def _family(name: str, kind: FamilyType, help_text: str, labels: tuple[str, ...]) -> Family:
    return Family(f"{PREFIX}_{name}", kind, help_text, labels)


# ------------------------------------------------------------------------- run families

STEP_NUMBER = _family(
    "step_number", "gauge", "Number of the newest evaluated training step.", RUN_LABELS
)
STEP_TIMESTAMP = _family(
    "step_timestamp_seconds",
    "gauge",
    "created_at of the newest evaluated training step, Unix seconds.",
    RUN_LABELS,
)
RUN_INFO = _family(
    "model", "info", "Descriptive labels of a fine-tuned model; always 1.", RUN_LABELS
)
RUN_STATUS = _family(
    "model_status",
    "gauge",
    "State set: 1 for the model's current status, 0 for the others.",
    (*RUN_LABELS, "status"),
)
RUN_UP = _family(
    "model_up", "gauge", "1 if the last poll of this model succeeded, else 0.", RUN_LABELS
)
RUN_LAST_SUCCESS = _family(
    "last_poll_success_timestamp_seconds",
    "gauge",
    "When this model was last polled successfully, Unix seconds.",
    RUN_LABELS,
)
STEPS_PROCESSED = _family(
    "steps_processed",
    "counter",
    "Evaluated steps processed; continues across restarts with --state.file.",
    RUN_LABELS,
)
STEP_OUTLIERS = _family(
    "step_outliers",
    "counter",
    "Steps whose loss-like metric was at least --spike.factor times the median of the "
    "previous --spike.window steps.",
    (*RUN_LABELS, "metric"),
)
STEP_NONFINITE = _family(
    "step_nonfinite",
    "counter",
    "Steps whose loss-like metric was NaN or infinite.",
    (*RUN_LABELS, "metric"),
)

# ------------------------------------------------------------------------- exporter health

UP = _family(
    "up",
    "gauge",
    "1 if the last poll cycle reached the Cohere API and was authorised, else 0.",
    PROVIDER_LABELS,
)
POLL_DURATION = _family(
    "poll_duration_seconds", "gauge", "Wall-clock duration of the last poll cycle.", PROVIDER_LABELS
)
DROPPED = _family(
    "dropped",
    "counter",
    "Models and metric names left out by --limits.*, counted each time they are cut.",
    (*PROVIDER_LABELS, "kind"),
)
DROPPED_KINDS = ("models", "metric_names")
BUILD_INFO = _family("build", "info", "Version of cohere-finetune-exporter.", ())
BUILD_LABELS = {"version": __version__}
API_REQUESTS = _family(
    "api_requests",
    "counter",
    "Requests sent to the Cohere API, by endpoint and HTTP status (or transport error).",
    (*PROVIDER_LABELS, "endpoint", "code"),
)
API_RETRIES = _family(
    "api_retries",
    "counter",
    "Retries of API requests, by endpoint and reason (status or transport error).",
    (*PROVIDER_LABELS, "endpoint", "reason"),
)
BUDGET_REMAINING = _family(
    "api_budget_remaining",
    "gauge",
    "API requests that may still start in the current one-minute window.",
    PROVIDER_LABELS,
)
BUDGET_PER_MINUTE = _family(
    "api_budget_requests_per_minute",
    "gauge",
    "Client-side ceiling on API requests per minute (--cohere.max-requests-per-minute).",
    PROVIDER_LABELS,
)
BACKOFF = _family(
    "api_backoff_seconds",
    "gauge",
    "Seconds left in the pause that a 429 answer imposed on every request.",
    PROVIDER_LABELS,
)
ASYNCIO_TASKS = _family("asyncio_tasks", "gauge", "asyncio tasks alive in the exporter.", ())

# ------------------------------------------------------------------------- step metric names

STEP_PREFIX = f"{PREFIX}_step_"
# Provider metric names that would clash with a fixed family or with a suffix that Prometheus
# and OpenMetrics reserve for counters, histograms and info metrics get "_value" appended.
RESERVED_NAMES = frozenset({"number", "timestamp_seconds", "outliers", "nonfinite"})
RESERVED_SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket", "_info", "_gcount", "_gsum")
SKIPPED_METRICS = frozenset({"step"})  # Cohere's step number again, already in step_number
_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def run_label_values(provider: str, run_id: str) -> list[str]:
    """The values of ``RUN_LABELS`` for one run."""
    return [run_id]


def provider_label_values(provider: str) -> list[str]:
    """The values of ``PROVIDER_LABELS`` for one provider."""
    return []


def step_family_name(metric: str) -> str | None:
    """The family that carries provider metric ``metric``, or None when nothing usable is left."""
    cleaned = _INVALID_CHARS.sub("_", metric)
    if not cleaned.strip("_"):
        return None
    if cleaned in RESERVED_NAMES or cleaned.endswith(RESERVED_SUFFIXES):
        cleaned += "_value"
    return STEP_PREFIX + cleaned


def step_family(name: str, metric: str) -> Family:
    """The gauge family ``name`` (from ``step_family_name``) that carries ``metric``."""
    return Family(
        name, "gauge", f"Cohere metric {metric!r} at the newest evaluated step.", RUN_LABELS
    )


def help_text(family: Family, source: str) -> str:
    return f"{family.help} {source}"


def owners(metrics: set[str]) -> dict[str, str]:
    """Family name → the provider metric that fills it: when two names sanitise alike, the
    first in sorted order keeps the family and the others are left out, everywhere alike."""
    found: dict[str, str] = {}
    for metric in sorted(metrics - SKIPPED_METRICS):
        family = step_family_name(metric)
        if family is not None:
            found.setdefault(family, metric)
    return found
