"""Every provider the exporter can poll, each built from ``Settings`` by one factory.

A provider is a small package (client, response models, paging) behind the core's
``Provider`` protocol; nothing outside its package imports its types.
"""

from __future__ import annotations

import aiohttp

from exporter.core.discovery import Discovery
from exporter.core.provider import Provider
from exporter.core.sharding import Shard
from exporter.providers.cohere.client import CohereClient
from exporter.providers.cohere.provider import CohereProvider
from exporter.settings import Settings
from exporter.upstream.budget import RequestBudget
from exporter.upstream.client import ClientObserver, JsonClient, RetryPolicy, proxy_for

NAMES = ("cohere",)


def budget_for(settings: Settings, name: str) -> RequestBudget:
    return RequestBudget(settings.cohere_max_requests_per_minute)


def run_ids(settings: Settings, name: str) -> tuple[str, ...]:
    """The runs named in the settings (empty: every run of the account)."""
    return settings.cohere_models


def json_client(
    settings: Settings,
    name: str,
    session: aiohttp.ClientSession,
    *,
    budget: RequestBudget,
    observer: ClientObserver | None = None,
    retry: RetryPolicy | None = None,
) -> JsonClient:
    """The HTTP side of one provider's account, as the settings describe it."""
    return JsonClient(
        session,
        base_url=settings.cohere_api_url,
        api_key=settings.cohere_api_key,
        headers={"X-Client-Name": settings.cohere_client_name},
        timeout=settings.cohere_timeout,
        budget=budget,
        retry=retry or RetryPolicy(max_retries=settings.cohere_max_retries),
        observer=observer,
        proxy=proxy_for(settings.cohere_api_url),
    )


def provider_for(settings: Settings, name: str, http: JsonClient) -> Provider:
    return CohereProvider(CohereClient(http), page_size=settings.poll_page_size)


def discovery_for(settings: Settings, name: str, provider: Provider) -> Discovery:
    """Which of the provider's runs this replica tracks: configured or all, shard, limits."""
    return Discovery(
        provider,
        run_ids=run_ids(settings, name),
        max_runs=settings.limits_max_models,
        shard=Shard.from_settings(settings),
        concurrency=settings.poll_concurrency,
    )
