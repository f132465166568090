"""The settings, in groups of one concern each; ``exporter.settings.Settings`` joins them.

Validator names are unique across the groups: a name defined in two bases would hide one.

Each field names its command-line flag (and whether it is a secret) in ``json_schema_extra``,
read by ``exporter.settings.spelling``. Defaults live here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from exporter.setting_values import (
    check_api_url,
    check_run_ids,
    echo,
    flag,
    parse_listen_address,
    split_list,
)

ENV_PREFIX = "FINETUNE_EXPORTER_"
DEFAULT_PORT = 10042
PROVIDERS = ("cohere", "together")


class WebSettings(BaseModel):
    """Where and how ``/metrics`` and the pages are served."""

    web_listen_address: str = Field(
        default=f":{DEFAULT_PORT}",
        description="Address to serve /metrics on (HOST:PORT, :PORT for every interface).",
        json_schema_extra=flag("--web.listen-address"),
    )
    web_telemetry_path: str = Field(
        default="/metrics",
        description="Path under which to expose metrics.",
        json_schema_extra=flag("--web.telemetry-path"),
    )
    web_max_connections: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Most HTTP connections open at once; further ones are closed at once "
        "(unset: the descriptor limit minus 64, at most 1024).",
        json_schema_extra=flag("--web.max-connections"),
    )
    web_config_file: Path | None = Field(
        default=None,
        description="Exporter-toolkit web config file (TLS and basic auth).",
        json_schema_extra=flag("--web.config.file"),
    )

    @field_validator("web_listen_address")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("web_telemetry_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value == "/" or "?" in value or "#" in value:
            raise ValueError(f"expected a path like /metrics, got {echo(value)}")
        return value


class ProviderChoice(BaseModel):
    """Which providers ``serve`` polls."""

    providers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated providers to poll (cohere, together); empty: every one "
        "with a key.",
        json_schema_extra=flag("--providers"),
    )

    _split_providers = field_validator("providers", mode="before")(split_list)

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown provider {echo(unknown[0])} (known: {', '.join(PROVIDERS)})")
        return tuple(dict.fromkeys(value))


class CohereSettings(BaseModel):
    """Cohere's account: URL, key, runs, and how hard to ask."""

    cohere_api_url: str = Field(
        default="https://api.cohere.com",
        validation_alias=AliasChoices(
            "cohere_api_url", f"{ENV_PREFIX}COHERE_API_URL", "CO_API_URL"
        ),
        description="Base URL of the Cohere API.",
        json_schema_extra=flag("--cohere.api-url"),
    )
    cohere_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("cohere_api_key", "CO_API_KEY", "COHERE_API_KEY"),
        description="API key (environment only; prefer the key file).",
        json_schema_extra=flag("", secret=True),
    )
    cohere_api_key_file: Path | None = Field(
        default=None,
        description="File holding the API key; wins over CO_API_KEY.",
        json_schema_extra=flag("--cohere.api-key-file"),
    )
    cohere_client_name: str = Field(
        default="finetune-exporter",
        description="Sent as X-Client-Name to identify this caller.",
        json_schema_extra=flag("--cohere.client-name"),
    )
    cohere_models: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated fine-tuned model IDs; empty discovers every model.",
        json_schema_extra=flag("--cohere.models"),
    )
    cohere_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds one API request may take, body included.",
        json_schema_extra=flag("--cohere.timeout"),
    )
    cohere_max_requests_per_minute: int = Field(
        default=400,
        ge=1,
        le=100_000,
        description="Client-side ceiling on API requests per minute, retries included.",
        json_schema_extra=flag("--cohere.max-requests-per-minute"),
    )
    cohere_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a request after a 5xx, 429, timeout or connection error.",
        json_schema_extra=flag("--cohere.max-retries"),
    )

    _split_cohere = field_validator("cohere_models", mode="before")(split_list)
    _ids_cohere = field_validator("cohere_models")(check_run_ids)
    _url_cohere = field_validator("cohere_api_url")(check_api_url)


class TogetherSettings(BaseModel):
    """Together AI's account: URL, key, jobs, and how hard to ask."""

    together_api_url: str = Field(
        default="https://api.together.ai",
        validation_alias=AliasChoices(
            "together_api_url", f"{ENV_PREFIX}TOGETHER_API_URL", "TOGETHER_BASE_URL"
        ),
        description="Base URL of the Together API.",
        json_schema_extra=flag("--together.api-url"),
    )
    together_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("together_api_key", "TOGETHER_API_KEY"),
        description="API key (environment only; prefer the key file).",
        json_schema_extra=flag("", secret=True),
    )
    together_api_key_file: Path | None = Field(
        default=None,
        description="File holding the API key; wins over TOGETHER_API_KEY.",
        json_schema_extra=flag("--together.api-key-file"),
    )
    together_jobs: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated fine-tuning job IDs (ft-...); empty discovers every job.",
        json_schema_extra=flag("--together.jobs"),
    )
    together_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds one API request may take, body included.",
        json_schema_extra=flag("--together.timeout"),
    )
    together_max_requests_per_minute: int = Field(
        default=400,
        ge=1,
        le=100_000,
        description="Client-side ceiling on API requests per minute, retries included.",
        json_schema_extra=flag("--together.max-requests-per-minute"),
    )
    together_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a request after a 5xx, 429, timeout or connection error.",
        json_schema_extra=flag("--together.max-retries"),
    )

    _split_together = field_validator("together_jobs", mode="before")(split_list)
    _ids_together = field_validator("together_jobs")(check_run_ids)
    _url_together = field_validator("together_api_url")(check_api_url)


class PollSettings(BaseModel):
    """When and how much to poll, and which share of the runs (shards)."""

    poll_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between poll cycles (fixed schedule).",
        json_schema_extra=flag("--poll.interval"),
    )
    poll_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Requests in flight at once during a poll cycle.",
        json_schema_extra=flag("--poll.concurrency"),
    )
    poll_discovery_interval: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between refreshes of the run list and statuses.",
        json_schema_extra=flag("--poll.discovery-interval"),
    )
    poll_final_refresh_interval: float = Field(
        default=21600.0,
        gt=0,
        description="Seconds between re-reads of a finished (succeeded/failed/cancelled) run.",
        json_schema_extra=flag("--poll.final-refresh-interval"),
    )
    poll_page_size: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="page_size asked of paged step-metrics endpoints (Cohere).",
        json_schema_extra=flag("--poll.page-size"),
    )
    shard_count: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Replicas that split the runs between them by a hash of the run ID.",
        json_schema_extra=flag("--shard.count"),
    )
    shard_index: int = Field(
        default=0,
        ge=0,
        description="Which of --shard.count shards this replica polls (0-based).",
        json_schema_extra=flag("--shard.index"),
    )


class JudgeSettings(BaseModel):
    """How steps are judged, what is remembered across restarts, and the caps."""

    spike_metrics: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("cross_entropy", "loss", "train/loss", "eval/loss"),
        description="Comma-separated loss-like metrics whose every step is checked for spikes.",
        json_schema_extra=flag("--spike.metrics"),
    )
    spike_factor: float = Field(
        default=2.0,
        gt=1,
        description="A step is an outlier at this many times the median of the window.",
        json_schema_extra=flag("--spike.factor"),
    )
    spike_window: int = Field(
        default=10,
        ge=3,
        le=1000,
        description="Previous steps whose median a step is compared with.",
        json_schema_extra=flag("--spike.window"),
    )
    state_file: Path | None = Field(
        default=None,
        description="File that keeps each run's last processed step across restarts.",
        json_schema_extra=flag("--state.file"),
    )
    limits_max_models: int = Field(
        default=5000,
        ge=1,
        description="Most runs exported per provider; the most recently created are kept.",
        json_schema_extra=flag("--limits.max-models"),
    )
    limits_max_metrics_per_model: int = Field(
        default=100,
        ge=1,
        description="Most metric names exported per run (alphabetical order).",
        json_schema_extra=flag("--limits.max-metrics-per-model"),
    )

    _split_spikes = field_validator("spike_metrics", mode="before")(split_list)


class OutputSettings(BaseModel):
    """The status page's curves and the log."""

    ui_history: bool = Field(
        default=True,
        description="Keep each run's loss curves for the status page and /api/runs (false: "
        "none, and no extra request to fill them).",
        json_schema_extra=flag("--ui.history"),
    )
    ui_finished_runs: int = Field(
        default=50,
        ge=0,
        le=100_000,
        description="Finished runs the status page shows, most recent first (?all=1 shows all).",
        json_schema_extra=flag("--ui.finished-runs"),
    )
    log_level: Literal["debug", "info", "warn", "error"] = Field(
        default="info",
        description="Only log messages with the given severity or above.",
        json_schema_extra=flag("--log.level"),
    )
    log_format: Literal["logfmt", "json"] = Field(
        default="logfmt",
        description="Output format of log messages.",
        json_schema_extra=flag("--log.format"),
    )
