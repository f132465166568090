"""A connection flood against a server limited to 256 descriptors, in a child process.

More idle connections are opened than the server has descriptors. With the default cap the
server closes the surplus at once and never runs out; with a cap above the limit it runs out,
says so once and recovers. Either way ``/healthz`` answers once the header deadline has freed
the idle connections, while the flood's sockets are still open on the client side, and the
server's log stays a few lines long (asyncio alone writes thousands of lines a second here).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOFILE = 256
FLOOD = 300
HEADER_TIMEOUT = 3.0  # longer than a dropped SYN takes to be sent again (1 s)


@contextlib.contextmanager
def server(max_connections: int, log: Path) -> Iterator[int]:
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.listener_server",
                str(NOFILE),
                str(max_connections),
                str(HEADER_TIMEOUT),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            assert process.stdout is not None
            yield int(process.stdout.readline())
        finally:
            process.kill()
            process.wait(timeout=10)


def healthz(port: int) -> int | str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return int(answer.status)
    except OSError as exc:
        return type(exc).__name__


@pytest.mark.parametrize(
    ("max_connections", "expected_lines"),
    [
        (0, ["connection limit reached", "below the connection limit again"]),
        (1000, ["cannot accept connections; retrying", "accepting connections again"]),
    ],
    ids=["default-cap", "cap-above-descriptor-limit"],
)
def test_flood_of_idle_connections(
    tmp_path: Path, max_connections: int, expected_lines: list[str]
) -> None:
    log = tmp_path / "server.log"
    flood: list[socket.socket] = []
    with server(max_connections, log) as port:
        try:
            for _ in range(FLOOD):  # each connected (accepted, or waiting in the backlog)
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            deadline = time.monotonic() + 20
            while (answer := healthz(port)) != 200:
                assert time.monotonic() < deadline, f"/healthz never answered (last: {answer})"
                time.sleep(0.1)
        finally:
            for sock in flood:
                sock.close()
    lines = log.read_text().splitlines()
    assert len(lines) <= 4, lines[:10]
    for expected in expected_lines:
        assert sum(f'msg="{expected}' in line for line in lines) == 1, lines
