"""One load of the web config: the file read, validated, its PEM files read and TLS built.

Loading is blocking work (file reads, YAML, OpenSSL). Start-up calls it directly; the watcher
calls it from a worker thread so that the event loop never waits on it.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from exporter.webconfig.errors import fail
from exporter.webconfig.files import FileReader
from exporter.webconfig.schema import parse
from exporter.webconfig.tls import TLSFiles, build_context, read_tls_files


@dataclass(frozen=True, repr=False, eq=False)
class WebConfig:
    """What one version of the file asks for: TLS (or not), basic-auth users and extra headers.

    Immutable, so the middleware can read the current one without a lock while the watcher
    prepares the next.
    """

    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes]
    headers: Mapping[str, str]

    def __post_init__(self) -> None:
        # Read-only views: a shared WebConfig must not be changed behind the watcher's back.
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def __repr__(self) -> str:
        # Hand-written so that password hashes never reach a log line through a repr.
        tls = "on" if self.ssl_context is not None else "off"
        return f"WebConfig(tls={tls}, users={sorted(self.users)!r}, headers={dict(self.headers)!r})"


NO_WEB_CONFIG = WebConfig(None, {}, {})


@dataclass(frozen=True)
class Loaded:
    """A validated config and, when it has TLS, the files its context was built from."""

    config: WebConfig
    tls: TLSFiles | None


def load(path: Path, reader: FileReader) -> Loaded:
    """Read and validate the file and everything it names; blocking."""
    try:
        text = reader.read(path)
    except OSError as exc:
        fail(path, None, f"cannot read the file: {exc.strerror or type(exc).__name__}")
    parsed = parse(path, text)
    tls = (
        read_tls_files(path, parsed.tls_server_config, reader)
        if parsed.tls_server_config is not None
        else None
    )
    context = build_context(path, tls) if tls is not None else None
    return Loaded(WebConfig(context, parsed.basic_auth_users, parsed.headers), tls)


def load_web_config(path: Path | None) -> WebConfig:
    """Read and validate the file; None (flag not given) means plain HTTP without auth."""
    if path is None:
        return NO_WEB_CONFIG
    return load(path, FileReader()).config
