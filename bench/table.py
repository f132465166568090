"""The shape of the results table and the small formatting every measurement's rows share.

A row is eight cells: the measurement's number, what was measured, the exporter's number, the
two baselines' (``-`` where none applies), the ratio, the target and PASS or MISS. Each
measurement module builds its own rows from these helpers; ``report`` puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Row = tuple[str, str, str, str, str, str, str, str]
HEADER: Row = (
    "#",
    "measurement",
    "exporter",
    "client_python",
    "static",
    "ratio",
    "target",
    "result",
)


def fmt_ratio(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.2f}x" if value < 10 else f"{value:,.0f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return math.inf if a > 0 else None
    return a / b


def exporter_row(
    number: str, measurement: str, value: str, ratio_text: str, target: str, result: str
) -> Row:
    """A row of a measurement without baselines."""
    return (number, measurement, value, "-", "-", ratio_text, target, result)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def render_table(rows: Sequence[Row]) -> str:
    return markdown(HEADER, rows)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.2f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def fmt_mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"
