"""Handing memory the process has freed back to the system.

glibc's allocator keeps freed memory for reuse, and after encoding a snapshot of thousands of
runs (tens of megabytes of short-lived strings, often allocated in a worker thread's own arena)
much of it stays resident although nothing uses it: the process would look, and be accounted
for, as much larger than what it holds. ``malloc_trim`` returns every free page; it is called
after each publication, which is when a large batch of memory has just been freed. Where the C
library is not glibc (musl, macOS) there is no such call and this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return trim


_TRIM = _find_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
