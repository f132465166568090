"""Measurement 5: the CPU an exporter burns at rest, polled and scraped as in production.

The probe runs in the background for the whole of measurements 1 to 3: its own load is a few
requests a minute, and contention for the cores can only add to the CPU time charged to it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from commands import METRICS_PATH, exporter_argv, simulate_argv
from harness import Children, Deadline, cpu_seconds, free_port, http, log, wait_ok
from plan import Plan
from scrape import request_headers

#: What Prometheus 3 sends by default on every scrape: its ``Accept`` header, and gzip.
PROMETHEUS_HEADERS = request_headers("openmetrics", True)


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
    """An exporter of ``cpu_models`` models polled every ``cpu_poll_interval`` seconds and
    scraped every ``cpu_scrape_interval`` seconds the way Prometheus scrapes, left running in
    the background while the other measurements run."""

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
                exp_port,
                sim_url,
                interval=plan.cpu_poll_interval,
                discovery=plan.cpu_discovery_interval,
                concurrency=plan.cpu_concurrency,
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
            answer = http(f"{self._url}{METRICS_PATH}", headers=PROMETHEUS_HEADERS)
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
