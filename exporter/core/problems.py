"""One de-duplicating problem log: a state change is logged once, however often it is seen.

A poll every minute must not write the same failure every minute, and a recovery must be said
once. Each subject (a provider's discovery, one run's polling, the state file...) has at most
one current problem; ``report`` logs only when that problem starts, changes or clears.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any


class ProblemLog:
    """The current problem of every subject, and the log lines that announce changes."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._current: dict[Hashable, str] = {}

    def report(
        self,
        subject: Hashable,
        problem: str | None,
        *,
        failed: str,
        recovered: str,
        level: int = logging.WARNING,
        **fields: Any,
    ) -> bool:
        """Record ``subject``'s problem (None: none); log and return True if it changed."""
        if self._current.get(subject) == problem:
            return False
        if problem is None:
            del self._current[subject]
            self._log.info(recovered, extra=fields)
        else:
            self._current[subject] = problem
            self._log.log(level, failed, extra={**fields, "error": problem})
        return True

    def current(self, subject: Hashable) -> str | None:
        return self._current.get(subject)

    def forget(self, subject: Hashable) -> None:
        """Drop a subject that no longer exists (a run that left), without a log line."""
        self._current.pop(subject, None)
