"""Benchmark of cohere-finetune-exporter against baselines, on loopback, in one run.

    python bench/run.py [--quick] [--sizes 100,2000,10000] [--out bench/results.md]

Starts the simulator and the exporter as separate processes, drives them with ``wrk`` and
plain HTTP, prints one table and appends it to ``--out`` with the date, the command line and
the machine. See ``bench/README.md`` for what each number means and how the baselines are
built. Every child process is stopped in a ``finally`` block and the whole run has a deadline.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
API_KEY = "bench-key-not-secret"
ACTIVE_STATUSES = frozenset({"STATUS_QUEUED", "STATUS_FINETUNING", "STATUS_DEPLOYING_API"})
LIST_PAGE_SIZE = 100  # the exporter walks the model list 100 models a page
MAX_REQUESTS_PER_MINUTE = "100000"  # the exporter's ceiling, so the budget never throttles here
SERVERS = ("exporter", "client_python", "static")
WRK_THREADS = 2
WRK_CONNECTIONS = 8
# What Prometheus 3 sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
MB = 1024 * 1024

# Targets.
MIN_VS_STATIC = 0.5
MIN_VS_CLIENT_PYTHON = 20.0
MAX_P99_VS_STATIC = 2.0
MAX_POLL_VS_BOUND = 1.25
RSS_TARGETS_MB = {100: 60.0, 10_000: 150.0}
MAX_CPU_PERCENT = 1.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- plan and deadline


@dataclass(frozen=True)
class Plan:
    quick: bool
    sizes: tuple[int, ...]
    wrk_seconds: int
    warmup_seconds: int
    poll_models: int
    latency_ms: float
    concurrencies: tuple[int, ...]
    steady_cycles: int
    cpu_models: int
    cpu_poll_interval: float
    cpu_scrape_interval: float
    cpu_window: float
    deadline: float


def make_plan(quick: bool, sizes: tuple[int, ...] | None, deadline: float | None) -> Plan:
    if quick:
        return Plan(
            quick=True,
            sizes=sizes or (100, 1000),
            wrk_seconds=3,
            warmup_seconds=1,
            poll_models=300,
            latency_ms=50.0,
            concurrencies=(8, 32),
            steady_cycles=2,
            cpu_models=100,
            cpu_poll_interval=30.0,
            cpu_scrape_interval=15.0,
            cpu_window=60.0,
            deadline=deadline or 240.0,
        )
    return Plan(
        quick=False,
        sizes=sizes or (100, 2000, 10_000),
        wrk_seconds=20,
        warmup_seconds=2,
        poll_models=1000,
        latency_ms=50.0,
        concurrencies=(8, 32),
        steady_cycles=4,
        cpu_models=100,
        cpu_poll_interval=30.0,
        cpu_scrape_interval=15.0,
        cpu_window=300.0,
        deadline=deadline or 1080.0,
    )


class DeadlineExceeded(RuntimeError):
    pass


class Deadline:
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

    def stop_all(self) -> None:
        for _, proc in list(reversed(self._procs)):
            self.stop(proc)


def child_env() -> dict[str, str]:
    """The environment minus anything that could reroute or reconfigure the children."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COHERE_")
        and k not in {"CO_API_URL", "CO_API_KEY"}
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["CO_API_KEY"] = API_KEY
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- HTTP and /proc

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
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    decode_gzip: bool = True,
) -> Answer:
    request = urllib.request.Request(url, method=method, headers=headers or {})
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
    answer = http(url, method=method)
    if answer.status != 200:
        raise RuntimeError(f"{method} {url} answered {answer.status}")
    return json.loads(answer.body)


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


def count_series(exposition: bytes) -> int:
    return sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))


# --------------------------------------------------------------------------- wrk

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    non_2xx: int


def parse_wrk(output: str) -> WrkResult:
    rps_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests_match = re.search(r"(\d+) requests in", output)
    percentiles: dict[str, float] = {}
    for pct, number, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M):
        percentiles[pct] = float(number) * _UNITS_MS[unit]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        # A read error is the server closing a connection after its answer (HTTP/1.0 style),
        # which wrk counts but which loses no request; connect, write and timeout do.
        errors = sum(int(socket_errors.group(i)) for i in (1, 3, 4))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(requests_match.group(1)) if requests_match else 0
    return WrkResult(
        rps=float(rps_match.group(1)) if rps_match else 0.0,
        requests=requests,
        p50_ms=percentiles.get("50") if requests else None,
        p99_ms=percentiles.get("99") if requests else None,
        errors=errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def run_wrk(url: str, seconds: int, use_gzip: bool, deadline: Deadline) -> WrkResult:
    deadline.check(seconds + 5, f"wrk {url}")
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "60s",
    ]
    if use_gzip:
        argv += ["-H", "Accept-Encoding: gzip"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 90, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# --------------------------------------------------------------------------- 1 + 4: scraping


@dataclass
class ScrapeSize:
    models: int
    series: int = 0
    plain_bytes: int = 0
    gzip_bytes: int = 0
    first_cycle_s: float = 0.0
    results: dict[tuple[str, bool], WrkResult] = field(default_factory=dict)
    peak_rss_kb: dict[str, int] = field(default_factory=dict)
    exporter_rss_before_kb: int = 0


def exporter_argv(
    port: int,
    api_url: str,
    *,
    interval: float,
    discovery: float,
    concurrency: int,
    max_models: int = 5000,
) -> list[str]:
    return [
        PYTHON,
        "-m",
        "exporter",
        "serve",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--cohere.api-url",
        api_url,
        "--poll.interval",
        f"{interval:g}",
        "--poll.discovery-interval",
        f"{discovery:g}",
        "--poll.concurrency",
        str(concurrency),
        "--limits.max-models",
        str(max_models),
        "--cohere.max-requests-per-minute",
        MAX_REQUESTS_PER_MINUTE,
        "--log.level",
        "warn",
    ]


def simulate_argv(port: int, models: int, speed: float) -> list[str]:
    return [
        PYTHON,
        "-m",
        "exporter",
        "simulate",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--models",
        str(models),
        "--seed",
        "1",
        "--speed",
        f"{speed:g}",
        "--log.level",
        "warn",
    ]


def bench_scrape(children: Children, plan: Plan, models: int, deadline: Deadline) -> ScrapeSize:
    """Measurements 1 and 4 at one size: the exporter and both baselines under ``wrk``."""
    result = ScrapeSize(models)
    sim_port, exp_port, cp_port, static_port = (free_port() for _ in range(4))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # A clock at 1/1000 of real time and one poll cycle an hour: the data stays put.
        sim = children.start(f"simulator-{models}", simulate_argv(sim_port, models, 0.001))
        procs.append(sim)
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_ok(f"{sim_url}/healthz", sim, deadline, limit=60, what="simulator")
        exporter = children.start(
            f"exporter-{models}",
            exporter_argv(
                exp_port,
                sim_url,
                interval=3600,
                discovery=3600,
                concurrency=32,
                max_models=max(5000, 2 * models),
            ),
        )
        procs.append(exporter)
        exp_url = f"http://127.0.0.1:{exp_port}"
        result.first_cycle_s = wait_ok(
            f"{exp_url}/readyz", exporter, deadline, limit=60 + models * 0.02, what="exporter"
        )
        answer = http(f"{exp_url}/metrics")
        if answer.status != 200:
            raise RuntimeError(f"exporter /metrics answered {answer.status}")
        exposition = answer.body
        result.series = count_series(exposition)
        result.plain_bytes = len(exposition)
        zipped = http(f"{exp_url}/metrics", headers={"Accept-Encoding": "gzip"}, decode_gzip=False)
        result.gzip_bytes = len(zipped.body)
        source = children.logdir / f"exposition-{models}.txt"
        source.write_bytes(exposition)
        content_type = answer.headers.get("Content-Type", "text/plain; version=0.0.4")
        baseline: dict[str, subprocess.Popen[bytes]] = {}
        for kind, port in (("client_python", cp_port), ("static", static_port)):
            baseline[kind] = children.start(
                f"{kind}-{models}",
                [
                    PYTHON,
                    str(BENCH / "baselines.py"),
                    kind,
                    "--port",
                    str(port),
                    "--source",
                    str(source),
                    "--content-type",
                    content_type,
                ],
            )
            procs.append(baseline[kind])
        urls = {
            "exporter": f"{exp_url}/metrics",
            "client_python": f"http://127.0.0.1:{cp_port}/metrics",
            "static": f"http://127.0.0.1:{static_port}/metrics",
        }
        pids = {"exporter": exporter.pid} | {k: p.pid for k, p in baseline.items()}
        result.exporter_rss_before_kb = proc_status_kb(exporter.pid, "VmHWM")
        for kind, proc in baseline.items():
            wait_ok(urls[kind], proc, deadline, limit=120, what=f"baseline {kind}")
            served = count_series(http(urls[kind], timeout=120).body)
            if served != result.series:
                log(f"warning: {kind} serves {served} series, the exporter {result.series}")
        log(
            f"{models} models: {result.series} series, {result.plain_bytes / MB:.1f} MB "
            f"({result.gzip_bytes / MB:.2f} MB gzipped), first poll cycle "
            f"{result.first_cycle_s:.1f} s"
        )
        for server in SERVERS:
            for use_gzip in (False, True):
                wait_all_idle(pids.values(), deadline)
                run_wrk(urls[server], plan.warmup_seconds, use_gzip, deadline)
                wait_all_idle(pids.values(), deadline)
                measured = run_wrk(urls[server], plan.wrk_seconds, use_gzip, deadline)
                result.results[(server, use_gzip)] = measured
                log(
                    f"  {server:<13} {'gzip' if use_gzip else 'plain':<5} "
                    f"{measured.rps:9.1f} req/s  p50 {fmt_ms(measured.p50_ms):>9}  "
                    f"p99 {fmt_ms(measured.p99_ms):>9}"
                )
        for server, pid in pids.items():
            result.peak_rss_kb[server] = proc_status_kb(pid, "VmHWM")
        return result
    finally:
        for proc in reversed(procs):
            children.stop(proc)


# --------------------------------------------------------------------------- 2 + 3: polling


@dataclass(frozen=True)
class Cycle:
    started: float  # monotonic, estimated: when the end was seen minus the cycle's duration
    duration: float
    step_requests: int
    list_requests: int
    other_requests: int
    each_active_once: bool
    new_connections: int


@dataclass
class PollRun:
    concurrency: int
    models: int
    active: int
    latency_ms: float
    interval: float
    discovery: float
    first_cycle_connections: int = 0
    first_cycle_s: float = 0.0
    first_cycle_started: float = 0.0
    cycles: list[Cycle] = field(default_factory=list)

    @property
    def bound(self) -> float:
        return math.ceil(self.active / self.concurrency) * self.latency_ms / 1000.0

    @property
    def list_pages(self) -> int:
        return max(1, math.ceil(self.models / LIST_PAGE_SIZE))

    @property
    def steady(self) -> list[Cycle]:
        return [c for c in self.cycles if c.list_requests == 0]

    @property
    def walks(self) -> list[float]:
        """Start times of the cycles that walked the model list (the first cycle always)."""
        return [self.first_cycle_started] + [c.started for c in self.cycles if c.list_requests]


_POLL_DURATION = re.compile(rb"^cohere_finetune_poll_duration_seconds (\S+)$", re.M)


def poll_duration(exp_url: str) -> float | None:
    # gzip: the exporter sends its cached gzip, so watching it barely costs the exporter
    body = http(f"{exp_url}/metrics", headers={"Accept-Encoding": "gzip"}).body
    match = _POLL_DURATION.search(body)
    return float(match.group(1)) if match else None


def bench_poll(children: Children, plan: Plan, concurrency: int, deadline: Deadline) -> PollRun:
    """Measurements 2 and 3: cycle time against the latency bound, requests and connections."""
    sim_port, exp_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim = children.start(
            f"latency-simulator-c{concurrency}",
            [
                PYTHON,
                str(BENCH / "latency_simulator.py"),
                "--port",
                str(sim_port),
                "--models",
                str(plan.poll_models),
                "--latency-ms",
                f"{plan.latency_ms:g}",
            ],
        )
        procs.append(sim)
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_ok(f"{sim_url}/healthz", sim, deadline, limit=60, what="latency simulator")
        truth = get_json(f"{sim_url}/simulator/truth")
        active_ids = {m["id"] for m in truth["runs"] if m["status"] in ACTIVE_STATUSES}
        run = PollRun(concurrency, plan.poll_models, len(active_ids), plan.latency_ms, 0, 0)
        # The grid leaves room for a cycle that walks the list too, plus a gap to read counters.
        walk_s = run.list_pages * plan.latency_ms / 1000.0
        run.interval = round(run.bound + walk_s + max(1.0, 0.3 * run.bound), 1)
        run.discovery = 2.5 * run.interval  # a walk every third cycle
        exporter = children.start(
            f"exporter-poll-c{concurrency}",
            exporter_argv(
                exp_port,
                sim_url,
                interval=run.interval,
                discovery=run.discovery,
                concurrency=concurrency,
            ),
        )
        procs.append(exporter)
        exp_url = f"http://127.0.0.1:{exp_port}"
        run.first_cycle_s = wait_ok(
            f"{exp_url}/readyz", exporter, deadline, limit=120, what="exporter"
        )
        connections = int(get_json(f"{sim_url}/bench/connections")["connections"])
        run.first_cycle_connections = connections
        get_json(f"{sim_url}/simulator/reset-requests", method="POST")
        last = poll_duration(exp_url)
        run.first_cycle_started = time.monotonic() - (last or 0.0)
        observe_limit = time.monotonic() + (plan.steady_cycles + 4) * run.interval * 1.5 + 30
        while len(run.steady) < plan.steady_cycles or len(run.walks) < 2:
            if time.monotonic() > observe_limit:
                raise RuntimeError(f"poll cycles at C={concurrency} not observed in time")
            deadline.check(what=f"poll cycles at C={concurrency}")
            time.sleep(0.2)
            current = poll_duration(exp_url)
            seen = time.monotonic()
            if current is None or current == last:
                continue
            counts = get_json(f"{sim_url}/simulator/requests")
            get_json(f"{sim_url}/simulator/reset-requests", method="POST")
            now_connections = int(get_json(f"{sim_url}/bench/connections")["connections"])
            by_model: dict[str, int] = counts["steps_by_run"]
            cycle = Cycle(
                started=seen - current,
                duration=current,
                step_requests=int(counts["list_step_metrics"]),
                list_requests=int(counts["list_models"]),
                other_requests=int(counts["total"])
                - int(counts["list_step_metrics"])
                - int(counts["list_models"]),
                each_active_once=set(by_model) == active_ids
                and all(v == 1 for v in by_model.values()),
                new_connections=now_connections - connections,
            )
            connections = now_connections
            run.cycles.append(cycle)
            last = current
            log(
                f"  C={concurrency} cycle {len(run.cycles) + 1}: {current:.3f} s, "
                f"{cycle.step_requests} step + {cycle.list_requests} list requests, "
                f"+{cycle.new_connections} connections"
            )
        return run
    finally:
        for proc in reversed(procs):
            children.stop(proc)


# --------------------------------------------------------------------------- 5: CPU


@dataclass
class CpuResult:
    window: float
    cpu_s: float
    scrapes: int
    scrape_failures: int

    @property
    def percent(self) -> float:
        return 100.0 * self.cpu_s / self.window


class CpuProbe:
    """An exporter of ``cpu_models`` models polled every 30 s and scraped every 15 s the way
    Prometheus scrapes, left running in the background while the other measurements run: its
    own load is tiny, and contention can only add to the CPU time it is charged."""

    def __init__(self, children: Children, plan: Plan) -> None:
        self._children = children
        self._plan = plan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_cpu = 0.0
        self._started = 0.0
        self.scrapes = 0
        self.failures = 0
        self._url = ""
        self._end_cpu: float | None = None
        self._window = 0.0

    def start(self, deadline: Deadline) -> None:
        plan = self._plan
        sim_port, exp_port = free_port(), free_port()
        sim = self._children.start("simulator-cpu", simulate_argv(sim_port, plan.cpu_models, 1.0))
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_ok(f"{sim_url}/healthz", sim, deadline, limit=60, what="simulator")
        exporter = self._children.start(
            "exporter-cpu",
            exporter_argv(
                exp_port, sim_url, interval=plan.cpu_poll_interval, discovery=300, concurrency=8
            ),
        )
        self._url = f"http://127.0.0.1:{exp_port}"
        wait_ok(f"{self._url}/readyz", exporter, deadline, limit=60, what="exporter")
        self._scrape()  # warm-up: imports and first encodings happen before the window
        self.scrapes = self.failures = 0
        self._pid = exporter.pid
        self._start_cpu = cpu_seconds(self._pid)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._scrape_loop, name="cpu-scraper", daemon=True)
        self._thread.start()

    def _scrape(self) -> None:
        try:
            answer = http(
                f"{self._url}/metrics",
                headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"},
            )
            ok = answer.status == 200
        except OSError:
            ok = False
        self.scrapes += 1
        self.failures += 0 if ok else 1

    def _scrape_loop(self) -> None:
        """Scrape on a fixed grid, then read the CPU time exactly at the end of the window."""
        interval = self._plan.cpu_scrape_interval
        end = self._started + self._plan.cpu_window
        n = 0
        while not self._stop.is_set():
            due = self._started + n * interval
            if due >= end:
                break
            if not self._stop.wait(max(0.0, due - time.monotonic())):
                self._scrape()
                n += 1
        if not self._stop.wait(max(0.0, end - time.monotonic())):
            self._end_cpu = cpu_seconds(self._pid)
            self._window = time.monotonic() - self._started

    def finish(self, deadline: Deadline) -> CpuResult:
        left = self._started + self._plan.cpu_window - time.monotonic()
        if left > 0:
            deadline.check(left + 5, "the end of the CPU window")
            log(f"waiting {left:.0f} s for the end of the CPU window")
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, left) + 30)
        self._stop.set()
        if self._end_cpu is None:
            raise RuntimeError("the CPU window did not complete")
        cpu = self._end_cpu - self._start_cpu
        return CpuResult(self._window, cpu, self.scrapes, self.failures)

    def cancel(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- the table

Row = tuple[str, str, str, str, str, str, str, str]
HEADER: Row = (
    "#",
    "measurement",
    "exporter",
    "client_python",
    "static",
    "ratio",
    "target",
    "result",
)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.2f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def fmt_rps(result: WrkResult) -> str:
    text = f"{result.rps:,.1f}" if result.rps < 100 else f"{result.rps:,.0f}"
    if result.errors or result.non_2xx:
        text += f" ({result.errors + result.non_2xx} errors)"
    return text


def fmt_ratio(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.2f}x" if value < 10 else f"{value:,.0f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return math.inf if a > 0 else None
    return a / b


def scrape_rows(size: ScrapeSize) -> Iterator[Row]:
    head = (
        f"/metrics, {size.models:,} models ({size.series:,} series, "
        f"{size.plain_bytes / MB:.2f} MB, {size.gzip_bytes / MB:.2f} MB gzipped)"
    )
    for use_gzip in (False, True):
        enc = "gzip" if use_gzip else "plain"
        exp, cp, st = (size.results[(s, use_gzip)] for s in SERVERS)
        vs_static = ratio(exp.rps, st.rps)
        vs_cp = ratio(exp.rps, cp.rps)
        ok = (
            vs_static is not None
            and vs_cp is not None
            and vs_static >= MIN_VS_STATIC
            and vs_cp >= MIN_VS_CLIENT_PYTHON
        )
        failures = [
            name
            for name, value, floor in (
                ("static", vs_static, MIN_VS_STATIC),
                ("client_python", vs_cp, MIN_VS_CLIENT_PYTHON),
            )
            if value is None or value < floor
        ]
        yield (
            "1",
            f"{head}, {enc}: requests/s",
            fmt_rps(exp),
            fmt_rps(cp),
            fmt_rps(st),
            f"{fmt_ratio(vs_static or 0)} static, {fmt_ratio(vs_cp or 0)} client_python",
            f"≥ {MIN_VS_STATIC}x static, ≥ {MIN_VS_CLIENT_PYTHON:g}x client_python",
            verdict(ok) + (f" ({', '.join(failures)})" if failures else ""),
        )
        yield (
            "1",
            f"{size.models:,} models, {enc}: p50",
            fmt_ms(exp.p50_ms),
            fmt_ms(cp.p50_ms),
            fmt_ms(st.p50_ms),
            "",
            "",
            "",
        )
        p99 = ratio(exp.p99_ms, st.p99_ms)
        yield (
            "1",
            f"{size.models:,} models, {enc}: p99",
            fmt_ms(exp.p99_ms),
            fmt_ms(cp.p99_ms),
            fmt_ms(st.p99_ms),
            "-" if p99 is None else f"{fmt_ratio(p99)} static",
            f"≤ {MAX_P99_VS_STATIC:g}x static",
            "-" if p99 is None else verdict(p99 <= MAX_P99_VS_STATIC),
        )


def poll_rows(run: PollRun) -> Iterator[Row]:
    c = run.concurrency
    steady = run.steady
    durations = [cycle.duration for cycle in steady]
    median = statistics.median(durations)
    worst = max(durations)
    yield (
        "2",
        f"poll cycle, {run.models:,} models ({run.active} active), {run.latency_ms:g} ms per "
        f"request, C={c}: median (max) of {len(steady)} cycles with nothing new",
        f"{median:.3f} s ({worst:.3f} s)",
        "-",
        "-",
        f"{median / run.bound:.2f}x ({worst / run.bound:.2f}x) bound "
        f"⌈{run.active}/{c}⌉x{run.latency_ms:g} ms = {run.bound:.2f} s",
        f"≤ {MAX_POLL_VS_BOUND:g}x bound",
        verdict(median / run.bound <= MAX_POLL_VS_BOUND),
    )
    per_cycle = sorted({cycle.step_requests for cycle in run.cycles})
    others = sum(cycle.other_requests for cycle in run.cycles) + sum(
        cycle.list_requests for cycle in steady
    )
    each_once = all(cycle.each_active_once for cycle in run.cycles)
    ok = per_cycle == [run.active] and others == 0 and each_once
    yield (
        "3",
        f"API requests per cycle with nothing new, C={c} ({len(run.cycles)} cycles)",
        ", ".join(map(str, per_cycle)) + (f" (+{others} other)" if others else ""),
        "-",
        "-",
        f"{run.active} active models" + ("; each once" if each_once else "; NOT each once"),
        "== active models",
        verdict(ok),
    )
    gaps = [b - a for a, b in itertools.pairwise(run.walks)]
    pages = sorted({cycle.list_requests for cycle in run.cycles if cycle.list_requests})
    # Due once a discovery interval has passed since the last walk ended, so a walk starts on
    # the first poll slot after that: between D and D + one poll interval (+ detection slack).
    slack = 0.5
    walk_ok = (
        pages == [run.list_pages]
        and bool(gaps)
        and all(run.discovery - slack <= g <= run.discovery + run.interval + slack for g in gaps)
    )
    yield (
        "3",
        f"model-list walks, C={c}: requests per walk; seconds between walk starts",
        f"{', '.join(map(str, pages))} requests; {', '.join(f'{g:.1f}' for g in gaps)} s apart",
        "-",
        "-",
        f"{run.list_pages} pages; discovery interval {run.discovery:g} s, poll {run.interval:g} s",
        "1 walk per discovery interval (+ at most 1 poll interval)",
        verdict(walk_ok),
    )
    new = sum(cycle.new_connections for cycle in run.cycles)
    yield (
        "3",
        f"TCP connections the simulator accepted, C={c}",
        f"{run.first_cycle_connections} in the first cycle, +{new} in the next {len(run.cycles)}",
        "-",
        "-",
        f"{run.first_cycle_connections / c:.2f} per concurrent request",
        "no new connection after the first cycle",
        verdict(new == 0),
    )


def memory_rows(sizes: list[ScrapeSize]) -> Iterator[Row]:
    for size in sizes:
        target = RSS_TARGETS_MB.get(size.models)
        mb = {k: v / 1024 for k, v in size.peak_rss_kb.items()}
        yield (
            "4",
            f"peak RSS (VmHWM), {size.models:,} models, after the scrapes above",
            f"{mb['exporter']:.1f} MB ({size.exporter_rss_before_kb / 1024:.1f} MB before the "
            "scrapes)",
            f"{mb['client_python']:.1f} MB",
            f"{mb['static']:.1f} MB",
            "-" if target is None else f"{mb['exporter'] / target:.2f}x target",
            "-" if target is None else f"≤ {target:g} MB",
            "-" if target is None else verdict(mb["exporter"] <= target),
        )


def cpu_row(plan: Plan, cpu: CpuResult) -> Row:
    return (
        "5",
        f"CPU, {plan.cpu_models} models, poll every {plan.cpu_poll_interval:g} s, scraped every "
        f"{plan.cpu_scrape_interval:g} s (gzip, OpenMetrics), {cpu.window:.0f} s window",
        f"{cpu.percent:.3f} % of one core ({cpu.cpu_s:.2f} s CPU, {cpu.scrapes} scrapes"
        + (f", {cpu.scrape_failures} failed" if cpu.scrape_failures else "")
        + ")",
        "-",
        "-",
        "-",
        f"< {MAX_CPU_PERCENT:g} %",
        verdict(cpu.percent < MAX_CPU_PERCENT and not cpu.scrape_failures),
    )


def render_table(rows: list[Row]) -> str:
    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    return "\n".join([line(HEADER), line(["---"] * len(HEADER)), *map(line, rows)])


# --------------------------------------------------------------------------- machine and main


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def exporter_revision() -> str:
    root = BENCH.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "exporter"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" with uncommitted changes in exporter/" if dirty else "")


def report(plan: Plan, table: str, started: datetime, elapsed: float, revision: str) -> str:
    versions = ", ".join(f"{name} {version(name)}" for name in ("aiohttp", "prometheus_client"))
    durations = (
        f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} for {plan.wrk_seconds} s per cell after a "
        f"{plan.warmup_seconds} s warm-up; poll cycles at {plan.poll_models:,} models; "
        f"CPU window {plan.cpu_window:.0f} s; whole run {elapsed / 60:.1f} min"
    )
    return "\n".join(
        [
            f"## {started:%Y-%m-%d %H:%M} UTC{' (--quick)' if plan.quick else ''}",
            "",
            f"- command: `{shlex.join(sys.orig_argv)}`",
            f"- machine: {os.cpu_count()} cores, {cpu_model()}, Python "
            f"{platform.python_version()}, Linux {platform.release()}",
            f"- software: exporter at {revision}, {wrk_version()}, {versions}",
            f"- run: {durations}",
            "",
            table,
            "",
        ]
    )


def append_results(out: Path, text: str) -> None:
    if not out.exists():
        out.write_text(
            "# Benchmark results\n\nAppended by `bench/run.py`, newest last; "
            "see `bench/README.md` for what each row means.\n\n",
            encoding="utf-8",
        )
    with out.open("a", encoding="utf-8") as handle:
        handle.write("\n" + text)


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive integers, e.g. 100,2000,10000")
    return sizes


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def signals_exit() -> Iterator[None]:
    """SIGTERM ends the run through every ``finally``, as Ctrl-C does."""
    previous: Callable[[int, FrameType | None], Any] | int | None = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the exporter against baselines.")
    parser.add_argument("--quick", action="store_true", help="short run (< 2 minutes)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default=None, help="model counts (default 100,2000,10000)"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds before the run is abandoned"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk not found; install it (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    plan = make_plan(args.quick, args.sizes, args.deadline)
    deadline = Deadline(plan.deadline)
    started = datetime.now(UTC)
    revision = exporter_revision()  # before the run: the code that is measured
    clock = time.monotonic()
    logdir = Path(tempfile.mkdtemp(prefix="cohere-exporter-bench-"))
    children = Children(logdir)
    rows: list[Row] = []
    try:
        with signals_exit():
            log(f"child logs in {logdir}")
            probe = CpuProbe(children, plan)
            probe.start(deadline)
            log(f"CPU window of {plan.cpu_window:.0f} s started in the background")
            try:
                sizes = [bench_scrape(children, plan, n, deadline) for n in plan.sizes]
                polls = [bench_poll(children, plan, c, deadline) for c in plan.concurrencies]
                cpu = probe.finish(deadline)
            finally:
                probe.cancel()
    except (DeadlineExceeded, RuntimeError) as exc:
        print(f"error: {exc}; child logs in {logdir}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()
    for size in sizes:
        rows.extend(scrape_rows(size))
    for run in polls:
        rows.extend(poll_rows(run))
    rows.extend(memory_rows(sizes))
    rows.append(cpu_row(plan, cpu))
    text = report(plan, render_table(rows), started, time.monotonic() - clock, revision)
    print(text)
    append_results(args.out, text)
    shutil.rmtree(logdir, ignore_errors=True)
    log(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
