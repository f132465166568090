"""Settings of every command, from flags, environment, ``.env`` and key files.

``Settings`` is the one source of defaults: every component is built from it by one factory,
and nothing else restates a default. Each field names its command-line flag (and whether it is
a secret) in ``json_schema_extra``; ``spelling()`` is the one reader of that metadata, so the
flag parser, ``check-config``, error messages and the README table spell a setting alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from exporter.setting_values import (
    check_api_url,
    check_run_ids,
    echo,
    flag,
    parse_listen_address,
    read_key,
    split_list,
)

ENV_PREFIX = "FINETUNE_EXPORTER_"
DEFAULT_PORT = 10042
PROVIDERS = ("cohere", "together")
#: The settings that give each provider its key, as an error names them.
KEY_SETTINGS = {
    "cohere": "--cohere.api-key-file / CO_API_KEY",
    "together": "--together.api-key-file / TOGETHER_API_KEY",
}


class Settings(BaseSettings):
    """What every command needs; ``check-config`` prints it with secrets masked."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

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
    providers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated providers to poll (cohere, together); empty: every one "
        "with a key.",
        json_schema_extra=flag("--providers"),
    )
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

    _split = field_validator(
        "providers", "cohere_models", "together_jobs", "spike_metrics", mode="before"
    )(split_list)
    _ids = field_validator("cohere_models", "together_jobs")(check_run_ids)
    _url = field_validator("cohere_api_url", "together_api_url")(check_api_url)

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown provider {echo(unknown[0])} (known: {', '.join(PROVIDERS)})")
        return tuple(dict.fromkeys(value))

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

    @model_validator(mode="after")
    def _check_shard(self) -> Settings:
        if self.shard_index >= self.shard_count:
            raise ValueError(
                f"shard_index: {self.shard_index} is not below --shard.count {self.shard_count}"
            )
        return self

    @model_validator(mode="after")
    def _read_key_files(self) -> Settings:
        self.cohere_api_key = _key(self.cohere_api_key, self.cohere_api_key_file, "cohere")
        self.together_api_key = _key(self.together_api_key, self.together_api_key_file, "together")
        return self

    def key(self, provider: str) -> SecretStr | None:
        return self.cohere_api_key if provider == "cohere" else self.together_api_key

    def polled_providers(self) -> tuple[str, ...]:
        """The providers ``serve`` polls: those named by --providers, each of which needs its
        key, or else every provider whose key is set; none at all is a configuration error."""
        if self.providers:
            missing = [name for name in self.providers if self.key(name) is None]
            if missing:
                raise ConfigError(
                    [f"{KEY_SETTINGS[name]}: no API key for provider {name}" for name in missing]
                )
            return self.providers
        keyed = tuple(name for name in PROVIDERS if self.key(name) is not None)
        if not keyed:
            raise ConfigError(
                ["no API key: set one of " + " or ".join(KEY_SETTINGS[name] for name in PROVIDERS)]
            )
        return keyed

    @property
    def listen(self) -> tuple[str | None, int]:
        return parse_listen_address(self.web_listen_address)

    def secrets(self) -> list[str]:
        """Every secret value set, for the log handler to mask wherever it appears."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if spelling(name).secret and isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        return found


def _key(given: SecretStr | None, file: Path | None, provider: str) -> SecretStr | None:
    """The key from its file (which wins) or the environment, stripped; empty is an error."""
    if file is not None:
        return read_key(file, f"{provider}_api_key_file")
    if given is None:
        return None
    stripped = given.get_secret_value().strip()
    if not stripped:
        env = KEY_SETTINGS[provider].rpartition(" / ")[2]
        raise ValueError(f"{provider}_api_key: {env} is set but empty")
    return SecretStr(stripped)


class ConfigError(Exception):
    """Every wrong setting at once, each line naming its flag, so a user fixes them in one go."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Spelling:
    """How a user spells one setting: its flag (if any), every environment name, secrecy."""

    name: str
    flag: str
    env: tuple[str, ...]
    secret: bool

    def __str__(self) -> str:
        return " / ".join(([self.flag] if self.flag else []) + list(self.env))


def spelling(name: str) -> Spelling:
    """The one reader of a field's metadata. Environment names come from what pydantic-settings
    actually reads: the aliases where a field has them, else the prefixed field name."""
    field = Settings.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        env = tuple(str(choice) for choice in alias.choices if choice != name)
    else:
        env = (f"{ENV_PREFIX}{name.upper()}",)
    return Spelling(name, str(extra.get("flag") or ""), env, bool(extra.get("secret")))


def describe_errors(exc: ValidationError) -> list[str]:
    """Turn pydantic's errors into one line per setting, never echoing an input value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        name = loc[0] if loc else ""
        if not name and ":" in message:
            name, _, message = message.partition(": ")
        if name in Settings.model_fields:
            problems.append(f"{spelling(name)}: {message}")
        else:
            problems.append(f"{name}: {message}" if name else message)
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Build settings with flags as overrides; raise ConfigError naming each bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
