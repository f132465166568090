"""How one setting's value is checked: the validators ``Settings`` applies to its fields.

Every message names what is wrong without sending a huge value back, and never echoes a URL
(which may carry a password).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from yarl import URL

MAX_ECHOED_CHARS = 60

# Run IDs go into a URL path. Real IDs are UUIDs (Cohere) or ft-UUIDs (Together); anything
# outside RFC 3986's unreserved set (or a dot segment) could steer the request to another
# path, so it is refused up front.
_RUN_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: int() would take any Unicode digit


def flag(name: str, *, secret: bool = False) -> dict[str, Any]:
    """Metadata that ties a settings field to its flag ("" for environment-only secrets)."""
    return {"flag": name, "secret": secret}


def echo(value: object) -> str:
    """A user's value quoted in an error message, cut so that a huge value is not sent back."""
    text = repr(value)
    return text if len(text) <= MAX_ECHOED_CHARS else f"{text[: MAX_ECHOED_CHARS - 4]}...'"


def parse_listen_address(value: str) -> tuple[str | None, int]:
    """Split ``host:port`` (``[v6]:port``, ``:port`` = every interface) as exporters spell it.

    Port 0 would listen on a random port that nobody can be told to scrape: it is refused.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not _PORT.fullmatch(port_text):
        raise ValueError(f"expected HOST:PORT or :PORT, got {echo(value)}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    host = host.strip("[]")
    return (host or None), port


def check_api_url(value: str) -> str:
    """An http(s) base URL with a host and nothing that a request path could not follow.

    The value is never echoed in an error: a URL may carry a password.
    """
    try:
        url = URL(value.strip())
    except ValueError:
        raise ValueError("expected an http(s) URL with a host") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError("expected an http(s) URL with a host")
    if url.user is not None or url.password is not None:
        raise ValueError(
            "the API URL may not carry a user or password; give the key in its own setting"
        )
    if url.query_string or url.fragment:
        raise ValueError("the API URL may not carry a query or fragment")
    return str(url).rstrip("/")


def split_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def check_run_ids(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in value if not _RUN_ID.fullmatch(v) or v in {".", ".."}]
    if bad:
        shown = ", ".join(map(echo, bad[:3])) + (
            f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        raise ValueError(f"IDs may hold only letters, digits and . _ ~ - (got {shown})")
    return tuple(dict.fromkeys(value))


def read_key(path: Path, field: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.__class__.__name__}") from None
    if not text:
        raise ValueError(f"{field}: {path} is empty")
    return SecretStr(text)
