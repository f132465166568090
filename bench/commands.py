"""The command lines of every child the benchmark starts: ``serve``, ``simulate``, ``backfill``.

Flags of ``serve`` and ``backfill`` are spelled from ``exporter.settings`` (names, defaults and
bounds), so a renamed flag or a moved bound breaks the benchmark at once instead of letting it
measure a configuration nobody runs. Every exporter is told exactly which providers to poll
(``--providers``): the children hold a key for each, and a provider without a simulator URL
must never be polled at its real address.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from annotated_types import Le

from exporter.settings import PROVIDERS, Settings, spelling

PYTHON = sys.executable


def setting_default(name: str) -> Any:
    """The exporter's default of setting ``name``: what a deployment gets without the flag."""
    return Settings.model_fields[name].default


def setting_maximum(name: str) -> int:
    """The upper bound (``le``) the exporter accepts for setting ``name``."""
    for bound in Settings.model_fields[name].metadata:
        if isinstance(bound, Le) and isinstance(bound.le, int):
            return bound.le
    raise LookupError(f"setting {name} has no integer upper bound")


#: The path the exporter serves metrics on unless told otherwise; the baselines use it too.
METRICS_PATH: str = setting_default("web_telemetry_path")
#: The most runs the exporter keeps per provider unless told otherwise.
DEFAULT_MAX_MODELS: int = setting_default("limits_max_models")


def max_requests_per_minute(provider: str) -> int:
    """The provider's ceiling, so that the client-side budget never throttles a benchmark."""
    return setting_maximum(f"{provider}_max_requests_per_minute")


#: The Cohere ceiling (the setting every benchmark before the Together cells raised).
MAX_REQUESTS_PER_MINUTE = max_requests_per_minute("cohere")


def max_models_for(runs_per_provider: int) -> int:
    """``--limits.max-models`` (per provider) that leaves no run out: the default, or twice the
    runs of the biggest provider where that is more."""
    return max(DEFAULT_MAX_MODELS, 2 * runs_per_provider)


def setting_flags(**values: str | int | float | bool) -> list[str]:
    """Flags for the given settings, each spelled as ``exporter.settings`` spells it."""
    argv: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        argv += [spelling(name).flag, text]
    return argv


def provider_flags(apis: Mapping[str, str]) -> list[str]:
    """``--providers`` naming exactly the providers in ``apis`` (provider → simulator URL),
    each one's URL and its request budget at the exporter's ceiling."""
    unknown = sorted(set(apis) - set(PROVIDERS))
    if unknown or not apis:
        raise ValueError(f"providers must be some of {', '.join(PROVIDERS)}, got {unknown}")
    values: dict[str, str | int] = {"providers": ",".join(apis)}
    for provider, url in apis.items():
        values[f"{provider}_api_url"] = url
        values[f"{provider}_max_requests_per_minute"] = max_requests_per_minute(provider)
    return setting_flags(**values)


def exporter_argv(
    port: int,
    apis: Mapping[str, str] | str,
    *,
    interval: float,
    discovery: float,
    concurrency: int,
    max_models: int = DEFAULT_MAX_MODELS,
    **settings: str | int | float | bool,
) -> list[str]:
    """``serve`` polling ``apis`` (provider → URL; a bare URL is Cohere's) with the budgets out
    of the way and ``--log.level warn``; ``settings`` are further settings by field name."""
    if isinstance(apis, str):
        apis = {"cohere": apis}
    return [
        PYTHON,
        "-m",
        "exporter",
        "serve",
        *provider_flags(apis),
        *setting_flags(
            web_listen_address=f"127.0.0.1:{port}",
            poll_interval=float(interval),
            poll_discovery_interval=float(discovery),
            poll_concurrency=concurrency,
            limits_max_models=max_models,
            log_level="warn",
            **settings,
        ),
    ]


def backfill_argv(out: Path, apis: Mapping[str, str], **settings: str | int | float) -> list[str]:
    """``backfill --out OUT`` reading ``apis`` with the budgets out of the way."""
    return [
        PYTHON,
        "-m",
        "exporter",
        "backfill",
        "--out",
        str(out),
        *provider_flags(apis),
        *setting_flags(log_level="warn", **settings),
    ]


def simulate_argv(
    port: int,
    runs: int,
    speed: float,
    *,
    provider: str = "cohere",
    scenario: Path | None = None,
) -> list[str]:
    """``simulate`` of one provider: ``runs`` random runs (seed 1), or a scenario file's."""
    argv = [
        PYTHON,
        "-m",
        "exporter",
        "simulate",
        "--provider",
        provider,
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--runs",
        str(runs),
        "--seed",
        "1",
        "--speed",
        f"{speed:g}",
        "--log.level",
        "warn",
    ]
    if scenario is not None:
        argv += ["--scenario", str(scenario)]
    return argv
