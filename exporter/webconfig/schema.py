"""The web config file as pydantic models: what may be written, and what each setting means.

The file uses the Prometheus exporter-toolkit web configuration format, so operators can reuse
the files (and ``promtool check web-config``) they already have for other exporters. Everything
that would be silently *weaker* than what the file asks for is refused here instead: an exporter
that quietly ignores ``client_allowed_sans`` or a rate limit looks protected while it is not.
Settings that only tune the handshake (``cipher_suites``, ``curve_preferences``,
``prefer_server_cipher_suites``) are accepted and left to Python's ``ssl`` defaults, which are
already restricted to modern suites.

Models are strict (no "yes" for true, no 1 for "1") and forbid unknown keys. A validation error
becomes one ``--web.config.file: FILE: SETTING: PROBLEM`` line; pydantic's own text is never
used, because it quotes the input, which may be a password hash.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from exporter.webconfig.errors import fail, kind

# client_auth_type -> (verify mode, needs client_ca_file). Python's ssl cannot ask for a client
# certificate without verifying it, so "RequestClientCert" (which in Go asks but never checks, and
# therefore protects nothing) does not ask at all, and "RequireAnyClientCert" verifies against
# client_ca_file: stricter than Go, never weaker.
CLIENT_AUTH: dict[str, tuple[ssl.VerifyMode, bool]] = {
    "NoClientCert": (ssl.CERT_NONE, False),
    "RequestClientCert": (ssl.CERT_NONE, False),
    "RequireAnyClientCert": (ssl.CERT_REQUIRED, True),
    "RequireClientCert": (ssl.CERT_REQUIRED, True),  # the toolkit's older spelling
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_OBSOLETE_TLS_VERSIONS = frozenset({"TLS10", "TLS11"})
_CURVES = frozenset({"CurveP256", "CurveP384", "CurveP521", "X25519"})
# Headers the server sets itself; letting the file set them could change how a response is
# parsed or authenticated.
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
_UNSUPPORTED: dict[tuple[str, ...], dict[str, str]] = {
    (): {
        "rate_limit": "rate limiting is not implemented by this exporter; remove the setting or "
        "put a rate-limiting proxy in front",
    },
    ("tls_server_config",): {
        "client_allowed_sans": "restricting client certificates by SAN is not supported; ignoring "
        "it would accept every certificate the CA signed, so the file is refused",
        "cert": "inline certificates are not supported; use cert_file",
        "key": "inline keys are not supported; use key_file",
        "client_ca": "inline CA certificates are not supported; use client_ca_file",
    },
}
_BCRYPT_HASH = re.compile(rb"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_KEY_ERRORS = frozenset({"extra_forbidden", "invalid_key"})  # a key that is not a setting
# Values that are echoed in messages look like identifiers: a bcrypt hash (with '$' and '/') or
# PEM text never does.
_ECHOABLE = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _problem(text: str, key: str | None = None) -> PydanticCustomError:
    """A validation error with our wording; ``key`` extends the setting (a nested name)."""
    context: dict[str, str] = {"problem": text}
    if key is not None:
        context["key"] = key
    return PydanticCustomError("web_config", "{problem}", context)


def _shown(value: str) -> str:
    """``value`` quoted when it is safe to repeat, else only its length."""
    return repr(value) if _ECHOABLE.fullmatch(value) else f"of {len(value)} characters"


def _nonempty_string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _problem(f"must be a non-empty string, not {kind(value)}")
    return value


def _config_path(value: object, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file; absolute paths stay absolute."""
    base = info.context["base"] if info.context else Path()
    return Path(base) / _nonempty_string(value)


def _client_auth(value: object) -> str:
    name = _nonempty_string(value)
    if name not in CLIENT_AUTH:
        raise _problem(f"unknown value {_shown(name)} (one of: {', '.join(CLIENT_AUTH)})")
    return name


def _tls_version(value: object) -> ssl.TLSVersion:
    name = _nonempty_string(value)
    if name in _OBSOLETE_TLS_VERSIONS:
        raise _problem(f"{name} is not supported (obsolete); use TLS12 or TLS13")
    if name not in _TLS_VERSIONS:
        raise _problem(f"unknown TLS version {_shown(name)} (one of: TLS12, TLS13)")
    return _TLS_VERSIONS[name]


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _problem("must be a list of strings")
    return tuple(value)


def _curves(value: tuple[str, ...]) -> tuple[str, ...]:
    for curve in value:
        if curve not in _CURVES:
            raise _problem(f"unknown curve {_shown(curve)}")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_config_path)]
TLSVersion = Annotated[ssl.TLSVersion, BeforeValidator(_tls_version)]
Strings = Annotated[tuple[str, ...], BeforeValidator(_strings)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TLSServerConfig(_Section):
    """``tls_server_config``: the server certificate and who may connect."""

    cert_file: ConfigPath
    key_file: ConfigPath
    client_auth_type: Annotated[str, BeforeValidator(_client_auth)] = "NoClientCert"
    # Validated only when written, so a present-but-empty value is an error, not "unset".
    client_ca_file: Annotated[Path | None, BeforeValidator(_config_path)] = None
    min_version: TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: TLSVersion = ssl.TLSVersion.TLSv1_3
    cipher_suites: Strings = ()
    curve_preferences: Annotated[Strings, AfterValidator(_curves)] = ()
    prefer_server_cipher_suites: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if self.client_ca_file is not None and self.client_auth_type == "NoClientCert":
            raise _problem(
                "set, but client_auth_type is NoClientCert; set client_auth_type to "
                "RequireAndVerifyClientCert to check client certificates",
                "client_ca_file",
            )
        if self.client_ca_file is None and self.needs_ca:
            raise _problem(
                f"required: client_auth_type {self.client_auth_type} verifies client "
                "certificates against it",
                "client_ca_file",
            )
        if self.min_version > self.max_version:
            raise _problem("is newer than max_version", "min_version")
        return self

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return CLIENT_AUTH[self.client_auth_type][0]

    @property
    def needs_ca(self) -> bool:
        return CLIENT_AUTH[self.client_auth_type][1]


def _header(allowed: frozenset[str] | None = None) -> Any:
    """A header value: blank means unset (as the toolkit documents); never a line break."""

    def check(value: object) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _problem(f"must be a string, not {kind(value)}")
        if any(ch in value for ch in "\r\n\0"):
            raise _problem("must not contain line breaks or NUL characters")
        if allowed is not None and value not in allowed:
            raise _problem(f"must be one of {', '.join(sorted(allowed))}")
        return value

    return BeforeValidator(check)


class Headers(_Section):
    """The toolkit's allow-list (web/handler.go), so every file accepted here is accepted by
    promtool too, and a header that changes how a response is read can never be injected."""

    strict_transport_security: Annotated[str | None, _header()] = Field(
        None, alias="Strict-Transport-Security"
    )
    x_content_type_options: Annotated[str | None, _header(frozenset({"nosniff"}))] = Field(
        None, alias="X-Content-Type-Options"
    )
    x_frame_options: Annotated[str | None, _header(frozenset({"deny", "sameorigin"}))] = Field(
        None, alias="X-Frame-Options"
    )
    x_xss_protection: Annotated[str | None, _header()] = Field(None, alias="X-XSS-Protection")
    content_security_policy: Annotated[str | None, _header()] = Field(
        None, alias="Content-Security-Policy"
    )

    def as_dict(self) -> dict[str, str]:
        """Header name -> value for the headers that are set."""
        return {name: value for name, value in self.model_dump(by_alias=True).items() if value}


ALLOWED_HEADERS = tuple(str(field.alias) for field in Headers.model_fields.values())


def _empty_is_none(value: object) -> object:
    return None if value is None or value == {} else value


class HTTPServerConfig(_Section):
    """``http_server_config``; http2 is accepted for compatibility, aiohttp serves HTTP/1.1."""

    http2: bool = False
    headers: Annotated[Headers | None, BeforeValidator(_empty_is_none)] = None


def _users(value: object) -> object:
    if value is None:
        return {}
    if isinstance(value, dict):
        for user in value:
            if not isinstance(user, str):
                raise _problem(f"user names must be strings (quote {kind(user)} names)")
    return value


def _user_name(user: str) -> str:
    if ":" in user:
        raise _problem("user names cannot contain ':' (Basic auth splits on it)")
    return user


def _bcrypt_hash(value: object) -> bytes:
    if not isinstance(value, str):
        raise _problem(f"must be a bcrypt hash string, not {kind(value)}")
    encoded = value.strip().encode("utf-8", "replace")
    if not _BCRYPT_HASH.fullmatch(encoded):
        raise _problem("not a bcrypt hash (create one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')")
    return encoded


Users = dict[
    Annotated[str, AfterValidator(_user_name)], Annotated[bytes, BeforeValidator(_bcrypt_hash)]
]


class WebConfigFile(_Section):
    """One version of the whole file. Field order is the order problems are looked for."""

    basic_auth_users: Annotated[Users, BeforeValidator(_users)] = Field(
        default_factory=dict, repr=False
    )
    http_server_config: Annotated[HTTPServerConfig | None, BeforeValidator(_empty_is_none)] = None
    tls_server_config: Annotated[TLSServerConfig | None, BeforeValidator(_empty_is_none)] = None

    @property
    def headers(self) -> dict[str, str]:
        config = self.http_server_config
        return config.headers.as_dict() if config is not None and config.headers else {}


_SECTIONS: dict[tuple[str, ...], type[BaseModel]] = {
    (): WebConfigFile,
    ("tls_server_config",): TLSServerConfig,
    ("http_server_config",): HTTPServerConfig,
    ("http_server_config", "headers"): Headers,
}


def parse(path: Path, text: bytes) -> WebConfigFile:
    """Validate the file's text; relative paths in it are taken relative to ``path``."""
    # Imported here: PyYAML costs about 1.3 MB of RSS that an exporter without a web config
    # file never needs.
    from exporter.webconfig.yamltext import YamlProblem, load_yaml

    try:
        data = load_yaml(text)
    except YamlProblem as exc:
        fail(path, None, str(exc))
    try:
        return WebConfigFile.model_validate(
            {} if data is None else data, context={"base": path.parent}
        )
    except ValidationError as exc:
        # Unknown keys first, like a reader scanning the file: they usually explain the rest.
        errors = sorted(exc.errors(), key=lambda error: error["type"] not in _KEY_ERRORS)
        setting, problem = _describe(errors[0])
        fail(path, setting, problem)


def _describe(error: ErrorDetails) -> tuple[str | None, str]:
    """(dotted setting, problem) for one pydantic error, without the offending value."""
    loc = tuple(part for part in error["loc"] if part != "[key]")
    kind_of_input = kind(error.get("input"))
    if error["type"] in _KEY_ERRORS:
        return _unknown_key(tuple(map(str, loc[:-1])), loc[-1])
    names = [str(part) for part in loc if not isinstance(part, int)]  # list indices
    setting = ".".join(names) or None
    if error["type"] == "web_config":
        context = error.get("ctx") or {}
        if "key" in context:
            setting = ".".join([*names, str(context["key"])])
        return setting, str(context.get("problem", error["msg"]))
    if error["type"] in {"model_type", "model_attributes_type", "dict_type"}:
        if not names:
            return None, f"the top level must be a mapping, not {kind_of_input}"
        return setting, f"must be a mapping, not {kind_of_input}"
    if error["type"] == "missing":
        section = ".".join(names[:-1])
        return setting, f"required: {section} needs both cert_file and key_file"
    if error["type"] == "bool_type":
        return setting, f"must be true or false, not {kind_of_input}"
    return setting, f"invalid value ({error['type']})"


def _unknown_key(section: tuple[str, ...], key: object) -> tuple[str | None, str]:
    where = ".".join(section)
    if section == ("http_server_config", "headers"):
        if not isinstance(key, str):
            return where, "header names must be strings"
        setting = f"{where}.{key}"
        if key.lower() in _FORBIDDEN_HEADERS:
            return setting, "this header is set by the server and cannot be configured"
        spelled = [known for known in ALLOWED_HEADERS if known.lower() == key.lower()]
        hint = f"; did you mean {spelled[0]}?" if spelled else ""
        allowed = ", ".join(ALLOWED_HEADERS)
        return setting, f"this header cannot be configured (allowed: {allowed}){hint}"
    setting = f"{where}.{key}" if where else str(key)
    explanation = _UNSUPPORTED.get(section, {}).get(str(key))
    if explanation is not None:
        return setting, explanation
    model = _SECTIONS[section]
    known = ", ".join(
        sorted(str(field.alias or name) for name, field in model.model_fields.items())
    )
    return setting, f"unknown setting (known here: {known})"
