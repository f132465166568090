"""One copy of what thousands of runs have alike: metric names, statuses, label sets, counts.

Ten thousand runs of one account repeat the same few metric names, statuses, base models and
label sets, and most of their counters read zero; as separate objects per run they cost
megabytes. These helpers hand out one shared, read-only object per distinct value, from a
bounded table, so memory grows with what differs between runs, not with their number.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

MAX_SHARED = 4096  # distinct values kept; past that, values are simply not shared

ValueT = TypeVar("ValueT", str, int)
_tables: dict[type, dict[tuple[object, ...], Mapping[str, object]]] = {}


def name(text: str) -> str:
    """The one copy of a short string seen again and again (a metric name, a status)."""
    return sys.intern(text)


def frozen(mapping: Mapping[str, ValueT]) -> Mapping[str, ValueT]:
    """A read-only mapping equal to ``mapping``, the same object for every equal one."""
    key = tuple(sorted(mapping.items()))
    table = _tables.setdefault(type(key), {})
    found = table.get(key)
    if found is None:
        found = MappingProxyType({name(k): v for k, v in key})
        if len(table) < MAX_SHARED:
            table[key] = found
    return found  # type: ignore[return-value]
