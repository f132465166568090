"""What every measurement of ``bench/run.py`` stands on: the deadline, the child processes and
their environment, free ports, plain HTTP, waiting for readiness or idleness, /proc readings.

Children run this checkout's ``exporter`` (its root is put first on ``PYTHONPATH``), whatever
copy of the package the virtual environment has installed, so the numbers belong to the code
next to the harness. Their command lines are built in ``commands``.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.settings import PROVIDERS, Settings, spelling

BENCH = Path(__file__).resolve().parent
#: The checkout the harness belongs to: its children run this tree's ``exporter``.
ROOT = BENCH.parent
API_KEY = "bench-key-not-secret"
MB = 1024 * 1024
#: Every environment variable a setting of the exporter is read from (``FINETUNE_EXPORTER_*``,
#: ``CO_API_KEY``, ``TOGETHER_BASE_URL``...), none of which may leak from the caller.
SETTING_ENV = frozenset(env for name in Settings.model_fields for env in spelling(name).env)
#: The variables that give each provider its key (the first spelling of each key setting).
KEY_ENV = tuple(spelling(f"{provider}_api_key").env[0] for provider in PROVIDERS)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- deadline


class DeadlineExceeded(RuntimeError):
    pass


class Deadline:
    """One budget of wall-clock time for the whole run, checked before every long step, so a
    run that cannot finish stops early with every child stopped instead of hanging."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, need: float = 0.0, what: str = "the run") -> None:
        if self.remaining() < need:
            raise DeadlineExceeded(
                f"overall deadline of {self.seconds:.0f} s reached before {what} "
                f"(needed {need:.0f} s, {max(0.0, self.remaining()):.0f} s left)"
            )


# --------------------------------------------------------------------------- child processes


class Children:
    """Every process the benchmark starts; ``stop_all`` ends whichever are still running."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = child_env()

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        path = self.logdir / f"{name}.log"
        with path.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.logdir,  # no .env of the repository is read by the children
                env=self.env,
            )
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def running(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """Every child started and not stopped yet, oldest first."""
        return list(self._procs)

    def stop_all(self) -> None:
        for _, proc in list(reversed(self._procs)):
            self.stop(proc)


def child_env() -> dict[str, str]:
    """The environment minus anything that could reroute or reconfigure the children, plus a
    key for every provider and this checkout first on ``PYTHONPATH``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTING_ENV
        and not k.startswith("COHERE_")  # the prefix before the providers were renamed
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for key in KEY_ENV:
        env[key] = API_KEY
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- HTTP

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def http(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    decode_gzip: bool = True,
) -> Answer:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body: bytes = response.read()
            status: int = response.status
            got = dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers.items()), exc.read())
    if decode_gzip and got.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return Answer(status, got, body)


def get_json(url: str, *, method: str = "GET") -> Any:
    """The JSON answer of a child's control route; a child that stopped answering ends the run
    with its URL named (a ``RuntimeError``, as every failure the run reports)."""
    try:
        answer = http(url, method=method)
    except OSError as exc:
        raise RuntimeError(f"{method} {url} failed: {exc}") from exc
    if answer.status != 200:
        raise RuntimeError(f"{method} {url} answered {answer.status}")
    return json.loads(answer.body)


def count_series(exposition: bytes) -> int:
    return sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))


# --------------------------------------------------------------------------- waiting and /proc


def wait_ok(
    url: str, proc: subprocess.Popen[bytes], deadline: Deadline, *, limit: float, what: str
) -> float:
    """Poll ``url`` until it answers 200; seconds waited. Fails if ``proc`` exits."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} (see its log)")
        try:
            if http(url, timeout=30).status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > limit:
            raise RuntimeError(f"{what} not ready at {url} after {limit:.0f} s")
        deadline.check(what=f"{what} became ready")
        time.sleep(0.1)


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_idle(pid: int, deadline: Deadline, *, limit: float = 120.0) -> None:
    """Wait until ``pid`` burns under 10% of a core, so leftovers of a run do not leak into the
    next (a thread-per-request server keeps encoding for clients that already left)."""
    started = time.monotonic()
    while time.monotonic() - started < limit and deadline.remaining() > 5:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before <= 0.05:
            return


def wait_all_idle(pids: Iterable[int], deadline: Deadline) -> None:
    """Every server of a size idle: a baseline still busy must not slow another's run."""
    for pid in pids:
        wait_idle(pid, deadline)


def wait_exit(proc: subprocess.Popen[bytes], deadline: Deadline, *, limit: float, what: str) -> int:
    """Wait for ``proc`` to exit, within ``limit`` seconds and the deadline; its exit code."""
    give_up = time.monotonic() + limit
    while proc.poll() is None:
        if time.monotonic() > give_up:
            raise RuntimeError(f"{what} did not finish in {limit:.0f} s")
        deadline.check(what=f"{what} finished")
        time.sleep(0.1)
    return proc.returncode
