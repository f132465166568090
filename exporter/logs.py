"""logfmt or JSON log lines, with every known secret masked before a line is written.

Masking happens in the handler, after formatting, so a key that reaches a message through an
exception text, an ``extra`` field or a third-party logger (aiohttp's included) is still caught.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

MASK = "<redacted>"
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            fields[key] = value
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        fields["exc"] = f"{type(exc).__name__}: {exc}"
    return fields


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(ch in text for ch in ' ="\\\n\t') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


class RedactingHandler(logging.StreamHandler[TextIO]):
    """A stream handler that replaces each registered secret in the formatted line."""

    def __init__(self, stream: TextIO, secrets: Iterable[str] = ()) -> None:
        super().__init__(stream)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self.secrets:
            line = line.replace(secret, MASK)
        return line


def setup_logging(
    level: str = "info",
    fmt: str = "logfmt",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> RedactingHandler:
    """Route every logger (ours, aiohttp's, asyncio's) through one redacting handler."""
    handler = RedactingHandler(stream or sys.stderr, secrets)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    # aiohttp logs every request at info; keep that out unless asked for debug.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
    return handler
