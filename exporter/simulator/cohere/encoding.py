"""Proto3 JSON encoding, the way Cohere's gateway (protojson) renders its answers.

The simulator exists to break naive clients the way the real API does, so its bodies must follow
the proto3 JSON mapping rather than "whatever json.dumps does": zero values disappear, timestamps
carry 0/3/6/9 fractional digits and a ``Z``, and non-finite doubles become strings.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any, Final

#: Message fields that hold a ``google.protobuf.Timestamp`` (given to the encoder as Unix seconds).
TIMESTAMP_FIELDS: Final = frozenset({"created_at", "updated_at", "completed_at", "last_used"})

#: Fields that are proto3 ``map<string, double>``: their entries are kept even when zero.
MAP_FIELDS: Final = frozenset({"metrics"})

_NANOS_PER_SECOND: Final = 1_000_000_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp_from_ns(unix_ns: int) -> str:
    """Render integer Unix nanoseconds as protojson does: RFC 3339, UTC, ``Z``, 0/3/6/9 digits."""
    seconds, nanos = divmod(unix_ns, _NANOS_PER_SECOND)
    base = (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return f"{base}Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def unix_to_ns(unix: float) -> int:
    """Convert float Unix seconds to integer nanoseconds without going through ``unix * 1e9``.

    Multiplying first would round at the 2**53 boundary (about 256 ns at today's epoch);
    splitting off the whole seconds keeps the fraction exact, so the digits are stable.
    """
    whole = math.floor(unix)
    return whole * _NANOS_PER_SECOND + round((unix - whole) * _NANOS_PER_SECOND)


def timestamp(unix: float) -> str:
    """Render float Unix seconds as a protojson timestamp string."""
    return timestamp_from_ns(unix_to_ns(unix))


def double(value: float) -> float | str:
    """Encode a double: finite values as numbers, NaN and infinities as the protojson strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _is_zero(value: Any) -> bool:
    """Whether proto3 would leave this field out (its zero value or an empty container)."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        # Enum zero values (``STATUS_UNSPECIFIED``, ``STRATEGY_UNSPECIFIED``...) are zero too.
        return value == "" or value.endswith("_UNSPECIFIED")
    if isinstance(value, list | tuple | Mapping):
        return len(value) == 0
    if isinstance(value, int | float):
        return value == 0
    return False


def _encode_value(key: str, value: Any) -> Any:
    if key in TIMESTAMP_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return timestamp(float(value))
    if key in MAP_FIELDS and isinstance(value, Mapping):
        return {str(k): _encode_scalar(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return message(value)
    if isinstance(value, list | tuple):
        return [_encode_item(item) for item in value]
    return _encode_scalar(value)


def _encode_item(item: Any) -> Any:
    return message(item) if isinstance(item, Mapping) else _encode_scalar(item)


def _encode_scalar(value: Any) -> Any:
    if isinstance(value, float):
        return double(value)
    return value


def message(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Encode a message: drop zero-valued fields, convert timestamps, doubles and nested messages.

    A NaN is not "zero", so it survives as ``"NaN"``; map entries are never dropped, only an empty
    map is (proto3 keeps every map entry but has no way to say "empty map" either).
    """
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if _is_zero(value):
            continue
        encoded = _encode_value(key, value)
        if isinstance(encoded, dict) and not encoded:
            continue
        out[key] = encoded
    return out


def dumps(body: Any) -> str:
    """Serialise an already encoded body; ``allow_nan=False`` proves no bare NaN token escapes."""
    return json.dumps(body, allow_nan=False, separators=(",", ":"))
