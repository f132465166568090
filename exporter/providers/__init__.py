"""Every provider the exporter can poll, each built from ``Settings`` by one factory.

A provider is a small package (client, response models, paging or windows) behind the core's
``Provider`` protocol; nothing outside its package imports its types. ``Account`` is the part
of the settings one provider's client needs, so the factories below read settings in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from pydantic import SecretStr

from exporter.core.discovery import Discovery
from exporter.core.provider import Provider
from exporter.core.sharding import Shard
from exporter.providers.cohere.client import CohereClient
from exporter.providers.cohere.provider import CohereProvider
from exporter.providers.together.client import TogetherClient
from exporter.providers.together.provider import TogetherProvider
from exporter.settings import PROVIDERS, Settings
from exporter.upstream.budget import RequestBudget
from exporter.upstream.client import ClientObserver, JsonClient, RetryPolicy, proxy_for

NAMES = PROVIDERS
#: Cohere pages a run's first read may take for its curve (newest-first lists; an oldest-first
#: list is walked whole on the first read anyway).
HISTORY_PAGES = 4


@dataclass(frozen=True)
class Account:
    """One provider's account as the settings describe it."""

    name: str
    api_url: str
    api_key: SecretStr | None = field(repr=False)
    run_ids: tuple[str, ...]
    timeout: float
    requests_per_minute: int
    max_retries: int
    headers: dict[str, str]


def account(settings: Settings, name: str) -> Account:
    if name == "cohere":
        return Account(
            name,
            settings.cohere_api_url,
            settings.cohere_api_key,
            settings.cohere_models,
            settings.cohere_timeout,
            settings.cohere_max_requests_per_minute,
            settings.cohere_max_retries,
            {"X-Client-Name": settings.cohere_client_name},
        )
    return Account(
        name,
        settings.together_api_url,
        settings.together_api_key,
        settings.together_jobs,
        settings.together_timeout,
        settings.together_max_requests_per_minute,
        settings.together_max_retries,
        {},
    )


def budget_for(settings: Settings, name: str) -> RequestBudget:
    return RequestBudget(account(settings, name).requests_per_minute)


def json_client(
    settings: Settings,
    name: str,
    session: aiohttp.ClientSession,
    *,
    budget: RequestBudget,
    observer: ClientObserver | None = None,
    retry: RetryPolicy | None = None,
) -> JsonClient:
    """The HTTP side of one provider's account."""
    access = account(settings, name)
    return JsonClient(
        session,
        base_url=access.api_url,
        api_key=access.api_key,
        headers=access.headers,
        timeout=access.timeout,
        budget=budget,
        retry=retry or RetryPolicy(max_retries=access.max_retries),
        observer=observer,
        proxy=proxy_for(access.api_url),
    )


def provider_for(settings: Settings, name: str, http: JsonClient) -> Provider:
    if name == "cohere":
        return CohereProvider(
            CohereClient(http),
            page_size=settings.poll_page_size,
            history_pages=HISTORY_PAGES if settings.ui_history else 1,
        )
    return TogetherProvider(TogetherClient(http), concurrency=settings.poll_concurrency)


def discovery_for(settings: Settings, name: str, provider: Provider) -> Discovery:
    """Which of the provider's runs this replica tracks: configured or all, shard, limits."""
    return Discovery(
        provider,
        run_ids=account(settings, name).run_ids,
        max_runs=settings.limits_max_models,
        shard=Shard.from_settings(settings),
        concurrency=settings.poll_concurrency,
    )
