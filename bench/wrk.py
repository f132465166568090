"""Running ``wrk`` (Debian's package) against one URL, reading its report, and formatting it.

``wrk`` drives ``/metrics`` harder than a Python client could from the same machine, and its
``--latency`` report gives the p50 and p99 the targets are stated in.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from harness import Deadline

WRK_THREADS = 2
WRK_CONNECTIONS = 8

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


def wrk_argv(url: str, seconds: int, headers: Mapping[str, str]) -> list[str]:
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "60s",
    ]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return [*argv, url]


def run_wrk(url: str, seconds: int, headers: Mapping[str, str], deadline: Deadline) -> WrkResult:
    """``seconds`` of load on ``url``, every request carrying ``headers``."""
    deadline.check(seconds + 5, f"wrk {url}")
    done = subprocess.run(
        wrk_argv(url, seconds, headers),
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def fmt_rps(result: WrkResult) -> str:
    text = f"{result.rps:,.1f}" if result.rps < 100 else f"{result.rps:,.0f}"
    if result.errors or result.non_2xx:
        text += f" ({result.errors + result.non_2xx} errors)"
    return text
