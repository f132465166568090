"""Unit-test fixtures: aioresponses made to work on aiohttp 3.14.

aioresponses 0.7.9 builds ``ClientResponse`` without the ``stream_writer`` argument that aiohttp
3.14 made required (pnuckowski/aioresponses#289). aiohttp only reads ``output_size`` from it, so
the fixture swaps in a subclass that supplies a stand-in. Delete ``_CompatResponse`` and the
monkeypatch once an aioresponses release includes the upstream fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any
from unittest.mock import Mock

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

_NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse).parameters


class _CompatResponse(aiohttp.ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", Mock(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mock_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """An aioresponses mock that works on every supported aiohttp."""
    if _NEEDS_STREAM_WRITER:
        monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    with aioresponses() as mocked:
        yield mocked
