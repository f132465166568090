"""What a client sees when a ``Fault`` fires: the HTTP side of fault injection.

``respond`` is provider-neutral; a ``Dialect`` supplies what differs between the simulated APIs
(the shape of an error body, where a status or a step number sits in an answer), and
``exporter.simulator.faults.OPERATIONS`` says which field of each answer holds its list.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import http
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from exporter.simulator.faults import OPERATIONS, Fault

HTML_BODY: Final = "<html><body>Maintenance</body></html>"
#: The unknown field a huge body is padded with.
PADDING_FIELD: Final = "simulator_padding"
_PADDING_PREFIX: Final = b'{"' + PADDING_FIELD.encode() + b'":"'

#: Set by paged list handlers: a valid token for the first page of the list being served, which
#: is what a "repeat-token" fault hands out as ``next_page_token`` every time.
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

Body = dict[str, Any]


@dataclass(frozen=True)
class Dialect:
    """How one provider's API speaks, as far as the shared middleware and faults care.

    ``error_body`` renders an error answer; ``unknown_status`` and ``string_step`` change a
    decoded successful answer in place; ``invalid_json`` is a body cut off mid-list.
    """

    provider: str
    request_kinds: tuple[str, ...]
    metrics_kind: str
    auth_message: str
    error_body: Callable[[int, str], Body]
    invalid_json: bytes
    unknown_status: Callable[[Body], None]
    string_step: Callable[[Body], None]


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer; ``allow_nan=False`` proves no bare NaN token escapes into a body."""
    text = json.dumps(body, allow_nan=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json")


def error_message(status: int) -> str:
    """The message of an injected error answer with ``status``."""
    if status in _MESSAGES:
        return _MESSAGES[status]
    try:
        return http.HTTPStatus(status).phrase.lower()
    except ValueError:
        return f"error {status}"


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


async def _hang(request: web.Request, seconds: float) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not _gone(request):
        left = deadline - loop.time()
        if left <= 0:
            break
        await asyncio.sleep(min(_POLL_SECONDS, left))
    return _drop(request)


async def stream(
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
    return stream(request, response, (body[i : i + 1] for i in range(len(body))), interval)


def _huge(request: web.Request, real: Body | None, size: int) -> Awaitable[web.StreamResponse]:
    """``size`` bytes of JSON: the real answer with an unknown string field padding it out."""
    suffix = b'"}'
    if real:
        rest = json.dumps(real, allow_nan=False, separators=(",", ":")).encode()[1:]
        if len(_PADDING_PREFIX) + len(rest) + 2 <= size:
            suffix = b'",' + rest  # the real fields follow the padding
    padding = size - len(_PADDING_PREFIX) - len(suffix)

    def chunks() -> Iterable[bytes]:
        yield _PADDING_PREFIX
        block = b"x" * min(_CHUNK, padding)
        left = padding
        while left > 0:
            yield block if left >= len(block) else block[:left]
            left -= len(block)
        yield suffix

    return _streamed(request, size, chunks())


def _repeated(unit: bytes, count: int) -> Iterable[bytes]:
    """``unit * count`` in chunks of about ``_CHUNK`` bytes, never all of it at once."""
    per_chunk = max(1, _CHUNK // len(unit))
    block = unit * per_chunk
    left = count
    while left > 0:
        yield block if left >= per_chunk else unit * left
        left -= per_chunk


def nesting_chunks(depth: int) -> Iterable[bytes]:
    """``depth`` opening brackets, then as many closing ones: valid JSON, only very deep."""
    yield from _repeated(b"[", depth)
    yield from _repeated(b"]", depth)


def flood_layout(field: str, entry: str, entries: int, max_bytes: int) -> tuple[int, int]:
    """How many entries a flood sends and its size in bytes.

    The body is ``{"<field>":[entry,entry,...]}``: as many of the ``entries`` copies as keep it
    within ``max_bytes``.
    """
    envelope = len(_flood_prefix(field)) + len(b"]}")
    item = len(entry.encode())
    # n entries take n * item + (n - 1) bytes: the most that fit in the room left is this.
    fit = max(0, (max_bytes - envelope + 1) // (item + 1))
    count = min(entries, fit)
    return count, envelope + count * item + max(count - 1, 0)


def flood_chunks(field: str, entry: str, count: int) -> Iterable[bytes]:
    """The body of an entry flood of ``count`` entries, streamed in chunks."""
    item = entry.encode()
    if count == 0:
        yield _flood_prefix(field) + b"]}"
        return
    yield _flood_prefix(field) + item
    yield from _repeated(b"," + item, count - 1)
    yield b"]}"


def _flood_prefix(field: str) -> bytes:
    return b"{" + json.dumps(field).encode() + b":["


def _streamed(
    request: web.Request, size: int, chunks: Iterable[bytes]
) -> Awaitable[web.StreamResponse]:
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.content_length = size
    return stream(request, response, chunks)


def _flood(request: web.Request, fault: Fault, dialect: Dialect) -> Awaitable[web.StreamResponse]:
    field = OPERATIONS[dialect.provider][request.match_info.route.name or ""]
    assert field is not None, "entry-flood faults only match operations that answer a list"
    count, size = flood_layout(field, fault.entry, fault.entries, fault.max_bytes)
    return _streamed(request, size, flood_chunks(field, fault.entry, count))


def _body(response: web.StreamResponse) -> bytes | None:
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return response.body
    return None


def _real_json(response: web.StreamResponse) -> Body | None:
    """The decoded body of a successful real answer (None for an error or a non-object)."""
    body = _body(response)
    if response.status != 200 or body is None:
        return None
    data = json.loads(body)
    return data if isinstance(data, dict) else None


async def respond(
    fault: Fault,
    request: web.Request,
    real: Callable[[], Awaitable[web.StreamResponse]],
    dialect: Dialect,
) -> web.StreamResponse:
    """What the client gets when ``fault`` fires; ``real`` produces the undisturbed answer."""
    kind = fault.kind
    if kind == "status":
        message = error_message(fault.status)
        return json_response(dialect.error_body(fault.status, message), status=fault.status)
    if kind == "rate-limit":
        response = json_response(dialect.error_body(429, "too many requests"), status=429)
        response.headers.update(_retry_after(fault))
        return response
    if kind == "reset":
        return _drop(request)
    if kind == "hang":
        return await _hang(request, fault.hang_seconds)
    if kind == "invalid-json":
        return web.Response(body=dialect.invalid_json, content_type="application/json")
    if kind == "list-body":
        return json_response([])
    if kind == "html-200":
        return web.Response(text=HTML_BODY, content_type="text/html")
    if kind == "deep-nesting":
        return await _streamed(request, 2 * fault.depth, nesting_chunks(fault.depth))
    if kind == "entry-flood":
        return await _flood(request, fault, dialect)
    answer = await real()
    if kind == "trickle":
        return await _trickle(request, answer, fault.trickle_interval)
    body = _real_json(answer)
    if kind == "huge-body":
        return await _huge(request, body, fault.huge_bytes)
    if body is None:
        return answer  # an error answer stays as it is
    if kind == "unknown-status":
        dialect.unknown_status(body)
    elif kind == "string-step":
        dialect.string_step(body)
    else:
        assert kind == "repeat-token"
        body["next_page_token"] = request.get(FIRST_PAGE_TOKEN_KEY, "") or "repeat"
    return json_response(body)
