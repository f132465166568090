"""One load of the web config: the file read, validated, its PEM files read and TLS built.

Loading is blocking work (file reads, YAML, OpenSSL). Start-up calls it directly; the watcher
calls it from a worker thread so that the event loop never waits on it.
"""

from __future__ import annotations

import functools
import secrets
import ssl
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from exporter.webconfig.errors import fail
from exporter.webconfig.files import CONFIG_LIMIT, FileReader, UnreadableFile
from exporter.webconfig.schema import parse
from exporter.webconfig.tls import TLSFiles, build_context, read_tls_files


@dataclass(frozen=True, repr=False, eq=False)
class WebConfig:
    """What one version of the file asks for: TLS (or not), basic-auth users and extra headers.

    Immutable, so the middleware can read the current one without a lock while the watcher
    prepares the next. ``stand_in`` is the hash checked for unknown user names (see
    :func:`stand_in_hash`); it is needed exactly when there are users.
    """

    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes]
    headers: Mapping[str, str]
    stand_in: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if bool(self.users) != (self.stand_in is not None):
            raise ValueError("a stand-in hash is needed exactly when there are users")
        # Read-only views: a shared WebConfig must not be changed behind the watcher's back.
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def __repr__(self) -> str:
        # Hand-written so that password hashes never reach a log line through a repr.
        tls = "on" if self.ssl_context is not None else "off"
        return f"WebConfig(tls={tls}, users={sorted(self.users)!r}, headers={dict(self.headers)!r})"


NO_WEB_CONFIG = WebConfig(None, {}, {})


def stand_in_hash(users: Mapping[str, bytes]) -> bytes | None:
    """A hash with the cost most users have (the higher on a tie), for unknown user names.

    Checking it costs what checking a real user costs, so response times do not tell which
    user names exist. Made at load time, off the event loop: at cost 12 it takes ~0.3 s.
    """
    if not users:
        return None
    costs = Counter(int(hashed[4:6]) for hashed in users.values())  # b"$2b$12$..."
    return _random_hash(max(costs, key=lambda cost: (costs[cost], cost)))


@functools.lru_cache(maxsize=4)
def _random_hash(cost: int) -> bytes:
    """A hash of a random, unrecorded password: no password matches it in practice."""
    import bcrypt  # here: only an exporter with users needs it

    return bcrypt.hashpw(secrets.token_hex(32).encode(), bcrypt.gensalt(cost))


@dataclass(frozen=True)
class Loaded:
    """A validated config and, when it has TLS, the files its context was built from."""

    config: WebConfig
    tls: TLSFiles | None


def load(path: Path, reader: FileReader) -> Loaded:
    """Read and validate the file and everything it names; blocking."""
    try:
        text = reader.read(path, CONFIG_LIMIT)
    except UnreadableFile as exc:
        fail(path, None, f"cannot read the file: {exc}")
    parsed = parse(path, text)
    tls = (
        read_tls_files(path, parsed.tls_server_config, reader)
        if parsed.tls_server_config is not None
        else None
    )
    context = build_context(path, tls) if tls is not None else None
    users = parsed.basic_auth_users
    return Loaded(WebConfig(context, users, parsed.headers, stand_in_hash(users)), tls)


def load_web_config(path: Path | None) -> WebConfig:
    """Read and validate the file; None (flag not given) means plain HTTP without auth."""
    if path is None:
        return NO_WEB_CONFIG
    return load(path, FileReader()).config
