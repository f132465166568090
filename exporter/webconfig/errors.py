"""The one exception of the package and the one shape of its messages.

Every problem reads ``--web.config.file: FILE: SETTING: PROBLEM`` so that an operator sees which
flag, which file and which dotted setting to fix. Messages describe a wrong value by its type,
never by its text: a misplaced password hash or key must not reach logs or ``--check-config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

FLAG = "--web.config.file"


class WebConfigError(Exception):
    """The web config file cannot be used; the message names the flag, the file and the setting."""


def problem(path: Path, setting: str | None, text: str) -> WebConfigError:
    """The error for ``setting`` (None: the file as a whole) of the file at ``path``."""
    where = f"{setting}: " if setting else ""
    return WebConfigError(f"{FLAG}: {path}: {where}{text}")


def fail(path: Path, setting: str | None, text: str) -> NoReturn:
    """Raise :func:`problem`, without the exception it replaces (its text may quote the file)."""
    raise problem(path, setting, text) from None


def kind(value: object) -> str:
    """A type name for error messages, so a misplaced secret is never echoed back."""
    return {
        type(None): "null",
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
