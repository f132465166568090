"""The listener's guards over loopback sockets: the connection cap, idle and header deadlines,
quiet and secret-free handling of malformed requests, and plain serving and binding.

Timeouts are shortened per test (they are parameters of ``listening``); the connection flood
under a low descriptor limit runs in a child process (test_listener_flood.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from exporter.web import guard as guard_module
from exporter.web.guard import request_line
from exporter.web.listener import Listener, listening
from tests.listener_support import closed_within, connect, get, wait_until
from tests.webconfig_support import make_pki

pytestmark = pytest.mark.integration


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(slow_seconds: float = 0.0) -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(slow_seconds)  # the handler's own work, not a wait in the test
        return web.Response(text="slow\n")

    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/slow", slow)
    return app


@asynccontextmanager
async def serving(
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = None,
    idle_timeout: float = 30.0,
    header_timeout: float = 30.0,
) -> AsyncIterator[Listener]:
    """The listener on 127.0.0.1 with ``/healthz`` and a ``/slow`` handler taking 0.6 s."""
    async with listening(
        make_app(0.6),
        "127.0.0.1",
        0,
        ssl_context=ssl_context,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        header_timeout=header_timeout,
    ) as listener:
        yield listener


async def test_url_and_addresses_name_the_bound_socket() -> None:
    async with serving() as listener:
        host, port = listener.addresses[0][:2]
        assert (host, listener.url) == ("127.0.0.1", f"http://127.0.0.1:{port}")
        assert await get(listener.url) == (200, b"ok\n")


async def test_a_bind_failure_raises_the_oserror_unchanged() -> None:
    async with serving() as listener:
        port = listener.addresses[0][1]
        with pytest.raises(OSError, match="Address already in use") as caught:
            async with listening(make_app(), "127.0.0.1", port):
                pass
        assert caught.value.errno == errno.EADDRINUSE


async def test_beyond_the_cap_new_connections_are_closed_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.web.listener")
    async with serving(max_connections=2, header_timeout=30) as listener:
        held = [await connect(listener.url) for _ in range(2)]
        await wait_until(lambda: listener.guard.open == 2)
        for _ in range(5):
            reader, writer = await connect(listener.url)
            assert await closed_within(reader, 2.0) < 2.0
            writer.close()
        assert listener.guard.refused == 5
        for _, writer in held:
            writer.close()
        await wait_until(lambda: listener.guard.open == 0)
        assert await get(listener.url) == (200, b"ok\n")
    messages = [r.getMessage() for r in caplog.records if r.name == "exporter.web.listener"]
    assert messages == [
        "connection limit reached; new connections are closed at once",
        "below the connection limit again",
    ]


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.crt", directory / "server.key")
    return context


async def test_the_cap_counts_connections_still_in_their_tls_handshake(
    server_tls: ssl.SSLContext,
) -> None:
    async with serving(ssl_context=server_tls, max_connections=1, header_timeout=30) as listener:
        assert listener.url.startswith("https://")
        _, silent = await connect(listener.url)  # TCP only: never starts the handshake
        await wait_until(lambda: listener.guard.open == 1)
        reader, writer = await connect(listener.url)
        assert await closed_within(reader, 2.0) < 2.0
        assert listener.guard.refused == 1
        silent.close()
        writer.close()


async def test_a_silent_tls_connection_is_closed_at_the_header_deadline(
    server_tls: ssl.SSLContext,
) -> None:
    async with serving(ssl_context=server_tls, header_timeout=0.5, idle_timeout=30) as listener:
        reader, writer = await connect(listener.url)
        assert 0.3 < await closed_within(reader, 5.0) < 3.0
        writer.close()
        await wait_until(lambda: listener.guard.open == 0)
        assert listener.guard.handshake_failures == 1


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    async with serving(idle_timeout=0.5, header_timeout=30) as listener:
        reader, writer = await connect(listener.url)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200")
        assert 0.3 < await closed_within(reader, 5.0) < 3.0
        writer.close()


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` a byte every 50 ms: a client that is never quite done with its headers."""
    for byte in data:
        writer.write(bytes([byte]))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("first_request", [True, False], ids=["first", "kept-alive"])
async def test_headers_trickled_past_the_header_deadline_close_the_connection(
    first_request: bool,
) -> None:
    async with serving(header_timeout=0.5, idle_timeout=30) as listener:
        reader, writer = await connect(listener.url)
        if not first_request:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            await reader.readuntil(b"ok\n")
        sending = asyncio.create_task(trickle(writer, b"GET /healthz HTTP/1.1\r\n" + b"X" * 200))
        try:
            assert await closed_within(reader, 5.0) < 3.0
        finally:
            sending.cancel()
        writer.close()
        assert listener.guard.header_timeouts == 1


async def test_a_silent_connection_is_closed_at_the_header_deadline() -> None:
    async with serving(header_timeout=0.5, idle_timeout=30) as listener:
        reader, writer = await connect(listener.url)
        assert 0.3 < await closed_within(reader, 5.0) < 3.0
        writer.close()


async def test_a_request_that_takes_longer_than_the_header_deadline_is_answered() -> None:
    async with serving(header_timeout=0.2, idle_timeout=30) as listener:
        assert await get(listener.url, "/slow") == (200, b"slow\n")
        assert listener.guard.header_timeouts == 0


SECRET = b"c2VjcmV0LXVzZXI6aHVudGVyMg=="
MALFORMED = [
    b"GET /m HTTP/1.1\r\nAuthorization: Basic " + SECRET + b"\x01\r\n\r\n",
    b"GET /m HTTP/1.1\r\nAuthorization : Basic " + SECRET + b"\r\n\r\n",
    b"GET /m HTTP/1.1\r\nAuthorization: Basic\r\n " + SECRET + b"\r\n\r\n",
    b"GET /m HTTP/1.1\r\nX: 1\nAuthorization: Basic " + SECRET + b"\r\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03Authorization: Basic " + SECRET + b"\r\n\r\n",
    b"GET /" + b"p" * 300 + b"?token=" + SECRET + b" HTTP/1.1\r\nBad Header\r\n\r\n",
]


def record_text(record: logging.LogRecord) -> str:
    """Everything a log line could show: message, extra fields and exception text."""
    parts = [record.getMessage(), repr(vars(record))]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    return " ".join(parts)


async def send_raw(url: str, data: bytes) -> bytes:
    reader, writer = await connect(url)
    writer.write(data)
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


async def test_malformed_requests_are_logged_rarely_and_without_header_values(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(guard_module, "_now", lambda: clock[0])
    caplog.set_level(logging.DEBUG)
    async with serving() as listener:
        for data in MALFORMED:
            answer = await send_raw(listener.url, data)
            assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
            assert SECRET not in answer
        clock[0] += guard_module.MALFORMED_LOG_INTERVAL
        await send_raw(listener.url, MALFORMED[-1])
        assert listener.guard.malformed == len(MALFORMED) + 1
    for record in caplog.records:
        assert SECRET.decode() not in record_text(record)
        assert record.levelno < logging.WARNING or record.name == "exporter.web.listener"
    lines = [r for r in caplog.records if r.getMessage() == "malformed request"]
    assert [(r.levelno, r.__dict__["method"], r.__dict__["left_out"]) for r in lines] == [
        (logging.DEBUG, "GET", 0),
        (logging.DEBUG, "GET", len(MALFORMED) - 1),
    ]
    assert lines[0].__dict__["path"] == "/m"
    assert lines[1].__dict__["path"] == "/" + "p" * 99  # cut to 100 characters, no query
    assert not [r for r in caplog.records if r.name == "aiohttp.server"]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\nAuthorization: Basic abc", ("GET", "/metrics")),
        (b"GET /a?token=abc HTTP/1.1\r\n", ("GET", "/a")),
        (b"Authorization:Basic abc\r\n", ("-", "-")),
        (b"Authorization: Basic abc\r\n", ("-", "-")),
        (b"POST http://user:pw@host/ HTTP/1.1\r\n", ("POST", "-")),
        (b"\x16\x03\x01\x02\x00", ("-", "-")),
        (b"GET /\xff\x00x HTTP/1.1", ("GET", "/??x")),
    ],
)
def test_request_line_shows_method_and_path_only(head: bytes, expected: tuple[str, str]) -> None:
    assert request_line(head) == expected
