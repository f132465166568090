"""Basic authentication against the bcrypt hashes of the web config, and the HTTP middleware.

bcrypt is slow on purpose, so it never runs on the event loop: checks go to a single worker
thread, which also keeps a flood of wrong passwords from taking every core. Successful checks
are remembered (the toolkit does the same), so a scrape every few seconds does not pay bcrypt's
cost each time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from exporter.webconfig.loader import WebConfig

REALM = "cohere-finetune-exporter"
WWW_AUTHENTICATE = f'Basic realm="{REALM}"'
# bcrypt only ever looks at the first 72 bytes; Go and htpasswd truncate the same way.
_BCRYPT_MAX_PASSWORD = 72
# Checked for unknown users so that a wrong user name costs as much as a wrong password and
# response times do not reveal which users exist. Its password is random and unrecorded.
_DUMMY_HASH = b"$2b$10$UnEHgi8N.UrRsRvFHvfM8e0Q1h3CHbWnBMCNqEWNdPp7aw85ogDV."


class Verdict(enum.Enum):
    """The answer to one Authorization header."""

    ALLOWED = "allowed"
    DENIED = "denied"


@functools.cache
def _bcrypt_executor() -> ThreadPoolExecutor:
    """A single thread for bcrypt, so wrong passwords neither block the loop nor starve it."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-config-bcrypt")


def _checkpw(password: bytes, hashed: bytes) -> bool:
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
    The cache of verified passwords belongs to one config: a reload starts with an empty one.
    """

    def __init__(self, source: Callable[[], WebConfig]) -> None:
        self._source = source
        # user -> digest of (user, password, hash) that bcrypt accepted. Keyed by the user (not by
        # the digest) so the lookup does not depend on the secret; the digest is compared with
        # hmac.compare_digest.
        self._verified: dict[str, bytes] = {}
        self._verified_for: WebConfig | None = None

    async def verify(self, authorization_header: str | None) -> Verdict:
        """ALLOWED when no users are configured, or the header carries a valid user and password."""
        config = self._source()
        if config is not self._verified_for:
            self._verified.clear()
            self._verified_for = config
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
        loop = asyncio.get_running_loop()
        matches = await loop.run_in_executor(
            _bcrypt_executor(), _checkpw, password, hashed if hashed is not None else _DUMMY_HASH
        )
        if not matches or hashed is None:
            return Verdict.DENIED
        if self._verified_for is config:
            self._verified[user] = _digest(user, password, hashed)
        return Verdict.ALLOWED


def _add_headers(response: web.StreamResponse, headers: Mapping[str, str]) -> None:
    if response.prepared:
        return  # a streamed response has sent its headers already
    for name, value in headers.items():
        response.headers[name] = value


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
                denied = web.Response(
                    status=401,
                    text="401: Unauthorized",
                    headers={hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE},
                )
                _add_headers(denied, config.headers)
                return denied
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _add_headers(exc, config.headers)
            raise
        _add_headers(response, config.headers)
        return response

    return middleware
