"""Real programs on loopback for the end-to-end tests: each started, awaited, and always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary(name: str, package: str) -> str:
    """A Debian-packaged program; absent means skip locally and fail in CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (Debian package {package!r})")
        pytest.skip(f"{name} not installed (apt-get install {package})")
    return path


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def get_json(url: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    status, body = http_get(url + query)
    if status != 200:
        raise AssertionError(f"GET {url}{query} answered {status}: {body[:300]!r}")
    return json.loads(body)


def wait_for(condition: Callable[[], T | None], seconds: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def running(
    name: str,
    argv: list[str],
    logs: Path,
    ready_url: str,
    *,
    ready_seconds: float = 30,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, wait for ``ready_url`` to answer 200; stop it (TERM, then KILL) after.
    ``env`` adds variables to this process's environment (API keys, for instance)."""
    log_path = logs / f"{name}.log"
    environment = {**os.environ, **env} if env else None
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=logs, env=environment
        )
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")
                return http_get(ready_url, timeout=1)[0] == 200

            wait_for(ready, ready_seconds, f"{name} at {ready_url}")
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def exporter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter", *args]
