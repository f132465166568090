"""What a listener counts (open, refused, timed out, malformed...) and the log lines that
follow, each written when the state changes rather than per connection: under a flood of
thousands of connections a second the log must stay a few lines long.
"""

from __future__ import annotations

import errno
import logging
import re
import time

log = logging.getLogger("exporter.web.listener")
_now = time.monotonic

MALFORMED_LOG_INTERVAL = 10.0
ACCEPT_RETRY_DELAY = 0.5
_PATH_CHARS = 100
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}")


def request_line(head: bytes) -> tuple[str, str]:
    """(method, path) of a request's first bytes, or "-" for what does not look like them.

    Only a token followed by an origin-form target counts, so a header line can never be taken
    for a request line; the query is dropped (it may carry a token) and the path is cut.
    """
    parts = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
    if not _TOKEN.fullmatch(parts[0]):
        return "-", "-"
    target = parts[1] if len(parts) > 1 else b""
    if not target.startswith(b"/"):
        return parts[0].decode("ascii"), "-"
    path = re.split(rb"[?#]", target, maxsplit=1)[0].decode("ascii", "replace")
    path = "".join(ch if ch.isprintable() and ch.isascii() else "?" for ch in path)
    return parts[0].decode("ascii"), path[:_PATH_CHARS]


class ConnectionGuard:
    """The counts of one listener (open, refused, timed out...) and the log lines they cause,
    each written on a change of state rather than per connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.low_water = limit * 3 // 4  # hysteresis: no log line per freed slot under attack
        self.open = 0
        self.refused = 0
        self.header_timeouts = 0
        self.handshake_failures = 0
        self.malformed = 0
        self.accept_failures = 0
        self._refused_since_full: int | None = None
        self._failing: int | None = None
        self._failed_attempts = 0
        self._malformed_logged_at: float | None = None
        self._malformed_left_out = 0

    def admit(self) -> bool:
        if self.open < self.limit:
            self.open += 1
            return True
        self.refused += 1
        if self._refused_since_full is None:
            self._refused_since_full = 0
            log.warning(
                "connection limit reached; new connections are closed at once",
                extra={"limit": self.limit},
            )
        self._refused_since_full += 1
        return False

    def release(self) -> None:
        self.open -= 1
        if self._refused_since_full is not None and self.open <= self.low_water:
            log.info(
                "below the connection limit again",
                extra={"open": self.open, "refused": self._refused_since_full},
            )
            self._refused_since_full = None

    def accept_failed(self, exc: OSError) -> None:
        self.accept_failures += 1
        self._failed_attempts += 1
        if exc.errno != self._failing:
            self._failing = exc.errno
            log.error(
                "cannot accept connections; retrying",
                extra={
                    "err": errno.errorcode.get(exc.errno or 0, type(exc).__name__),
                    "retry_seconds": ACCEPT_RETRY_DELAY,
                },
            )

    def accepted(self) -> None:
        if self._failing is not None:
            log.info(
                "accepting connections again", extra={"failed_attempts": self._failed_attempts}
            )
            self._failing = None
            self._failed_attempts = 0

    def malformed_request(self, head: bytes, problem: str) -> None:
        self.malformed += 1
        now = _now()
        logged_at = self._malformed_logged_at
        if logged_at is not None and now - logged_at < MALFORMED_LOG_INTERVAL:
            self._malformed_left_out += 1
            return
        method, path = request_line(head)
        log.debug(
            "malformed request",
            extra={
                "method": method,
                "path": path,
                "problem": problem,
                "left_out": self._malformed_left_out,
            },
        )
        self._malformed_logged_at = now
        self._malformed_left_out = 0


class Slot:
    """One connection's place under the cap, given back exactly once."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard: ConnectionGuard | None = guard

    def release(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.release()
