"""Basic authentication against the bcrypt hashes of the web config, and the HTTP middleware.

bcrypt is slow on purpose, so it never runs on the event loop: checks go to a single worker
thread, which also keeps a flood of wrong passwords from taking every core. At most
``MAX_WAITING_CHECKS`` checks wait for that thread; a request that would need one more is
answered "429 Too Many Requests" at once, so a flood can delay a fresh login by a few checks
at most instead of queueing it behind thousands. Successful checks are remembered (the toolkit
does the same) across reloads, as long as the user's hash stays the same, so Prometheus's
scrapes do not pay bcrypt's cost and are never the ones turned away.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from exporter.webconfig.loader import WebConfig

REALM = "cohere-finetune-exporter"
WWW_AUTHENTICATE = f'Basic realm="{REALM}"'
# Eight checks at cost 12 are ~2.5 s of waiting: well inside Prometheus's 10 s scrape timeout.
MAX_WAITING_CHECKS = 8
RETRY_AFTER_SECONDS = 1
# bcrypt only ever looks at the first 72 bytes; Go and htpasswd truncate the same way.
_BCRYPT_MAX_PASSWORD = 72


class Verdict(enum.Enum):
    """The answer to one Authorization header."""

    ALLOWED = "allowed"
    DENIED = "denied"
    BUSY = "busy"  # the header needs a bcrypt check and too many are waiting: try again


@functools.cache
def _bcrypt_executor() -> ThreadPoolExecutor:
    """A single thread for bcrypt, so wrong passwords neither block the loop nor starve it."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-config-bcrypt")


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # here: only an exporter with users needs it

    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        return False


def _digest(user: str, password: bytes, hashed: bytes) -> bytes:
    """sha256 over length-prefixed parts, so ("ab", "c") and ("a", "bc") cannot collide."""
    h = hashlib.sha256()
    for part in (user.encode(), password, hashed):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` header; None for anything else."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user_raw, colon, password = raw.partition(b":")
    if not colon:
        return None
    try:
        user = user_raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return user, password


class Authenticator:
    """Decides whether an Authorization header may pass, for whatever config is current.

    ``source`` is asked for the config on every call, so a reload applies to the next request.
    """

    def __init__(
        self, source: Callable[[], WebConfig], *, max_waiting: int = MAX_WAITING_CHECKS
    ) -> None:
        self._source = source
        self._max_waiting = max_waiting
        self._waiting = 0  # bcrypt checks submitted and not finished; changed on the loop only
        # user -> digest of (user, password, hash) that bcrypt accepted. The hash is part of the
        # digest, so a new hash for the user (a changed password) is never answered from here.
        # Keyed by the user (not by the digest) so the lookup does not depend on the secret; the
        # digest is compared with hmac.compare_digest.
        self._verified: dict[str, bytes] = {}
        self._pruned_for: WebConfig | None = None

    @property
    def waiting(self) -> int:
        """bcrypt checks queued or running for this authenticator."""
        return self._waiting

    async def verify(self, authorization_header: str | None) -> Verdict:
        """ALLOWED when no users are configured, or the header carries a valid user and password;
        BUSY when answering would need a bcrypt check while too many are waiting."""
        config = self._source()
        if config is not self._pruned_for:
            self._forget_removed_users(config)
        if not config.users:
            return Verdict.ALLOWED
        credentials = parse_basic(authorization_header)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        hashed = config.users.get(user)
        if hashed is not None:
            remembered = self._verified.get(user)
            digest = _digest(user, password, hashed)
            if remembered is not None and hmac.compare_digest(remembered, digest):
                return Verdict.ALLOWED
        # Unknown users are checked against a stand-in of the same cost: equal response times.
        against = hashed if hashed is not None else config.stand_in
        if against is None:  # not reached: a config with users always has a stand-in
            return Verdict.DENIED
        if self._waiting >= self._max_waiting:
            return Verdict.BUSY
        matches = await self._check(password, against)
        if not matches or hashed is None:
            return Verdict.DENIED
        self._verified[user] = _digest(user, password, hashed)
        return Verdict.ALLOWED

    async def _check(self, password: bytes, hashed: bytes) -> bool:
        """bcrypt on the worker thread, counted until the thread is done with it.

        The count drops when the check really ends (or is dropped before it started), not when
        the waiting request goes away, so it never under-counts the thread's backlog.
        """
        loop = asyncio.get_running_loop()
        self._waiting += 1

        def finished(_: Future[bool]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to count
                loop.call_soon_threadsafe(self._finished)

        job = _bcrypt_executor().submit(_checkpw, password, hashed)
        job.add_done_callback(finished)
        return await asyncio.wrap_future(job)

    def _finished(self) -> None:
        self._waiting -= 1

    def _forget_removed_users(self, config: WebConfig) -> None:
        for user in self._verified.keys() - config.users.keys():
            del self._verified[user]
        self._pruned_for = config


def _add_headers(response: web.StreamResponse, headers: Mapping[str, str]) -> None:
    if response.prepared:
        return  # a streamed response has sent its headers already
    for name, value in headers.items():
        response.headers[name] = value


def _refusal(verdict: Verdict) -> web.Response:
    if verdict is Verdict.BUSY:
        return web.Response(
            status=429,
            text="429: Too Many Requests",
            headers={hdrs.RETRY_AFTER: str(RETRY_AFTER_SECONDS)},
        )
    return web.Response(
        status=401, text="401: Unauthorized", headers={hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE}
    )


def auth_middleware(
    source: Callable[[], WebConfig],
    open_paths: frozenset[str] = frozenset({"/healthz"}),
) -> Middleware:
    """Basic auth on every path except ``open_paths``, plus the configured headers everywhere.

    ``source`` (the watcher's ``current``) is read once per request, so a reload applies to the
    next request. Paths are matched exactly: ``/healthz/`` is not open, which errs on the side of
    asking for credentials.
    """
    authenticator = Authenticator(source)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        config = source()
        if request.path not in open_paths:
            verdict = await authenticator.verify(request.headers.get(hdrs.AUTHORIZATION))
            if verdict is not Verdict.ALLOWED:
                refused = _refusal(verdict)
                _add_headers(refused, config.headers)
                return refused
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _add_headers(exc, config.headers)
            raise
        _add_headers(response, config.headers)
        return response

    return middleware
