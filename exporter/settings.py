"""Settings of every command, from flags, environment, ``.env`` and key files.

``Settings`` is the one source of defaults: every component is built from it by one factory,
and nothing else restates a default. Each field names its command-line flag (and whether it is
a secret) in ``json_schema_extra``; ``spelling()`` is the one reader of that metadata, so the
flag parser, ``check-config``, error messages and the README table spell a setting alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from exporter.setting_groups import (
    DEFAULT_PORT,
    ENV_PREFIX,
    PROVIDERS,
    CohereSettings,
    JudgeSettings,
    OutputSettings,
    PollSettings,
    ProviderChoice,
    TogetherSettings,
    WebSettings,
)
from exporter.setting_values import parse_listen_address, read_key

__all__ = ["DEFAULT_PORT", "ENV_PREFIX", "PROVIDERS", "ConfigError", "Settings", "load_settings"]
#: The settings that give each provider its key, as an error names them.
KEY_SETTINGS = {
    "cohere": "--cohere.api-key-file / CO_API_KEY",
    "together": "--together.api-key-file / TOGETHER_API_KEY",
}


# Fields are listed in reverse base order, so the groups read web first, log last.
class Settings(
    OutputSettings,
    JudgeSettings,
    PollSettings,
    TogetherSettings,
    CohereSettings,
    ProviderChoice,
    WebSettings,
    BaseSettings,
):
    """What every command needs; ``check-config`` prints it with secrets masked."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

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
