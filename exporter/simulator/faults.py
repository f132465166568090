"""Fault injection for the simulated API: the failures the exporter must survive, on demand.

A ``Fault`` says what goes wrong (an error status, a 429, a dropped connection, a hung or
trickling answer, a malformed or enormous body, a page token that never ends) and for which
requests (endpoint, model, probability, how many times). A ``FaultInjector`` holds the active
faults and picks, per API request, the first one that fires; ``build_app`` consults it after
authentication and request counting, and ``respond`` turns the picked fault into what the client
sees. Random decisions come from a seeded ``random.Random``, so a run repeats exactly.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import email.utils
import http
import json
import math
import random
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from aiohttp import web

from exporter.simulator import encoding

FaultKind = Literal[
    "status",
    "rate-limit",
    "reset",
    "hang",
    "trickle",
    "invalid-json",
    "list-body",
    "string-step",
    "unknown-status",
    "html-200",
    "huge-body",
    "repeat-token",
]
RetryAfter = Literal["seconds", "http-date"]

#: Every fault kind, in declaration order.
KINDS: Final[tuple[str, ...]] = get_args(FaultKind)
#: The API operations a fault can target; ``"any"`` matches each of them.
ENDPOINTS: Final = ("list_models", "get_model", "list_events", "list_step_metrics")
_RETRY_AFTER: Final[tuple[str, ...]] = get_args(RetryAfter)

#: Kinds that only make sense on some endpoints: with ``endpoint="any"`` they match only these.
_KIND_ENDPOINTS: Final[Mapping[str, tuple[str, ...]]] = {
    "string-step": ("list_step_metrics",),
    "unknown-status": ("list_models", "get_model"),
    "repeat-token": ("list_models", "list_events", "list_step_metrics"),
}

UNKNOWN_STATUS: Final = "STATUS_FROM_THE_FUTURE"
INVALID_JSON_BODY: Final = b'{"step_metrics": ['
HTML_BODY: Final = "<html><body>Maintenance</body></html>"
#: The unknown field a huge body is padded with.
PADDING_FIELD: Final = "simulator_padding"
_PADDING_PREFIX: Final = b'{"' + PADDING_FIELD.encode() + b'":"'
#: The smallest huge body: the padding field with an empty string.
MIN_HUGE_BYTES: Final = len(_PADDING_PREFIX) + len(b'"}')

#: Set by the list handlers: a valid token for the first page of the list being served, which is
#: what a "repeat-token" fault hands out as ``next_page_token`` every time.
FIRST_PAGE_TOKEN_KEY: Final = web.RequestKey("first_page_token", str)

_CHUNK: Final = 64 * 1024
_POLL_SECONDS: Final = 0.05
_MESSAGES: Final[Mapping[int, str]] = {
    400: "invalid request",
    401: "invalid api token",
    403: "forbidden",
    404: "not found",
    410: "gone",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def _bad(key: str, value: Any, reason: str) -> ValueError:
    return ValueError(f"invalid fault {key}={value!r}: {reason}")


@dataclass(frozen=True)
class Fault:
    """One kind of failure and the requests it applies to.

    ``count`` is how many injections are left (``None``: no limit); a request the fault matches
    but ``probability`` spares does not use one up. Values are checked on construction: a bad one
    raises ``ValueError`` naming the key.
    """

    kind: FaultKind
    endpoint: str = "any"
    model: str | None = None
    probability: float = 1.0
    count: int | None = None
    status: int = 503
    retry_after: RetryAfter | None = None
    retry_after_seconds: int = 2
    hang_seconds: float = 300.0
    trickle_interval: float = 0.05
    huge_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise _bad("kind", self.kind, f"expected one of {', '.join(KINDS)}")
        if self.endpoint != "any" and self.endpoint not in ENDPOINTS:
            raise _bad("endpoint", self.endpoint, f"expected any, {', '.join(ENDPOINTS)}")
        allowed = _KIND_ENDPOINTS.get(self.kind)
        if allowed is not None and self.endpoint not in ("any", *allowed):
            raise _bad(
                "endpoint", self.endpoint, f"a {self.kind} fault applies to {', '.join(allowed)}"
            )
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise _bad("model", self.model, "expected a model id")
        if self.model is not None and self.endpoint == "list_models":
            raise _bad("model", self.model, "list_models requests name no model")
        _check_number("probability", self.probability)
        if not 0 < self.probability <= 1:
            raise _bad("probability", self.probability, "expected 0 < probability <= 1")
        if self.count is not None:
            _check_int("count", self.count)
            if self.count < 1:
                raise _bad("count", self.count, "expected a positive integer")
        _check_int("status", self.status)
        if not 400 <= self.status <= 599:
            raise _bad("status", self.status, "expected an error status 400-599")
        if self.retry_after is not None and self.retry_after not in _RETRY_AFTER:
            raise _bad("retry_after", self.retry_after, "expected seconds, http-date or none")
        _check_int("retry_after_seconds", self.retry_after_seconds)
        if self.retry_after_seconds < 0:
            raise _bad("retry_after_seconds", self.retry_after_seconds, "must not be negative")
        for key in ("hang_seconds", "trickle_interval"):
            value = getattr(self, key)
            _check_number(key, value)
            if value < 0:
                raise _bad(key, value, "must not be negative")
        _check_int("huge_bytes", self.huge_bytes)
        if self.huge_bytes < MIN_HUGE_BYTES:
            raise _bad("huge_bytes", self.huge_bytes, f"expected at least {MIN_HUGE_BYTES}")

    @staticmethod
    def parse(spec: str) -> Fault:
        """Parse ``key=value`` pairs separated by commas, e.g. ``kind=status,status=503,count=3``.

        ``kind`` is required; ``model``, ``count`` and ``retry_after`` take ``none`` (or nothing)
        for "unset".
        """
        values: dict[str, Any] = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep:
                raise ValueError(f"invalid fault spec item {item!r}: expected key=value")
            if key not in _FIELD_TYPES:
                raise _unknown_key(key)
            if key in values:
                raise ValueError(f"invalid fault spec {spec!r}: {key} given twice")
            values[key] = _parse_value(key, raw)
        if "kind" not in values:
            raise ValueError(f"invalid fault spec {spec!r}: kind is required")
        return Fault(**values)

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready; ``from_json`` reads it back."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Any) -> Fault:
        """A fault from an object of fields (``kind`` required, the rest default)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"invalid fault {data!r}: expected an object")
        for key in data:
            if key not in _FIELD_TYPES:
                raise _unknown_key(str(key))
        if "kind" not in data:
            raise ValueError(f"invalid fault {dict(data)!r}: kind is required")
        for key, value in data.items():
            _check_json_type(key, value)
        return Fault(**data)


_FIELD_TYPES: Final[Mapping[str, str]] = {
    "kind": "str",
    "endpoint": "str",
    "model": "str?",
    "probability": "float",
    "count": "int?",
    "status": "int",
    "retry_after": "str?",
    "retry_after_seconds": "int",
    "hang_seconds": "float",
    "trickle_interval": "float",
    "huge_bytes": "int",
}
assert set(_FIELD_TYPES) == {f.name for f in dataclasses.fields(Fault)}


def _unknown_key(key: str) -> ValueError:
    return ValueError(f"unknown fault key {key!r}: expected one of {', '.join(_FIELD_TYPES)}")


def _check_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(key, value, "expected an integer")


def _check_number(key: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _bad(key, value, "expected a finite number")


def _parse_value(key: str, raw: str) -> Any:
    kind = _FIELD_TYPES[key]
    if kind.endswith("?") and raw.lower() in ("", "none", "null"):
        return None
    base = kind.rstrip("?")
    if base == "str":
        return raw
    try:
        return int(raw) if base == "int" else float(raw)
    except ValueError:
        expected = "an integer" if base == "int" else "a number"
        raise _bad(key, raw, f"expected {expected}") from None


def _check_json_type(key: str, value: Any) -> None:
    kind = _FIELD_TYPES[key]
    if value is None and kind.endswith("?"):
        return
    base = kind.rstrip("?")
    if base == "str" and not isinstance(value, str):
        raise _bad(key, value, "expected a string")
    if base == "int":
        _check_int(key, value)
    if base == "float":
        _check_number(key, value)


class FaultInjector:
    """The active faults of one simulator, and what they injected so far."""

    def __init__(self, faults: Iterable[Fault] = (), seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []
        self._left: list[int | None] = []
        #: Injections so far by fault kind; not reset by ``set`` or ``clear``.
        self.injected: collections.Counter[str] = collections.Counter()
        self.set(faults)

    def set(self, faults: Iterable[Fault]) -> None:
        """Replace the active faults (first match wins, so order matters)."""
        new = list(faults)
        with self._lock:
            self._faults = new
            self._left = [f.count for f in new]

    def clear(self) -> None:
        """Stop injecting anything."""
        self.set(())

    @property
    def active(self) -> tuple[Fault, ...]:
        """Faults that can still fire, with ``count`` as the injections left."""
        with self._lock:
            return tuple(
                f if left == f.count else dataclasses.replace(f, count=left)
                for f, left in zip(self._faults, self._left, strict=True)
                if left is None or left > 0
            )

    def pick(self, endpoint: str, model_id: str | None) -> Fault | None:
        """The first fault that matches this request and fires; uses up one of its ``count``."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                left = self._left[index]
                if left is not None and left <= 0:
                    continue
                if not _matches(fault, endpoint, model_id):
                    continue
                if fault.probability < 1 and self._rng.random() >= fault.probability:
                    continue
                if left is not None:
                    self._left[index] = left - 1
                self.injected[fault.kind] += 1
                return fault
        return None


def _matches(fault: Fault, endpoint: str, model_id: str | None) -> bool:
    if endpoint not in ENDPOINTS:
        return False
    if fault.endpoint not in ("any", endpoint):
        return False
    if endpoint not in _KIND_ENDPOINTS.get(fault.kind, ENDPOINTS):
        return False
    return fault.model is None or fault.model == model_id


# --------------------------------------------------------------------------- HTTP behaviour


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=encoding.dumps(body), status=status, content_type="application/json")


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer.

    The returned response is never sent: aiohttp's attempt to write it meets the closed transport,
    which it treats as a client disconnect (a debug line, no traceback).
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=204)


def _retry_after(fault: Fault) -> dict[str, str]:
    if fault.retry_after == "seconds":
        return {"Retry-After": str(fault.retry_after_seconds)}
    if fault.retry_after == "http-date":
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=fault.retry_after_seconds)
        return {"Retry-After": email.utils.format_datetime(when, usegmt=True)}
    return {}


def error_message(status: int) -> str:
    """The ``message`` of an injected error answer with ``status``."""
    if status in _MESSAGES:
        return _MESSAGES[status]
    try:
        return http.HTTPStatus(status).phrase.lower()
    except ValueError:
        return f"error {status}"


async def _hang(request: web.Request, seconds: float) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not _gone(request):
        left = deadline - loop.time()
        if left <= 0:
            break
        await asyncio.sleep(min(_POLL_SECONDS, left))
    return _drop(request)


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    chunks: Iterable[bytes],
    interval: float = 0.0,
) -> web.StreamResponse:
    """Send ``chunks`` (sleeping ``interval`` between them); stop quietly if the client leaves."""
    try:
        await response.prepare(request)
        first = True
        for chunk in chunks:
            if not first and interval > 0:
                await asyncio.sleep(interval)
            first = False
            if _gone(request):
                break
            await response.write(chunk)
    except ConnectionError:
        pass  # the client went away; aiohttp logs that at debug level when it finishes
    return response


def _trickle(
    request: web.Request, real: web.StreamResponse, interval: float
) -> Awaitable[web.StreamResponse]:
    body = _body(real) or b""
    response = web.StreamResponse(status=real.status)
    response.content_type = real.content_type
    response.content_length = len(body)
    return _stream(request, response, (body[i : i + 1] for i in range(len(body))), interval)


def _huge(request: web.Request, real: Any, size: int) -> Awaitable[web.StreamResponse]:
    """``size`` bytes of JSON: the real page with an unknown string field padding it out."""
    suffix = b'"}'
    if isinstance(real, dict) and real:
        rest = encoding.dumps(real).encode()[1:]  # drop "{": the real fields follow the padding
        if len(_PADDING_PREFIX) + len(rest) + 2 <= size:
            suffix = b'",' + rest
    padding = size - len(_PADDING_PREFIX) - len(suffix)

    def chunks() -> Iterable[bytes]:
        yield _PADDING_PREFIX
        block = b"x" * min(_CHUNK, padding)
        left = padding
        while left > 0:
            yield block if left >= len(block) else block[:left]
            left -= len(block)
        yield suffix

    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.content_length = size
    return _stream(request, response, chunks())


def _body(response: web.StreamResponse) -> bytes | None:
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return response.body
    return None


def _real_json(response: web.StreamResponse) -> dict[str, Any] | None:
    """The decoded body of a successful real answer (None for an error or a non-object)."""
    body = _body(response)
    if response.status != 200 or body is None:
        return None
    data = json.loads(body)
    return data if isinstance(data, dict) else None


def _unknown_status(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("finetuned_model")
    if isinstance(model, dict):
        model["status"] = UNKNOWN_STATUS
    for item in body.get("finetuned_models", []):
        item["status"] = UNKNOWN_STATUS
    return body


def _string_step(body: dict[str, Any]) -> dict[str, Any]:
    steps = body.setdefault("step_metrics", [])
    if steps:
        steps[0]["step_number"] = "seven"
    else:
        steps.append({"step_number": "seven"})
    return body


async def respond(
    fault: Fault,
    request: web.Request,
    real: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """What the client gets when ``fault`` fires; ``real`` produces the undisturbed answer."""
    kind = fault.kind
    if kind == "status":
        return _json_response({"message": error_message(fault.status)}, status=fault.status)
    if kind == "rate-limit":
        response = _json_response({"message": "too many requests"}, status=429)
        response.headers.update(_retry_after(fault))
        return response
    if kind == "reset":
        return _drop(request)
    if kind == "hang":
        return await _hang(request, fault.hang_seconds)
    if kind == "invalid-json":
        return web.Response(body=INVALID_JSON_BODY, content_type="application/json")
    if kind == "list-body":
        return _json_response([])
    if kind == "html-200":
        return web.Response(text=HTML_BODY, content_type="text/html")
    answer = await real()
    if kind == "trickle":
        return await _trickle(request, answer, fault.trickle_interval)
    body = _real_json(answer)
    if kind == "huge-body":
        return await _huge(request, body, fault.huge_bytes)
    if body is None:
        return answer  # an error answer stays as it is
    if kind == "unknown-status":
        return _json_response(_unknown_status(body))
    if kind == "string-step":
        return _json_response(_string_step(body))
    assert kind == "repeat-token"
    body["next_page_token"] = request.get(FIRST_PAGE_TOKEN_KEY, "") or "repeat"
    return _json_response(body)
