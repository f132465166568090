"""JSON values as fine-tuning APIs send them, and the base of every response model.

Cohere speaks proto3 JSON (zero values left out, doubles as strings such as ``"NaN"``,
timestamps with nine fractional digits); Together sends ISO-8601 times and may send a
non-finite loss as a string. These parsers accept every such form and nothing else.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

_TIMESTAMP = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})?"
)
_NON_FINITE = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf}


def parse_timestamp(value: Any) -> float | None:
    """RFC 3339 text to Unix seconds; Python's own parser stops at six fractional digits.

    A time without a zone is read as UTC, as both providers mean it.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value[:40]!r}")
    tz = (match["tz"] or "Z").upper()
    base = datetime.fromisoformat(match["base"].replace(" ", "T") + ("+00:00" if tz == "Z" else tz))
    seconds = base.astimezone(UTC).timestamp()
    frac = match["frac"] or ""
    return seconds + (int(frac) / 10 ** len(frac) if frac else 0.0)


def parse_double(value: Any) -> float:
    """A proto3 JSON double: a number, or a string holding one or NaN/Infinity/-Infinity."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a double")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        special = _NON_FINITE.get(text.lower())
        if special is not None:
            return special
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"not a double: {text[:40]!r}") from None
    raise ValueError(f"not a double: {type(value).__name__}")


def parse_int(value: Any) -> int:
    """A proto3 JSON integer: a number, or (as int64 is sent) a decimal string."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
        return int(value)
    raise ValueError(f"not an integer: {str(value)[:40]!r}")


Timestamp = Annotated[float | None, BeforeValidator(parse_timestamp)]
Double = Annotated[float, BeforeValidator(parse_double)]
Integer = Annotated[int, BeforeValidator(parse_int)]


class ApiObject(BaseModel):
    """Base of every API object: frozen, extra fields ignored, ``null`` read as the default."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data
