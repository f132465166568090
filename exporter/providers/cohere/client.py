"""The three read operations of Cohere's fine-tuning API that the exporter uses, and paging.

Each method is one request through the shared ``JsonClient`` (budget, retries, capped bodies);
``collect_pages`` follows ``next_page_token`` with a guard against a token that repeats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar
from urllib.parse import quote

from exporter.providers.cohere.models import (
    FinetunedModel,
    GetFinetunedModelResponse,
    ListFinetunedModelsResponse,
    ListTrainingStepMetricsResponse,
    TrainingStepMetrics,
)
from exporter.upstream.client import JsonClient
from exporter.upstream.errors import ApiResponseError

MODELS_PATH = "/v1/finetuning/finetuned-models"
MAX_PAGES = 10_000


def model_path(model_id: str) -> str:
    """Percent-encode an ID as one path segment so no ID can reach another path."""
    if not model_id or model_id in {".", ".."}:
        raise ValueError("a model ID may not be empty or a dot segment")
    return quote(model_id, safe="")


class CohereClient:
    """Read-only client of the fine-tuning endpoints; safe to share between tasks."""

    def __init__(self, http: JsonClient) -> None:
        self.http = http

    def __repr__(self) -> str:
        return f"CohereClient(base_url={self.http.base_url!r})"

    async def list_models(
        self, *, page_size: int = 50, page_token: str = ""
    ) -> ListFinetunedModelsResponse:
        params = {"page_size": str(page_size), "order_by": "created_at"}
        if page_token:
            params["page_token"] = page_token
        return await self.http.get("list_models", MODELS_PATH, params, ListFinetunedModelsResponse)

    async def model_pages(self, *, page_size: int = 100) -> AsyncIterator[list[FinetunedModel]]:
        """Every model of the account a page at a time, following ``next_page_token``."""
        guard = PageGuard("list_models")
        token = ""
        while True:
            page = await self.list_models(page_size=page_size, page_token=token)
            yield page.finetuned_models
            if not page.next_page_token:
                return
            token = guard.next(page.next_page_token)

    async def get_model(self, model_id: str) -> FinetunedModel:
        path = f"{MODELS_PATH}/{model_path(model_id)}"
        answer = await self.http.get("get_model", path, {}, GetFinetunedModelResponse)
        return answer.finetuned_model

    async def list_step_metrics(
        self,
        model_id: str,
        *,
        page_size: int = 50,
        page_token: str = "",
        from_step: int | None = None,
    ) -> ListTrainingStepMetricsResponse:
        """One page; with ``from_step`` steps below it come back as bare step numbers."""
        path = f"{MODELS_PATH}/{model_path(model_id)}/training-step-metrics"
        params = {"page_size": str(page_size)}
        if page_token:
            params["page_token"] = page_token
        context = None if from_step is None else {"from_step": from_step}
        return await self.http.get(
            "list_step_metrics", path, params, ListTrainingStepMetricsResponse, context
        )

    async def all_step_metrics(
        self, model_id: str, *, page_size: int = 100
    ) -> list[TrainingStepMetrics]:
        """Every listed step of one model, in whatever order the API pages them."""
        return await collect_pages(
            "list_step_metrics",
            lambda token: self.list_step_metrics(model_id, page_size=page_size, page_token=token),
            lambda page: page.step_metrics,
        )


class Paged(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=Paged)
ItemT = TypeVar("ItemT")


class PageGuard:
    """Stops a walk that would never end: a token seen before, or more than ``MAX_PAGES``."""

    def __init__(self, endpoint: str, first_token: str = "") -> None:
        self._endpoint = endpoint
        self._seen = {first_token}

    def next(self, token: str) -> str:
        if token in self._seen:
            raise ApiResponseError(self._endpoint, "next_page_token repeats")
        if len(self._seen) > MAX_PAGES:
            raise ApiResponseError(self._endpoint, f"more than {MAX_PAGES} pages")
        self._seen.add(token)
        return token


async def collect_pages(
    endpoint: str,
    fetch: Callable[[str], Awaitable[PageT]],
    items: Callable[[PageT], list[ItemT]],
) -> list[ItemT]:
    """Follow page tokens to the last page."""
    collected: list[ItemT] = []
    guard = PageGuard(endpoint)
    token = ""
    while True:
        page = await fetch(token)
        collected.extend(items(page))
        if not page.next_page_token:
            return collected
        token = guard.next(page.next_page_token)
