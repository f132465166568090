"""The four read operations of the fine-tuning API over one pooled aiohttp session.

Every failure leaves here as a ``CohereApiError`` subclass carrying what a log line and a
metric need (endpoint, HTTP status or transport kind, the API's message), so the poller can
keep its last good data and say what happened without knowing aiohttp.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, SecretStr, ValidationError
from yarl import URL

from exporter import __version__
from exporter.api.budget import RequestBudget
from exporter.api.models import (
    FinetunedModel,
    GetFinetunedModelResponse,
    ListFinetunedModelsResponse,
    ListTrainingStepMetricsResponse,
    TrainingStepMetrics,
)

USER_AGENT = f"cohere-finetune-exporter/{__version__}"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_MESSAGE_CHARS = 200

DEFAULT_REQUESTS_PER_MINUTE = 400
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})

ResponseT = TypeVar("ResponseT", bound=BaseModel)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: a few quick retries, never a storm (the budget caps them anyway)."""

    max_retries: int = 2
    base_delay: float = 1.0
    max_delay: float = 20.0
    rate_limit_delay: float = 10.0  # first pause after a 429 without Retry-After, then doubled
    max_rate_limit_wait: float = 30.0  # longer pauses fail the request instead of waiting in it
    max_hold: float = 900.0  # an absurd Retry-After still resumes within 15 minutes


class ClientObserver:
    """Hooks for request accounting; the defaults do nothing."""

    def request_done(self, endpoint: str, code: str) -> None:
        """Called once per HTTP attempt with the status (or transport error kind)."""

    def retrying(self, endpoint: str, reason: str, delay: float) -> None:
        """Called before a retry, with why and how long it waits first."""


def proxy_for(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY and NO_PROXY choose for ``url``, decided once at start-up.

    aiohttp's ``trust_env`` would decide it again on every request, off the event loop.
    """
    proxies = urllib.request.getproxies_environment()
    target = URL(url)
    if target.host and urllib.request.proxy_bypass(target.host):
        return None
    return proxies.get(target.scheme)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class CohereApiError(Exception):
    """A request that produced no usable answer."""

    code = "error"

    def __init__(self, endpoint: str, detail: str) -> None:
        super().__init__(f"{endpoint}: {detail}")
        self.endpoint = endpoint
        self.detail = detail


class ApiStatusError(CohereApiError):
    """The API answered with a non-2xx status; ``message`` is its own explanation."""

    def __init__(
        self, endpoint: str, status: int, message: str, retry_after: str | None = None
    ) -> None:
        super().__init__(endpoint, f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.code = str(status)

    @property
    def is_auth_failure(self) -> bool:
        return self.status in (401, 403)


class ApiTransportError(CohereApiError):
    """No HTTP answer at all: refused, reset, DNS, TLS or timed out."""

    def __init__(self, endpoint: str, kind: str, detail: str) -> None:
        super().__init__(endpoint, detail)
        self.code = kind


class ApiResponseError(CohereApiError):
    """A 2xx answer whose body is not what the API promises (not JSON, wrong shape, too big)."""

    def __init__(self, endpoint: str, status: int, detail: str) -> None:
        super().__init__(endpoint, detail)
        self.code = str(status)


def model_path(model_id: str) -> str:
    """Percent-encode an ID as one path segment so no ID can reach another path."""
    if not model_id or model_id in {".", ".."}:
        raise ValueError("a model ID may not be empty or a dot segment")
    return quote(model_id, safe="")


def _message_from_body(body: bytes, content_type: str) -> str:
    """The API's ``message`` when it sent one; otherwise a short, printable hint of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text: str = data["message"]
    elif "html" in content_type:
        text = f"non-JSON {content_type} body"
    else:
        text = body.decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text[:MAX_MESSAGE_CHARS] or "(empty body)"


class CohereClient:
    """Read-only client of the fine-tuning endpoints; safe to share between tasks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: SecretStr | None,
        client_name: str = "cohere-finetune-exporter",
        timeout: float = 10.0,
        observer: ClientObserver | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        budget: RequestBudget | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        proxy: str | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._client_name = client_name
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._observer = observer or ClientObserver()
        self._max_body_bytes = max_body_bytes
        self._budget = budget or RequestBudget(DEFAULT_REQUESTS_PER_MINUTE)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._wall = wall_clock
        self._random = rng or random.Random()
        self._rate_limit_streak = 0
        self._proxy = proxy

    def __repr__(self) -> str:
        return f"CohereClient(base_url={self._base!r}, client_name={self._client_name!r})"

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "X-Client-Name": self._client_name,
        }
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    async def list_models(
        self, *, page_size: int = 50, page_token: str = ""
    ) -> ListFinetunedModelsResponse:
        params = {"page_size": str(page_size), "order_by": "created_at"}
        if page_token:
            params["page_token"] = page_token
        return await self._get(
            "list_models", "/v1/finetuning/finetuned-models", params, ListFinetunedModelsResponse
        )

    async def all_models(self, *, page_size: int = 100) -> list[FinetunedModel]:
        """Every model of the account, following ``next_page_token`` to the end."""
        return await collect_pages(
            "list_models",
            lambda token: self.list_models(page_size=page_size, page_token=token),
            lambda page: page.finetuned_models,
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

    async def get_model(self, model_id: str) -> FinetunedModel:
        path = f"/v1/finetuning/finetuned-models/{model_path(model_id)}"
        answer = await self._get("get_model", path, {}, GetFinetunedModelResponse)
        return answer.finetuned_model

    async def list_step_metrics(
        self, model_id: str, *, page_size: int = 50, page_token: str = ""
    ) -> ListTrainingStepMetricsResponse:
        path = f"/v1/finetuning/finetuned-models/{model_path(model_id)}/training-step-metrics"
        params = {"page_size": str(page_size)}
        if page_token:
            params["page_token"] = page_token
        return await self._get("list_step_metrics", path, params, ListTrainingStepMetricsResponse)

    async def _get(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, str],
        shape: type[ResponseT],
    ) -> ResponseT:
        """One logical request: budgeted, retried on transient failures, parsed."""
        url = URL(self._base + path, encoded=True).update_query(params)
        attempt = 0
        while True:
            await self._budget.acquire()
            try:
                status, content_type, body, retry_after = await self._fetch(endpoint, url)
            except CohereApiError as exc:
                self._observer.request_done(endpoint, exc.code)
                if isinstance(exc, ApiTransportError) and attempt < self._retry.max_retries:
                    await self._back_off(endpoint, exc.code, attempt)
                    attempt += 1
                    continue
                raise
            self._observer.request_done(endpoint, str(status))
            if status == 429:
                wait = self._rate_limited(retry_after)
                if attempt < self._retry.max_retries and wait <= self._retry.max_rate_limit_wait:
                    self._observer.retrying(endpoint, "429", wait)
                    attempt += 1
                    continue  # acquire() waits out the hold
            else:
                self._rate_limit_streak = 0
            if status in RETRYABLE_STATUSES and attempt < self._retry.max_retries:
                await self._back_off(endpoint, str(status), attempt)
                attempt += 1
                continue
            if not 200 <= status < 300:
                raise ApiStatusError(
                    endpoint, status, _message_from_body(body, content_type), retry_after
                )
            return self._parse(endpoint, status, body, shape)

    async def _back_off(self, endpoint: str, reason: str, attempt: int) -> None:
        """Exponential backoff with full jitter, so that many clients do not retry in step."""
        ceiling = min(self._retry.max_delay, self._retry.base_delay * 2**attempt)
        delay = self._random.uniform(0, ceiling)
        self._observer.retrying(endpoint, reason, delay)
        await self._sleep(delay)

    def _rate_limited(self, retry_after: str | None) -> float:
        """Pause every request for what Retry-After says, or for a growing wait of our own."""
        wait = parse_retry_after(retry_after, self._wall())
        if wait is None:
            wait = min(
                self._retry.max_rate_limit_wait * 4,
                self._retry.rate_limit_delay * 2**self._rate_limit_streak,
            )
        wait = min(wait, self._retry.max_hold)
        self._rate_limit_streak += 1
        self._budget.hold(wait)
        return wait

    async def _fetch(self, endpoint: str, url: URL) -> tuple[int, str, bytes, str | None]:
        try:
            async with self._session.get(
                url,
                headers=self._headers(),
                timeout=self._timeout,
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                body = await self._read_capped(endpoint, response)
                return (
                    response.status,
                    response.headers.get("Content-Type", ""),
                    body,
                    response.headers.get("Retry-After"),
                )
        except TimeoutError:
            raise ApiTransportError(endpoint, "timeout", "request timed out") from None
        except aiohttp.ClientError as exc:
            raise ApiTransportError(
                endpoint, "connection_error", f"{type(exc).__name__}: {_safe_error_text(exc)}"
            ) from None

    async def _read_capped(self, endpoint: str, response: aiohttp.ClientResponse) -> bytes:
        """Read at most ``max_body_bytes``; a larger body is an error, not a memory spike."""
        declared = response.content_length
        if declared is not None and declared > self._max_body_bytes:
            raise ApiResponseError(
                endpoint, response.status, f"body of {declared} bytes exceeds the cap"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body_bytes:
                raise ApiResponseError(
                    endpoint, response.status, f"body exceeds {self._max_body_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(endpoint: str, status: int, body: bytes, shape: type[ResponseT]) -> ResponseT:
        try:
            data: Any = json.loads(body)
        except ValueError:
            raise ApiResponseError(endpoint, status, "body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiResponseError(
                endpoint, status, f"expected a JSON object, got {type(data).__name__}"
            )
        try:
            return shape.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ApiResponseError(
                endpoint, status, f"unexpected shape at {where or 'top level'}: {first['msg']}"
            ) from None


class Paged(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=Paged)
ItemT = TypeVar("ItemT")
MAX_PAGES = 10_000


async def collect_pages(
    endpoint: str,
    fetch: Callable[[str], Awaitable[PageT]],
    items: Callable[[PageT], list[ItemT]],
) -> list[ItemT]:
    """Follow page tokens to the last page; a token seen twice would loop forever, so it fails."""
    collected: list[ItemT] = []
    token = ""
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        page = await fetch(token)
        collected.extend(items(page))
        token = page.next_page_token
        if not token:
            return collected
        if token in seen:
            raise ApiResponseError(endpoint, 200, "next_page_token repeats")
        seen.add(token)
    raise ApiResponseError(endpoint, 200, f"more than {MAX_PAGES} pages")


def _safe_error_text(exc: BaseException) -> str:
    """aiohttp's messages name host and port at most; keep them short and on one line."""
    return " ".join(str(exc).split())[:MAX_MESSAGE_CHARS]
