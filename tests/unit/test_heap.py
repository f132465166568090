"""Freed memory goes back to the system where the C library allows it."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from exporter.core.heap import limit_heap_growth, release_free_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")


def _run(code: str) -> list[int]:
    """Resident kB readings a fresh interpreter prints (a fresh heap: no other test's garbage)."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [int(value) for value in out.split()]


_RSS = (
    "def rss():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmRSS'):\n"
    "            return int(line.split()[1])\n"
)


@glibc_only
def test_trim_hands_free_pages_inside_the_heap_back() -> None:
    # 20 MB of 1 KB blocks, then one block above them that pins the heap's top: freeing the
    # 20 MB leaves them inside the heap, where only a trim hands them back.
    before_trim, after_trim = _run(
        _RSS + "from exporter.core.heap import release_free_memory\n"
        "garbage = [bytes(1000) + b'x' for _ in range(20_000)]\n"
        "pin = bytes(1000) + b'y'\n"
        "del garbage\n"
        "a = rss(); assert release_free_memory(); print(a, rss())\n"
    )
    assert before_trim - after_trim > 10_000


@glibc_only
def test_large_blocks_go_back_when_freed_once_growth_is_limited() -> None:
    # A freed 4 MB block raises glibc's own mapping bound, so the next ones of the same size
    # are carved from the heap and stay resident when freed; with the bound pinned they do not.
    program = (
        _RSS + "import sys\n"
        "from exporter.core.heap import limit_heap_growth\n"
        "if sys.argv[1] == 'limited': assert limit_heap_growth()\n"
        "first = bytearray(4 << 20); del first\n"
        "blocks = [bytearray(3 << 20) for _ in range(8)]\n"
        "pin = bytearray(200_000)  # above the blocks when they come from the heap\n"
        "a = rss(); del blocks; print(a - rss())\n"
    )
    (freed_default,) = _run(program.replace("sys.argv[1]", "'default'"))
    (freed_limited,) = _run(program.replace("sys.argv[1]", "'limited'"))
    assert freed_limited > 20_000  # 24 MB of blocks: nearly all of it handed back at once
    assert freed_default < freed_limited - 10_000


def test_both_are_safe_to_call_anywhere() -> None:
    assert isinstance(limit_heap_growth(), bool)
    assert isinstance(release_free_memory(), bool)
