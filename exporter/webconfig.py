"""``--web.config.file``: TLS, basic auth and extra response headers for the HTTP endpoints.

The file uses the Prometheus exporter-toolkit web configuration format, so operators can reuse
the files (and ``promtool check web-config``) they already have for other exporters. Everything
that would be silently *weaker* than what the file asks for is refused at load time instead:
an exporter that quietly ignores ``client_allowed_sans`` or a rate limit looks protected while it
is not. Settings that only tune the handshake (``cipher_suites``, ``curve_preferences``,
``prefer_server_cipher_suites``) are accepted and left to Python's ``ssl`` defaults, which are
already restricted to modern suites.

Error messages and reprs never contain password hashes or key material, because they end up in
logs and in ``--check-config`` output.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import bcrypt
import yaml
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "WWW_AUTHENTICATE",
    "WebConfig",
    "WebConfigError",
    "WebConfigWatcher",
    "auth_middleware",
    "load_web_config",
]

log = logging.getLogger(__name__)

FLAG = "--web.config.file"
REALM = "cohere-finetune-exporter"
WWW_AUTHENTICATE = f'Basic realm="{REALM}"'

_TOP_LEVEL = frozenset({"tls_server_config", "http_server_config", "basic_auth_users"})
_TOP_LEVEL_UNSUPPORTED = {
    "rate_limit": "rate limiting is not implemented by this exporter; remove the setting or "
    "put a rate-limiting proxy in front",
}
_TLS_KEYS = frozenset(
    {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
)
# Handshake tuning only: Python's ssl defaults are at least as strict, so ignoring these never
# lets in a client the file meant to keep out.
_TLS_IGNORED = frozenset({"cipher_suites", "curve_preferences", "prefer_server_cipher_suites"})
_TLS_UNSUPPORTED = {
    "client_allowed_sans": "restricting client certificates by SAN is not supported; ignoring it "
    "would accept every certificate the CA signed, so the file is refused",
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
    "client_ca": "inline CA certificates are not supported; use client_ca_file",
}
_HTTP_KEYS = frozenset({"http2", "headers"})
_CURVES = frozenset({"CurveP256", "CurveP384", "CurveP521", "X25519"})

# client_auth_type -> (verify mode, needs client_ca_file). Python's ssl cannot ask for a client
# certificate without verifying it, so "RequestClientCert" (which in Go asks but never checks, and
# therefore protects nothing) does not ask at all, and "RequireAnyClientCert" verifies against
# client_ca_file: stricter than Go, never weaker.
_CLIENT_AUTH: dict[str, tuple[ssl.VerifyMode, bool]] = {
    "NoClientCert": (ssl.CERT_NONE, False),
    "RequestClientCert": (ssl.CERT_NONE, False),
    "RequireAnyClientCert": (ssl.CERT_REQUIRED, True),
    "RequireClientCert": (ssl.CERT_REQUIRED, True),  # the toolkit's older spelling
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_OBSOLETE_TLS_VERSIONS = frozenset({"TLS10", "TLS11"})

# The toolkit's allow-list (web/handler.go). Keeping to it means every file accepted here is also
# accepted by promtool, and a header that would change how a response is parsed or authenticated
# (Content-Type, Authorization, Set-Cookie, ...) can never be injected from the config.
_HEADER_VALUES: dict[str, frozenset[str] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "content-encoding",
        "content-length",
        "server",
        "date",
        "set-cookie",
        "www-authenticate",
    }
)

_BCRYPT_HASH = re.compile(rb"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# bcrypt only ever looks at the first 72 bytes; Go and htpasswd truncate the same way.
_BCRYPT_MAX_PASSWORD = 72
# Checked for unknown users so that a wrong user name costs as much as a wrong password and
# response times do not reveal which users exist. Its password is random and unrecorded.
_DUMMY_HASH = b"$2b$10$UnEHgi8N.UrRsRvFHvfM8e0Q1h3CHbWnBMCNqEWNdPp7aw85ogDV."
# One bcrypt at a time: a flood of wrong passwords must not take every core.
_BCRYPT_LOCK = threading.Lock()


class WebConfigError(Exception):
    """The web config file cannot be used; the message names the flag, the file and the setting."""


class _EncryptedKeyError(Exception):
    """Raised from the ssl password callback: a daemon must never prompt on a terminal."""


@dataclass(frozen=True, repr=False)
class WebConfig:
    """What one version of the file asks for: TLS (or not), basic-auth users and extra headers.

    Successful bcrypt verifications are remembered per instance (the toolkit does the same), so a
    scrape every few seconds does not pay bcrypt's deliberate cost each time. A reload builds a
    new instance and therefore starts with an empty cache.
    """

    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes]
    headers: Mapping[str, str]
    # user -> sha256(user, password, hash) of the last password that bcrypt accepted. Keyed by
    # the user (not by the digest) so the lookup does not depend on the secret, and the digest is
    # compared with hmac.compare_digest.
    _verified: dict[str, bytes] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Read-only views: a shared WebConfig must not be changed behind the watcher's back.
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def __repr__(self) -> str:
        # Hand-written so that password hashes never reach a log line through a repr.
        tls = "on" if self.ssl_context is not None else "off"
        return f"WebConfig(tls={tls}, users={sorted(self.users)!r}, headers={dict(self.headers)!r})"

    def check_credentials(self, authorization_header: str | None) -> bool:
        """True when no users are configured, or the header carries a valid user and password."""
        verdict = self._quick_verdict(authorization_header)
        if verdict is not None:
            return verdict
        return self._bcrypt_verdict(authorization_header)

    def _quick_verdict(self, authorization_header: str | None) -> bool | None:
        """The answer when it needs no bcrypt (no users, malformed header, cached), else None."""
        if not self.users:
            return True
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        remembered = self._verified.get(user)
        if (
            hashed is not None
            and remembered is not None
            and hmac.compare_digest(remembered, _digest(user, password, hashed))
        ):
            return True
        return None

    def _bcrypt_verdict(self, authorization_header: str | None) -> bool:
        """Run bcrypt; slow on purpose, so the middleware calls this off the event loop."""
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        with _BCRYPT_LOCK:
            try:
                matches = bcrypt.checkpw(
                    password[:_BCRYPT_MAX_PASSWORD], hashed if hashed is not None else _DUMMY_HASH
                )
            except ValueError:
                matches = False
        if not matches or hashed is None:
            return False
        self._verified[user] = _digest(user, password, hashed)
        return True


def _digest(user: str, password: bytes, hashed: bytes) -> bytes:
    """sha256 over length-prefixed parts, so ("ab", "c") and ("a", "bc") cannot collide."""
    h = hashlib.sha256()
    for part in (user.encode(), password, hashed):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
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


# --- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stamp:
    """Enough to notice any change of a file: a same-size, same-mtime rewrite still alters sha."""

    mtime_ns: int
    size: int
    sha256: bytes


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError:
        return None
    return _Stamp(st.st_mtime_ns, st.st_size, hashlib.sha256(data).digest())


class _Reader:
    """Reads files for one load and remembers what it saw, missing files included.

    The watcher compares these stamps on its next poll, so a broken file is parsed (and its error
    logged) once, not on every poll.
    """

    def __init__(self) -> None:
        self.seen: dict[Path, _Stamp | None] = {}

    def read(self, path: Path) -> bytes:
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError:
            self.seen[path] = None
            raise
        self.seen[path] = _Stamp(st.st_mtime_ns, st.st_size, hashlib.sha256(data).digest())
        return data


def _unchanged(seen: Mapping[Path, _Stamp | None]) -> bool:
    return all(_stamp(path) == stamp for path, stamp in seen.items())


@dataclass(frozen=True)
class _TLSSettings:
    """The TLS part of one file version, with the PEM bytes exactly as they were validated."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    ca_pem: bytes | None = field(repr=False)
    verify_mode: ssl.VerifyMode
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion

    @property
    def identity(self) -> bytes:
        """Changes when the server certificate or key does: this part reloads in place."""
        return _digest("identity", self.cert_pem, self.key_pem)

    @property
    def policy(self) -> tuple[object, ...]:
        """Changes when who may connect does: this part needs a restart (see the watcher)."""
        ca = hashlib.sha256(self.ca_pem).digest() if self.ca_pem is not None else None
        return (self.verify_mode, ca, self.min_version, self.max_version)


@dataclass(frozen=True)
class _Loaded:
    config: WebConfig
    tls: _TLSSettings | None


class _Problems:
    """Formats errors as ``--web.config.file: FILE: SETTING: PROBLEM``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, setting: str | None, problem: str) -> NoReturn:
        where = f"{setting}: " if setting else ""
        raise WebConfigError(f"{FLAG}: {self.path}: {where}{problem}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a second ``alice:`` must not silently win."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable keys are reported by construct_mapping below
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error without PyYAML's source snippet, which could quote a password hash."""
    if isinstance(exc, yaml.reader.ReaderError):
        return "not valid UTF-8 or UTF-16 text"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            return f"invalid YAML: {problem} at line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML: {problem}"
    return f"invalid YAML ({type(exc).__name__})"


def _mapping(problems: _Problems, setting: str, value: object) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.fail(setting, f"must be a mapping, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    """A type name for error messages, so a misplaced secret is never echoed back."""
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _string(problems: _Problems, setting: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        problems.fail(setting, f"must be a non-empty string, not {_kind(value)}")
    return value


def _check_keys(
    problems: _Problems,
    section: str | None,
    data: Mapping[Any, Any],
    allowed: frozenset[str],
    unsupported: Mapping[str, str],
) -> None:
    for key in data:
        setting = f"{section}.{key}" if section else str(key)
        if key in unsupported:
            problems.fail(setting, unsupported[key])
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            problems.fail(setting, f"unknown setting (known here: {known})")


def _load(path: Path, reader: _Reader) -> _Loaded:
    problems = _Problems(path)
    try:
        text = reader.read(path)
    except OSError as exc:
        problems.fail(None, f"cannot read the file: {exc.strerror or type(exc).__name__}")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        problems.fail(None, _yaml_problem(exc))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.fail(None, f"the top level must be a mapping, not {_kind(data)}")
    _check_keys(problems, None, data, _TOP_LEVEL, _TOP_LEVEL_UNSUPPORTED)

    users = _users(problems, data.get("basic_auth_users"))
    headers = _headers(problems, data.get("http_server_config"))
    tls = _tls_settings(problems, reader, path, data.get("tls_server_config"))
    context = _build_context(problems, tls) if tls is not None else None
    return _Loaded(WebConfig(context, users, headers), tls)


def _users(problems: _Problems, value: object) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for user, hashed in _mapping(problems, "basic_auth_users", value).items():
        if not isinstance(user, str):
            problems.fail(
                "basic_auth_users", f"user names must be strings (quote {_kind(user)} names)"
            )
        setting = f"basic_auth_users.{user}"
        if ":" in user:
            problems.fail(setting, "user names cannot contain ':' (Basic auth splits on it)")
        if not isinstance(hashed, str):
            problems.fail(setting, f"must be a bcrypt hash string, not {_kind(hashed)}")
        encoded = hashed.strip().encode("utf-8", "replace")
        if not _BCRYPT_HASH.fullmatch(encoded):
            problems.fail(
                setting,
                "not a bcrypt hash (create one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
            )
        users[user] = encoded
    return users


def _headers(problems: _Problems, value: object) -> dict[str, str]:
    http = _mapping(problems, "http_server_config", value)
    _check_keys(problems, "http_server_config", http, _HTTP_KEYS, {})
    # http2 is accepted for compatibility; aiohttp serves HTTP/1.1 only.
    if "http2" in http and not isinstance(http["http2"], bool):
        problems.fail(
            "http_server_config.http2", f"must be true or false, not {_kind(http['http2'])}"
        )
    headers: dict[str, str] = {}
    for name, header_value in _mapping(
        problems, "http_server_config.headers", http.get("headers")
    ).items():
        setting = f"http_server_config.headers.{name}"
        if not isinstance(name, str):
            problems.fail("http_server_config.headers", "header names must be strings")
        if name.lower() in _FORBIDDEN_HEADERS:
            problems.fail(setting, "this header is set by the server and cannot be configured")
        if name not in _HEADER_VALUES:
            spelled = [known for known in _HEADER_VALUES if known.lower() == name.lower()]
            hint = f"; did you mean {spelled[0]}?" if spelled else ""
            allowed = ", ".join(_HEADER_VALUES)
            problems.fail(setting, f"this header cannot be configured (allowed: {allowed}){hint}")
        if header_value is None or header_value == "":
            continue  # "Unset if blank", as the toolkit documents
        if not isinstance(header_value, str):
            problems.fail(setting, f"must be a string, not {_kind(header_value)}")
        if any(ch in header_value for ch in "\r\n\0"):
            problems.fail(setting, "must not contain line breaks or NUL characters")
        allowed_values = _HEADER_VALUES[name]
        if allowed_values is not None and header_value not in allowed_values:
            problems.fail(setting, f"must be one of {', '.join(sorted(allowed_values))}")
        headers[name] = header_value
    return headers


def _tls_settings(
    problems: _Problems, reader: _Reader, config_path: Path, value: object
) -> _TLSSettings | None:
    section = "tls_server_config"
    tls = _mapping(problems, section, value)
    _check_keys(problems, section, tls, _TLS_KEYS | _TLS_IGNORED, _TLS_UNSUPPORTED)
    if not tls:
        return None
    for key in ("cipher_suites", "curve_preferences"):
        if key in tls and not (
            isinstance(tls[key], list) and all(isinstance(item, str) for item in tls[key])
        ):
            problems.fail(f"{section}.{key}", "must be a list of strings")
    for curve in tls.get("curve_preferences") or ():
        if curve not in _CURVES:
            problems.fail(f"{section}.curve_preferences", f"unknown curve {curve!r}")
    if "prefer_server_cipher_suites" in tls and not isinstance(
        tls["prefer_server_cipher_suites"], bool
    ):
        problems.fail(f"{section}.prefer_server_cipher_suites", "must be true or false")
    for required in ("cert_file", "key_file"):
        if required not in tls:
            problems.fail(
                f"{section}.{required}",
                "required: tls_server_config needs both cert_file and key_file",
            )

    base = config_path.parent

    def file_setting(key: str) -> tuple[Path, bytes]:
        setting = f"{section}.{key}"
        file = base / _string(problems, setting, tls[key])  # absolute paths stay absolute
        try:
            return file, reader.read(file)
        except OSError as exc:
            problems.fail(setting, f"cannot read {file}: {exc.strerror or type(exc).__name__}")

    cert_file, cert_pem = file_setting("cert_file")
    key_file, key_pem = file_setting("key_file")
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        problems.fail(f"{section}.cert_file", f"{cert_file} holds no PEM certificate")
    if b"PRIVATE KEY-----" not in key_pem:
        problems.fail(f"{section}.key_file", f"{key_file} holds no PEM private key")

    auth_name = _string(
        problems, f"{section}.client_auth_type", tls.get("client_auth_type", "NoClientCert")
    )
    if auth_name not in _CLIENT_AUTH:
        problems.fail(
            f"{section}.client_auth_type",
            f"unknown value {auth_name!r} (one of: {', '.join(_CLIENT_AUTH)})",
        )
    verify_mode, needs_ca = _CLIENT_AUTH[auth_name]
    ca_file: Path | None = None
    ca_pem: bytes | None = None
    if "client_ca_file" in tls:
        if auth_name == "NoClientCert":
            problems.fail(
                f"{section}.client_ca_file",
                "set, but client_auth_type is NoClientCert; set client_auth_type to "
                "RequireAndVerifyClientCert to check client certificates",
            )
        ca_file, ca_pem = file_setting("client_ca_file")
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            problems.fail(f"{section}.client_ca_file", f"{ca_file} holds no PEM certificate")
    elif needs_ca:
        problems.fail(
            f"{section}.client_ca_file",
            f"required: client_auth_type {auth_name} verifies client certificates against it",
        )

    min_version = _tls_version(problems, f"{section}.min_version", tls.get("min_version", "TLS12"))
    max_version = _tls_version(problems, f"{section}.max_version", tls.get("max_version", "TLS13"))
    if min_version > max_version:
        problems.fail(f"{section}.min_version", "is newer than max_version")
    return _TLSSettings(
        cert_file=cert_file,
        key_file=key_file,
        ca_file=ca_file,
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=ca_pem,
        verify_mode=verify_mode,
        min_version=min_version,
        max_version=max_version,
    )


def _tls_version(problems: _Problems, setting: str, value: object) -> ssl.TLSVersion:
    name = _string(problems, setting, value)
    if name in _OBSOLETE_TLS_VERSIONS:
        problems.fail(setting, f"{name} is not supported (obsolete); use TLS12 or TLS13")
    if name not in _TLS_VERSIONS:
        problems.fail(setting, f"unknown TLS version {name!r} (one of: TLS12, TLS13)")
    return _TLS_VERSIONS[name]


def _build_context(problems: _Problems, tls: _TLSSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    try:
        _load_chain(context, tls)
    except _EncryptedKeyError:
        problems.fail(
            "tls_server_config.key_file",
            f"{tls.key_file} is encrypted; the key must be stored without a passphrase",
        )
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            problems.fail(
                "tls_server_config.key_file",
                f"{tls.key_file} does not belong to the certificate in {tls.cert_file}",
            )
        problems.fail(
            "tls_server_config.cert_file",
            f"cannot load {tls.cert_file} with {tls.key_file}: {_ssl_reason(exc)}",
        )
    except OSError as exc:
        problems.fail(
            "tls_server_config.cert_file",
            f"cannot load the certificate: {exc.strerror or type(exc).__name__}",
        )
    if tls.ca_pem is not None:
        try:
            context.load_verify_locations(cadata=tls.ca_pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:
            reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else "not PEM text"
            problems.fail(
                "tls_server_config.client_ca_file",
                f"{tls.ca_file} holds no usable PEM CA certificate ({reason})",
            )
    context.verify_mode = tls.verify_mode
    return context


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason code only: short, stable, and free of file contents."""
    if exc.reason:
        return str(exc.reason)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or ""))
    return text or type(exc).__name__


def _refuse_password() -> bytes:
    raise _EncryptedKeyError


def _load_chain(context: ssl.SSLContext, tls: _TLSSettings) -> None:
    """Load exactly the validated PEM bytes, not whatever is on disk a moment later.

    ``load_cert_chain`` only takes paths, and on a live context a failure half-way (new cert,
    old key) would break every new handshake. Loading the already-checked bytes from a private
    copy closes that window when the files are rewritten during a reload.
    """
    with _private_file(tls.cert_pem) as cert, _private_file(tls.key_pem) as key:
        context.load_cert_chain(cert, key, password=_refuse_password)


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` that no other user can read: an in-memory file on Linux."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("web-config", os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="web-config-") as directory:  # mode 0700
        path = os.path.join(directory, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def load_web_config(path: Path | None) -> WebConfig:
    """Read and validate the file; None (flag not given) means plain HTTP without auth."""
    if path is None:
        return WebConfig(None, {}, {})
    return _load(path, _Reader()).config


# --- serving ---------------------------------------------------------------------------------


@functools.cache
def _bcrypt_executor() -> ThreadPoolExecutor:
    """A single thread for bcrypt, so wrong passwords neither block the loop nor starve it."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-config-bcrypt")


def _add_headers(response: web.StreamResponse, headers: Mapping[str, str]) -> None:
    if response.prepared:
        return  # a streamed response has sent its headers already
    for name, value in headers.items():
        response.headers[name] = value


def auth_middleware(
    get_config: Callable[[], WebConfig],
    open_paths: frozenset[str] = frozenset({"/healthz"}),
) -> Middleware:
    """Basic auth on every path except ``open_paths``, plus the configured headers everywhere.

    ``get_config`` is called once per request, so a reload applies to the next request. Paths
    are matched exactly: ``/healthz/`` is not open, which errs on the side of asking for
    credentials.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        config = get_config()
        if request.path not in open_paths:
            header = request.headers.get(hdrs.AUTHORIZATION)
            verdict = config._quick_verdict(header)
            if verdict is None:
                loop = asyncio.get_running_loop()
                verdict = await loop.run_in_executor(
                    _bcrypt_executor(), config._bcrypt_verdict, header
                )
            if not verdict:
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


class WebConfigWatcher:
    """Re-reads the file when its mtime/size/content hash changes; on a bad new file keeps the
    last good config and logs an error once.

    The referenced certificate, key and CA files are watched too, so a renewed certificate is
    picked up without touching the config file. The SSLContext handed to the listening socket
    cannot be swapped, so a new certificate is loaded into that same context (new handshakes use
    it). Turning TLS on or off, or changing who may connect (client_auth_type, client_ca_file,
    TLS versions), needs a restart: OpenSSL cannot drop a trusted CA from a live context, and
    applying only part of such a change would be misleading. Those changes are logged as errors
    and the old TLS state is kept, while users and headers from the same file still reload.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        reader = _Reader()
        loaded = _load(path, reader) if path is not None else _Loaded(WebConfig(None, {}, {}), None)
        self._current = loaded.config
        # Digests only: the watcher needs to notice changes, not to keep key material around.
        self._identity = loaded.tls.identity if loaded.tls is not None else None
        self._policy = loaded.tls.policy if loaded.tls is not None else None
        # Stamps of the last attempt, good or bad: an unchanged broken file is not re-reported.
        self._seen = reader.seen

    @property
    def current(self) -> WebConfig:
        return self._current

    def reload_if_changed(self) -> bool:
        """Load the file again if it or a file it names changed; True if a new config is in use."""
        if self._path is None:
            return False
        with self._lock:
            if _unchanged(self._seen):
                return False
            reader = _Reader()
            try:
                loaded = _load(self._path, reader)
            except WebConfigError as exc:
                log.error(
                    "web config not reloaded; keeping the previous configuration",
                    extra={"err": str(exc)},
                )
                return False
            finally:
                self._seen = reader.seen
            context = self._apply_tls(loaded.tls)
            self._current = WebConfig(context, loaded.config.users, loaded.config.headers)
            log.info(
                "web config reloaded",
                extra={"file": str(self._path), "users": len(self._current.users)},
            )
            return True

    def _apply_tls(self, new: _TLSSettings | None) -> ssl.SSLContext | None:
        """The context to keep serving with, after moving in whatever can change live."""
        context = self._current.ssl_context
        if context is None or new is None:
            if (context is None) != (new is None):
                log.error(
                    "web config: turning TLS on or off needs a restart; keeping TLS %s",
                    "off" if context is None else "on",
                    extra={"file": str(self._path)},
                )
            return context
        if new.policy != self._policy:
            log.error(
                "web config: changes to client_auth_type, client_ca_file, min_version or "
                "max_version need a restart; keeping the previous ones",
                extra={"file": str(self._path)},
            )
        if new.identity != self._identity:
            try:
                _load_chain(context, new)
            except (ssl.SSLError, OSError, _EncryptedKeyError) as exc:
                log.error(
                    "web config: cannot load the new certificate into the running server",
                    extra={"file": str(self._path), "err": type(exc).__name__},
                )
            else:
                self._identity = new.identity
        return context
