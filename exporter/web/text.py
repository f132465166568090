"""The one way the pages turn API strings and numbers into text.

Every string on the status page came from an API (run names, IDs, statuses, metric names,
label values), so each passes through ``esc`` wherever it lands: HTML text, a quoted
attribute, an SVG ``<title>``. Besides the five HTML specials it replaces what a UTF-8 page
cannot carry or a parser would rewrite: lone surrogates (JSON allows ``"\\ud800"``, UTF-8 does
not, and encoding the page would fail) and control characters other than tab and newline.
"""

from __future__ import annotations

import html
import math
import re
import time

_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """``text`` with lone surrogates and control characters (but tab, CR and LF) replaced."""
    return _UNSAFE.sub(REPLACEMENT, text)


def esc(text: str) -> str:
    """Safe in HTML text, in a double- or single-quoted attribute and in SVG text."""
    return html.escape(clean(text), quote=True)


def number(value: float) -> str:
    """A metric value in four significant digits; non-finite as Prometheus spells it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def count(value: int) -> str:
    return f"{value:,}"


def utc(seconds: float) -> tuple[str, str] | None:
    """(ISO 8601 for ``datetime``, readable text) of a Unix time in UTC; None when an API sent
    a time no calendar holds (NaN, or years past 9999)."""
    try:
        stamp = time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        return None
    if not 0 < stamp.tm_year <= 9999:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp), time.strftime("%Y-%m-%d %H:%M UTC", stamp)


def time_tag(seconds: float) -> str:
    """A ``<time>`` the page's script shows as "3 min ago"; absolute UTC without script."""
    told = utc(seconds)
    if told is None:
        return "an unreadable time"
    machine, readable = told
    return f'<time datetime="{machine}">{readable}</time>'


def duration(seconds: float) -> str:
    """A rough span for humans: "45 s", "12 min", "3.5 h", "2 d"."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{round(seconds / 86400)} d"
