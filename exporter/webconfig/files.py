"""Reading the config file and the PEM files it names, and noticing when any of them changed.

A load reads each file exactly once through a :class:`FileReader`, which keeps a stamp of what
it saw (missing files included). The watcher compares those stamps on its next poll, so a
broken file is parsed, and its error logged, once rather than on every poll.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stamp:
    """Enough to notice any change of a file: a same-size, same-mtime rewrite still alters sha."""

    mtime_ns: int
    size: int
    sha256: bytes


def stamp(path: Path) -> Stamp | None:
    """The file's current stamp; None when it cannot be read."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError:
        return None
    return Stamp(st.st_mtime_ns, st.st_size, hashlib.sha256(data).digest())


class FileReader:
    """Reads files for one load and remembers what it saw, missing files included."""

    def __init__(self) -> None:
        self.seen: dict[Path, Stamp | None] = {}

    def read(self, path: Path) -> bytes:
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError:
            self.seen[path] = None
            raise
        self.seen[path] = Stamp(st.st_mtime_ns, st.st_size, hashlib.sha256(data).digest())
        return data


def unchanged(seen: Mapping[Path, Stamp | None]) -> bool:
    """True when every file of the last load still has the stamp that load saw."""
    return all(stamp(path) == seen_stamp for path, seen_stamp in seen.items())
