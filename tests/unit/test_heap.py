"""Freed memory goes back to the system where the C library allows it."""

from __future__ import annotations

import platform

import pytest

from exporter.core.heap import release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_hands_free_pages_back() -> None:
    garbage = [bytes(1000) for _ in range(20_000)]  # 20 MB in small blocks, then freed
    del garbage
    assert release_free_memory()
