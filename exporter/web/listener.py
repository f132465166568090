"""The one place that starts an aiohttp server: a listening socket hostile clients cannot exhaust.

aiohttp's own site (asyncio's ``create_server``) accepts every connection it can and keeps it
for an hour when the client says nothing; past the descriptor limit asyncio logs every failed
``accept()``, thousands of lines a second. Here the accept loop is ours:

- at most ``max_connections`` connections are open, counted from ``accept()`` (before a TLS
  handshake); beyond that a new connection is closed at once and counted, and the state change
  is logged, not each connection;
- a connection must have sent complete request headers (TLS handshake included) within
  ``HEADER_TIMEOUT`` of being accepted, or of the first byte of a later request (slowloris);
- an idle keep-alive connection is closed after ``IDLE_TIMEOUT`` (aiohttp's ``keepalive_timeout``);
- an ``accept()`` failure (EMFILE...) is logged when it starts and when it ends, and retried
  every ``ACCEPT_RETRY_DELAY`` seconds;
- a malformed request is logged at debug, at most once per ``MALFORMED_LOG_INTERVAL`` with a
  count of the ones left out, by its method and path only: aiohttp's own error line quotes the
  offending bytes, which may be an ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from exporter.web.guard import ACCEPT_RETRY_DELAY, ConnectionGuard, Slot

# Between the common scrape intervals: 5-15 s scrapers keep reusing their connection, 30 s and
# 1 m ones reconnect each time (one handshake, cheap), and no common interval lands right on the
# boundary where the server's close would race the next request.
IDLE_TIMEOUT = 20.0
# Prometheus sends a whole request at once; ten seconds is generous even for a TLS handshake
# over a bad link, and short enough that a client trickling bytes frees its slot soon.
HEADER_TIMEOUT = 10.0
# An exporter has a few scrapers; the cap bounds memory (tens of KB per TLS connection) too.
DEFAULT_MAX_CONNECTIONS = 1024
# Descriptors kept for everything else: log files, the API client's pool, config reloads.
RESERVED_DESCRIPTORS = 64
BACKLOG = 128
_REQUEST_HEAD_BYTES = 256
# accept() failures that concern only the connection being accepted.
_PASSING_ACCEPT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR})

log = logging.getLogger(__name__)


def default_max_connections() -> int:
    """The cap when none is given: below the descriptor limit, so accept() never hits EMFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(1, min(DEFAULT_MAX_CONNECTIONS, soft - RESERVED_DESCRIPTORS))


class _Connection(RequestHandler):
    """aiohttp's HTTP/1.1 protocol with a header deadline and quiet handling of bad requests."""

    def __init__(
        self,
        manager: web.Server,
        *,
        guard: ConnectionGuard,
        slot: Slot,
        header_deadline: float,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._slot = slot
        self._header_timeout = header_timeout
        self._first_deadline = header_deadline
        self._deadline: asyncio.TimerHandle | None = None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._deadline = self._loop.call_at(self._first_deadline, self._header_deadline)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self._slot.release()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self._waiting_for_request():
            # The first bytes of the next request on a kept-alive connection.
            self._deadline = self._loop.call_later(self._header_timeout, self._header_deadline)
            self._head = b""
        if len(self._head) < _REQUEST_HEAD_BYTES:
            self._head += data[: _REQUEST_HEAD_BYTES - len(self._head)]
        super().data_received(data)
        if self._messages:  # complete headers (or a parse error) arrived: the deadline is met
            self._disarm()

    def _waiting_for_request(self) -> bool:
        """True while aiohttp waits for the next request: the same test as its idle close."""
        return self._waiter is not None and not self._waiter.done()

    def _header_deadline(self) -> None:
        self._deadline = None
        if self._waiting_for_request():
            self._guard.header_timeouts += 1
            self.force_close()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # aiohttp would log the offending bytes at error and echo them in the response.
        self._guard.malformed_request(self._head, type(exc).__name__)
        response = web.Response(status=status, text=f"{status}: malformed request\n")
        response.force_close()
        return response


def _bind(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (None or "": all interfaces).

    Like asyncio's ``create_server``: IPv6 sockets are IPv6-only, families the system cannot
    create are skipped. A bind failure raises its OSError unchanged.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(errno.EAFNOSUPPORT, f"no usable address for {host or '*'}:{port}")
    return sockets


class Listener:
    """A running server: where it listens and what its guards have counted so far."""

    def __init__(
        self,
        sockets: list[socket.socket],
        server: web.Server,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None,
        header_timeout: float,
    ) -> None:
        self.addresses: list[Any] = [sock.getsockname() for sock in sockets]
        host, port = self.addresses[0][:2]
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        self.guard = guard
        self._sockets = sockets
        self._server = server
        # The same arguments aiohttp's Server gives the protocols it makes.
        self._handler_kwargs: dict[str, Any] = server._kwargs
        self._ssl_context = ssl_context
        self._header_timeout = header_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for sock in self._sockets:
            self._spawn(self._accept(sock))

    async def stop(self) -> None:
        """Stop accepting and drop connections still in their TLS handshake; idempotent."""
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self._sockets:
            sock.close()

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _PASSING_ACCEPT_ERRORS:
                    continue
                self.guard.accept_failed(exc)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            self.guard.accepted()
            if not self.guard.admit():
                conn.close()
                continue
            self._spawn(self._connect(conn, loop.time() + self._header_timeout))

    async def _connect(self, conn: socket.socket, header_deadline: float) -> None:
        """Hand the socket to aiohttp, after the TLS handshake when there is TLS."""
        loop = asyncio.get_running_loop()
        slot = Slot(self.guard)

        def protocol() -> _Connection:
            return _Connection(
                self._server,
                loop=loop,
                guard=self.guard,
                slot=slot,
                header_deadline=header_deadline,
                header_timeout=self._header_timeout,
                **self._handler_kwargs,
            )

        tls = self._ssl_context
        try:
            await loop.connect_accepted_socket(
                protocol,
                conn,
                ssl=tls,
                ssl_handshake_timeout=max(0.001, header_deadline - loop.time()) if tls else None,
            )
        except Exception:  # a failed or timed-out handshake, or a client already gone
            self.guard.handshake_failures += 1
            slot.release()
            conn.close()
        except asyncio.CancelledError:
            slot.release()
            conn.close()
            raise


@contextlib.asynccontextmanager
async def listening(
    app: web.Application,
    host: str | None,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int | None = None,
    access_log: logging.Logger | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
    header_timeout: float = HEADER_TIMEOUT,
) -> AsyncIterator[Listener]:
    """Serve ``app`` on ``host:port`` until the block ends; a bind failure raises OSError.

    ``max_connections`` defaults to :func:`default_max_connections`; ``access_log`` None means
    no access log.
    """
    sockets = _bind(host, port)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=access_log, keepalive_timeout=idle_timeout
    )
    listener: Listener | None = None
    try:
        await runner.setup()
        assert runner.server is not None
        guard = ConnectionGuard(max_connections or default_max_connections())
        listener = Listener(sockets, runner.server, guard, ssl_context, header_timeout)
        listener.start()
        yield listener
    finally:
        if listener is not None:
            await listener.stop()
        for sock in sockets:
            sock.close()
        await runner.cleanup()
