"""Reading the config file and the PEM files it names, and noticing when any of them changed.

Only regular files are read, and only up to a size cap: the paths come from an operator, but a
typo, a symlink to ``/dev/zero``, a FIFO or a file rewritten by something else must give a clear
error, not a hang, a MemoryError or a minute of parsing. Files are opened non-blocking (a FIFO
without a writer would otherwise block the open itself) and checked with ``fstat`` on the open
descriptor, so what is checked is what is read.

A load reads each file once through a :class:`FileReader`, which keeps a stamp of what it saw,
unreadable files included. The watcher compares those stamps on its next poll, so a broken file
is parsed, and its error logged, once rather than on every poll.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
# A web config is a few KB: users, headers and three paths.
CONFIG_LIMIT = 64 * KIB
# A certificate chain or a CA bundle is tens of KB; 1 MiB leaves room for large bundles.
PEM_LIMIT = 1024 * KIB
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(Exception):
    """The file cannot be used; the message says why, without anything read from it."""


def describe_limit(limit: int) -> str:
    return f"{limit // KIB} KiB" if limit < 1024 * KIB else f"{limit // (1024 * KIB)} MiB"


@dataclass(frozen=True)
class Stamp:
    """Enough to notice any change of a file: a same-size, same-mtime rewrite still alters sha."""

    mtime_ns: int
    size: int
    sha256: bytes


@dataclass(frozen=True)
class Seen:
    """What one read found: the stamp of the content, or why there was none."""

    limit: int
    stamp: Stamp | None
    problem: str | None = None


def read_regular(path: Path, limit: int) -> tuple[bytes, Stamp]:
    """The content of ``path`` if it is a regular file of at most ``limit`` bytes; blocking."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or type(exc).__name__) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
            raise UnreadableFile(f"not a regular file ({what})")
        if st.st_size > limit:
            raise UnreadableFile(f"larger than the {describe_limit(limit)} limit")
        chunks: list[bytes] = []
        left = limit + 1  # one byte more than allowed tells a file that grew while read
        while left > 0:
            chunk = os.read(fd, min(left, 64 * KIB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise UnreadableFile(f"larger than the {describe_limit(limit)} limit")
    return data, Stamp(st.st_mtime_ns, len(data), hashlib.sha256(data).digest())


def look(path: Path, limit: int) -> Seen:
    """What a read of ``path`` finds now, without keeping the content."""
    try:
        return Seen(limit, read_regular(path, limit)[1])
    except UnreadableFile as exc:
        return Seen(limit, None, str(exc))


class FileReader:
    """Reads files for one load and remembers what it saw, unreadable files included."""

    def __init__(self) -> None:
        self.seen: dict[Path, Seen] = {}

    def read(self, path: Path, limit: int) -> bytes:
        """The content of ``path``; raises UnreadableFile."""
        try:
            data, file_stamp = read_regular(path, limit)
        except UnreadableFile as exc:
            self.seen[path] = Seen(limit, None, str(exc))
            raise
        self.seen[path] = Seen(limit, file_stamp)
        return data


def unchanged(seen: Mapping[Path, Seen]) -> bool:
    """True when every file of the last load still looks the way that load saw it."""
    return all(look(path, before.limit) == before for path, before in seen.items())
