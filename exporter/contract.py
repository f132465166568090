"""The metrics contract, stated once: family names, types, HELP texts, labels and sanitising.

The live collectors, ``backfill`` and the dashboard generator all read this module, so a name
or a label changes here or nowhere. Every run series carries ``provider`` and ``finetune_id``;
human-readable extras live on the info family. Every name that comes from an API passes
through ``step_family_name`` and every label value through the exposition's escaping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from exporter import __version__
from exporter.core.provider import PHASES

PREFIX = "finetune"
PROVIDER_LABEL = "provider"
RUN_ID_LABEL = "finetune_id"
RUN_LABELS: tuple[str, ...] = (PROVIDER_LABEL, RUN_ID_LABEL)
PROVIDER_LABELS: tuple[str, ...] = (PROVIDER_LABEL,)
#: Labels of the info family every provider fills; each adds its own (``Run.labels``).
INFO_LABELS: tuple[str, ...] = ("name", "base_model")
POLLED = "Polled from the provider's fine-tuning API."
BACKFILLED = "Backfilled from the provider's fine-tuning API."
PHASE_VALUES = PHASES

FamilyType = Literal["gauge", "counter", "info"]


@dataclass(frozen=True)
class Family:
    """One metric family: ``name`` without the ``_total``/``_info`` suffix the format adds."""

    name: str
    type: FamilyType
    help: str
    labels: tuple[str, ...] = ()
    #: For a step family: (provider, the provider's metric) pairs its HELP names.
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def sample(self) -> str:
        """The name samples carry: counters end in ``_total``, info families in ``_info``."""
        return self.name + {"counter": "_total", "info": "_info", "gauge": ""}[self.type]


def _family(name: str, kind: FamilyType, help_text: str, labels: tuple[str, ...]) -> Family:
    return Family(f"{PREFIX}_{name}", kind, help_text, labels)


# ------------------------------------------------------------------------- run families

STEP_NUMBER = _family("step_number", "gauge", "Number of the newest logged step.", RUN_LABELS)
STEP_TIMESTAMP = _family(
    "step_timestamp_seconds",
    "gauge",
    "When the newest logged step was taken, Unix seconds.",
    RUN_LABELS,
)
RUN_INFO = _family(
    "run",
    "info",
    "Descriptive labels of a fine-tuning run (name, base model, provider extras); always 1.",
    RUN_LABELS,
)
RUN_PHASE = _family(
    "run_phase",
    "gauge",
    f"State set: 1 for the run's current phase, 0 for the others ({', '.join(PHASES)}).",
    (*RUN_LABELS, "phase"),
)
RUN_STATUS = _family(
    "run_status",
    "gauge",
    "The provider's own status string for the run, as the label status; always 1.",
    (*RUN_LABELS, "status"),
)
RUN_UP = _family("run_up", "gauge", "1 if the last poll of this run succeeded, else 0.", RUN_LABELS)
RUN_LAST_SUCCESS = _family(
    "run_last_poll_success_timestamp_seconds",
    "gauge",
    "When this run was last polled successfully, Unix seconds.",
    RUN_LABELS,
)
RUN_TOTAL_STEPS = _family(
    "run_total_steps",
    "gauge",
    "Steps the run will take in all, where the provider tells (Together: its events).",
    RUN_LABELS,
)
RUN_ETA = _family(
    "run_eta_seconds",
    "gauge",
    "Seconds the provider expects until the run's next phase, as of the last run list walk.",
    RUN_LABELS,
)
RUN_TOKENS = _family(
    "run_tokens",
    "gauge",
    "Tokens the provider counts for the run (Together: token_count).",
    RUN_LABELS,
)
STEPS_PROCESSED = _family(
    "steps_processed",
    "counter",
    "Logged steps processed; continues across restarts with --state.file.",
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
    "1 if the provider's last poll cycle reached its API and was authorised, else 0.",
    PROVIDER_LABELS,
)
POLL_DURATION = _family(
    "poll_duration_seconds",
    "gauge",
    "Wall-clock duration of the provider's last poll cycle.",
    PROVIDER_LABELS,
)
DROPPED = _family(
    "dropped",
    "counter",
    "Runs and metric names left out by --limits.*, counted each time they are cut.",
    (*PROVIDER_LABELS, "kind"),
)
DROPPED_KINDS = ("runs", "metric_names")
BUILD_INFO = _family("exporter_build", "info", "Version of finetune-exporter.", ())
BUILD_LABELS = {"version": __version__}
API_REQUESTS = _family(
    "api_requests",
    "counter",
    "Requests sent to the provider's API, by endpoint and HTTP status, transport error or "
    "invalid_body.",
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
    "Client-side ceiling on API requests per minute (--<provider>.max-requests-per-minute).",
    PROVIDER_LABELS,
)
BACKOFF = _family(
    "api_backoff_seconds",
    "gauge",
    "Seconds left in the pause that a 429 answer imposed on every request to the provider.",
    PROVIDER_LABELS,
)
ASYNCIO_TASKS = _family(
    "exporter_asyncio_tasks", "gauge", "asyncio tasks alive in the exporter.", ()
)

# ------------------------------------------------------------------------- step metric names

STEP_PREFIX = f"{PREFIX}_step_"
# Provider metric names that would clash with a fixed family or with a suffix that Prometheus
# and OpenMetrics reserve for counters, histograms and info metrics get "_value" appended.
RESERVED_NAMES = frozenset({"number", "timestamp_seconds", "outliers", "nonfinite"})
RESERVED_SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket", "_info", "_gcount", "_gsum")
_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def run_label_values(provider: str, run_id: str) -> list[str]:
    """The values of ``RUN_LABELS`` for one run."""
    return [provider, run_id]


def provider_label_values(provider: str) -> list[str]:
    """The values of ``PROVIDER_LABELS`` for one provider."""
    return [provider]


def metric_label(metric: str) -> str | None:
    """A provider metric's name as a label value and family suffix: ``train/loss`` →
    ``train_loss``; None when nothing usable is left."""
    cleaned = _INVALID_CHARS.sub("_", metric)
    if not cleaned.strip("_"):
        return None
    if cleaned in RESERVED_NAMES or cleaned.endswith(RESERVED_SUFFIXES):
        cleaned += "_value"
    return cleaned


def step_family_name(metric: str) -> str | None:
    """The family that carries provider metric ``metric``, or None when nothing usable is left."""
    label = metric_label(metric)
    return None if label is None else STEP_PREFIX + label


def step_family(name: str, sources: Mapping[str, str]) -> Family:
    """The gauge family ``name`` that carries, for each provider, the metric named in
    ``sources`` (provider → the provider's own metric name), for its HELP."""
    pairs = tuple(sorted(sources.items()))
    named = ", ".join(f"{metric!r} ({provider})" for provider, metric in pairs)
    return Family(
        name, "gauge", f"Provider metric {named} at the newest logged step.", RUN_LABELS, pairs
    )


def help_text(family: Family, source: str) -> str:
    return f"{family.help} {source}"


def owners(metrics: Mapping[str, set[str]]) -> dict[str, dict[str, str]]:
    """Family name → provider → the metric that fills it for that provider.

    When two of one provider's names sanitise alike, the first in sorted order keeps the
    family and the others are left out, live and in ``backfill`` alike; different providers
    never take a family from each other, since their series differ by ``provider``.
    """
    found: dict[str, dict[str, str]] = {}
    for provider, names in sorted(metrics.items()):
        for metric in sorted(names):
            family = step_family_name(metric)
            if family is not None:
                found.setdefault(family, {}).setdefault(provider, metric)
    return found
