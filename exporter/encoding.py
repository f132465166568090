"""Writing the Prometheus text format and OpenMetrics: the one writer, for ``/metrics`` and
``backfill`` alike.

A sample line is the same in both formats (``name{label="value"} 1.0``); only the ``# HELP`` and
``# TYPE`` lines differ (a counter's family is ``x`` in OpenMetrics and ``x_total`` in text; an
info family is typed ``info`` in one and ``gauge`` in the other) and OpenMetrics ends with
``# EOF``. So a family's samples are written once and shared by both formats. Numbers are
formatted as prometheus_client formats them (``floatToGoString``), label values escaped as
both formats require (backslash, newline, double quote), labels in sorted order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.utils import floatToGoString

from exporter.contract import Family

Format = Literal["text", "openmetrics"]
FORMATS: tuple[Format, ...] = ("text", "openmetrics")
EOF = b"# EOF\n"


def escape(value: str) -> str:
    """A label value (or OpenMetrics HELP text) escaped: backslash, newline, double quote."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def number(value: float) -> str:
    """A sample value as prometheus_client writes it: Go's float formatting, NaN, ±Inf."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def labels(pairs: Iterable[tuple[str, str]]) -> str:
    """``{a="1",b="2"}`` with the labels in sorted order (as prometheus_client writes them)."""
    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in sorted(pairs)) + "}"


def header(family: Family, help_text: str, fmt: Format) -> str:
    """The ``# HELP`` and ``# TYPE`` lines of a family in one format."""
    if fmt == "openmetrics":
        name, kind = family.name, family.type
        described = escape(help_text)
    else:
        name = family.sample
        kind = "gauge" if family.type == "info" else family.type
        described = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {described}\n# TYPE {name} {kind}\n"


@dataclass(frozen=True)
class Block:
    """One family and its sample lines (each ending in a newline), formatted once."""

    family: Family
    help: str
    samples: bytes


class Lines:
    """Sample lines written straight into one growing buffer of bytes.

    A family of 90,000 lines kept as a list of strings, joined and then encoded, peaks at three
    copies (the small strings, the joined text, the bytes), and its thousands of small strings
    are spread over the allocator's pools between objects that live on, which the process
    never gets back; here each line's string is freed as soon as it is copied in.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def append(self, line: str) -> None:
        self._buffer += line.encode()

    def __bool__(self) -> bool:
        return bool(self._buffer)

    def take(self) -> bytes:
        """The bytes written so far; the buffer is emptied."""
        written = bytes(self._buffer)
        self._buffer = bytearray()
        return written


def block(family: Family, help_text: str, lines: Lines) -> Block | None:
    """A family's block; None when it has no sample (absent families are left out)."""
    if not lines:
        return None
    return Block(family, help_text, lines.take())


def chunks(blocks: Sequence[Block], fmt: Format) -> list[bytes]:
    """The body in ``fmt`` as chunks: each family's header, then its shared sample bytes."""
    parts: list[bytes] = []
    for item in blocks:
        parts.append(header(item.family, item.help, fmt).encode())
        parts.append(item.samples)
    return parts
