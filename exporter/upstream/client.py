"""One pooled, budgeted, retrying reader of JSON answers, shared by every provider's client.

Calls cost money, so every attempt (retries included) passes the per-minute ``RequestBudget``;
a 429 pauses every request of the provider, not just the one that met it. A body is read up to
a cap, then parsed and validated whole against a pydantic model in a worker thread: nothing the
network sends blocks the event loop, and nothing half-parsed reaches the poller. Parsing stops
at a bounded number of JSON objects and a bounded depth, so a body of a million ``{}`` or of
100,000 nested ``[`` costs milliseconds and a few megabytes, not gigabytes.
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
from typing import Any, TypeVar

import aiohttp
import orjson
from pydantic import BaseModel, SecretStr, ValidationError
from yarl import URL

from exporter import __version__
from exporter.upstream.budget import RequestBudget
from exporter.upstream.errors import (
    ApiError,
    ApiResponseError,
    ApiStatusError,
    ApiTransportError,
)

USER_AGENT = f"finetune-exporter/{__version__}"
MAX_BODY_BYTES = 8 * 1024 * 1024
#: JSON objects one answer may hold: a page of 1,000 steps has 2,000; the largest real answer
#: (an unpaged list of thousands of jobs) well under this. Parsing stops when it is passed.
MAX_BODY_OBJECTS = 100_000
#: Error bodies larger than this are not parsed for a message: a message is a line.
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 200
INVALID_BODY = "invalid_body"
#: Bodies up to this size are parsed on the event loop (well under a millisecond), larger ones
#: in a worker thread.
INLINE_PARSE_BYTES = 64 * 1024
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})

ResponseT = TypeVar("ResponseT", bound=BaseModel)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: a few quick retries, never a storm (the budget caps them anyway).

    ``max_retries`` comes from the provider's settings; the rest are fixed properties of a
    polite client rather than settings.
    """

    max_retries: int
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


def printable(text: str) -> str:
    """One short line, safe for a log: control characters blanked, cut to a fixed length."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:MAX_MESSAGE_CHARS]


def message_from_body(body: bytes, content_type: str) -> str:
    """The API's own error message when it sent one; otherwise a short hint of the body.

    Cohere sends ``{"message": ...}``; OpenAI-style APIs such as Together nest it as
    ``{"error": {"message": ...}}``.
    """
    data: Any = None
    if len(body) <= MAX_ERROR_BODY_BYTES:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
    nested = data.get("error") if isinstance(data, dict) else None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text: str = data["message"]
    elif isinstance(nested, dict) and isinstance(nested.get("message"), str):
        text = nested["message"]
    elif "html" in content_type:
        text = f"non-JSON {content_type} body"
    else:
        text = body[: MAX_MESSAGE_CHARS * 4].decode("utf-8", "replace")
    return printable(text) or "(empty body)"


class _TooManyObjects(Exception):
    """Raised from inside the JSON decoder to stop a flood of objects early."""


def parse_body(
    endpoint: str,
    body: bytes,
    shape: type[ResponseT],
    max_objects: int,
    context: Mapping[str, Any] | None = None,
) -> ResponseT:
    """Decode and validate a 2xx body; every way it can be wrong is one ``ApiResponseError``."""
    data = decode_json(endpoint, body, max_objects)
    if not isinstance(data, dict):
        raise ApiResponseError(endpoint, f"expected a JSON object, got {type(data).__name__}")
    try:
        return shape.model_validate(data, context=context)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiResponseError(
            endpoint, f"unexpected shape at {where or 'top level'}: {first['msg']}"
        ) from None


def decode_json(endpoint: str, body: bytes, max_objects: int) -> Any:
    """The JSON value of ``body``, refused if it holds more than ``max_objects`` objects.

    orjson decodes a page of steps four times faster than the standard decoder, but it takes
    no hook to count objects as it builds them. Every object opens with a brace, so a body
    with no more braces than ``max_objects`` cannot hold more objects and goes to orjson;
    one with more braces, or one orjson refuses (bare ``NaN``, which Python servers send, or
    nesting past its limit), goes to the standard decoder, whose hook counts the objects and
    stops a flood after ``max_objects`` of them instead of after all of them.
    """
    if body.count(b"{") <= max_objects:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard decoder accepts what orjson does not, or says what is wrong
    built = 0

    def counted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal built
        built += 1
        if built > max_objects:
            raise _TooManyObjects
        return dict(pairs)

    try:
        return json.loads(body, object_pairs_hook=counted)
    except _TooManyObjects:
        raise ApiResponseError(endpoint, f"more than {max_objects} JSON objects") from None
    except RecursionError:
        raise ApiResponseError(endpoint, "JSON nested too deeply") from None
    except ValueError:
        raise ApiResponseError(endpoint, "body is not JSON") from None


class JsonClient:
    """GETs JSON from one API with a bearer key; safe to share between tasks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: SecretStr | None,
        timeout: float,
        budget: RequestBudget,
        retry: RetryPolicy,
        headers: Mapping[str, str] | None = None,
        observer: ClientObserver | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_body_objects: int = MAX_BODY_OBJECTS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        proxy: str | None = None,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._extra_headers = dict(headers or {})
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._observer = observer or ClientObserver()
        self._max_body_bytes = max_body_bytes
        self._max_body_objects = max_body_objects
        self.budget = budget
        self._retry = retry
        self._sleep = sleep
        self._wall = wall_clock
        self._random = rng or random.Random()
        self._rate_limit_streak = 0
        self._proxy = proxy

    def __repr__(self) -> str:
        return f"JsonClient(base_url={self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self._extra_headers}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    async def get(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, str],
        shape: type[ResponseT],
        context: Mapping[str, Any] | None = None,
    ) -> ResponseT:
        """One logical request: budgeted, retried on transient failures, parsed (``context`` is
        handed to the model's validators)."""
        url = URL(self.base_url + path, encoded=True).update_query(params)
        attempt = 0
        while True:
            await self.budget.acquire()
            try:
                status, content_type, body, retry_after = await self._fetch(endpoint, url)
                if 200 <= status < 300:
                    parsed = await self._parse(endpoint, body, shape, context)
            except ApiError as exc:
                self._observer.request_done(endpoint, exc.code)
                if isinstance(exc, ApiTransportError) and attempt < self._retry.max_retries:
                    await self._back_off(endpoint, exc.code, attempt)
                    attempt += 1
                    continue
                raise
            self._observer.request_done(endpoint, str(status))
            if 200 <= status < 300:
                self._rate_limit_streak = 0
                return parsed
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
            raise ApiStatusError(
                endpoint, status, message_from_body(body, content_type), retry_after
            )

    async def _parse(
        self, endpoint: str, body: bytes, shape: type[ResponseT], context: Mapping[str, Any] | None
    ) -> ResponseT:
        """Small bodies are parsed at once, large ones in a worker thread: a page of steps
        takes well under a millisecond, less than the hop to a thread and back, while a body
        of megabytes must never hold up a scrape."""
        limit = self._max_body_objects
        if len(body) <= INLINE_PARSE_BYTES:
            return parse_body(endpoint, body, shape, limit, context)
        return await asyncio.to_thread(parse_body, endpoint, body, shape, limit, context)

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
        self.budget.hold(wait)
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
                endpoint, "connection_error", f"{type(exc).__name__}: {printable(str(exc))}"
            ) from None

    async def _read_capped(self, endpoint: str, response: aiohttp.ClientResponse) -> bytes:
        """Read at most ``max_body_bytes``; a larger body is an error, not a memory spike."""
        declared = response.content_length
        if declared is not None and declared > self._max_body_bytes:
            raise ApiResponseError(endpoint, f"body of {declared} bytes exceeds the cap")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body_bytes:
                raise ApiResponseError(endpoint, f"body exceeds {self._max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
