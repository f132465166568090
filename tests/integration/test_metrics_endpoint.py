"""/metrics against clients that do not read: what a slow scraper can hold is bounded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter.exposition import ExpositionCache
from exporter.web import metrics as metrics_module
from exporter.web.metrics import MetricsEndpoint
from tests.snapshots import cohere_view, snapshot_of, step
from tests.stack import serve_app

pytestmark = pytest.mark.integration
DEADLINE = 10.0


def big_cache() -> ExpositionCache:
    """A few megabytes of exposition: far more than the socket buffers of a reader that stops."""
    runs = [
        cohere_view(
            f"run-{n:05d}",
            f"name-{n}",
            "STATUS_FINETUNING",
            newest_step=step(n, 1.0, {f"metric_{k}": float(k) for k in range(20)}),
            up=True,
        )
        for n in range(3000)
    ]
    cache = ExpositionCache(CollectorRegistry(auto_describe=False))
    cache.prepare(snapshot_of(*runs))
    return cache


async def until(condition: str, check: object) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, condition
        await asyncio.sleep(0.02)


def stalled_reader(url: str) -> socket.socket:
    """A scraper that sends its request and then never reads the answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


@pytest.fixture
def readers() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


async def test_slow_readers_are_capped_and_then_cut_off(
    monkeypatch: pytest.MonkeyPatch, readers: list[socket.socket]
) -> None:
    monkeypatch.setattr(metrics_module, "MAX_STREAMS", 2)
    monkeypatch.setattr(metrics_module, "WRITE_DEADLINE_SECONDS", 1.0)
    endpoint = MetricsEndpoint(big_cache())
    app = web.Application()
    app.router.add_get("/metrics", endpoint.handle)
    async with serve_app(app) as served, aiohttp.ClientSession() as http:
        readers.extend(stalled_reader(served.url) for _ in range(2))
        await until("two bodies in flight", lambda: endpoint.streaming == 2)
        async with http.get(served.url + "/metrics") as busy:
            assert busy.status == 503
            assert busy.headers["Retry-After"] == "1"
        await until("the stalled bodies abandoned", lambda: endpoint.streaming == 0)
        assert endpoint.abandoned == 2
        plain = {"Accept-Encoding": "identity"}
        async with http.get(served.url + "/metrics", headers=plain) as answer:
            body = await answer.read()
            assert answer.status == 200
            assert len(body) == answer.content_length
            assert body.count(b"\n") > 60_000
