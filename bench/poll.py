"""Measurements 2 and 3: poll-cycle time against the latency bound, and the API requests and
TCP connections each cycle costs, against the latency simulator.

Which models count as active, how many models a list page holds and the name of the
poll-duration family all come from the exporter, so the bound and the expected request counts
are the exporter's own rules and not a copy that could drift from them.
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from commands import METRICS_PATH, PYTHON, exporter_argv
from cycles import poll_durations
from harness import BENCH, Children, Deadline, free_port, get_json, log, wait_ok
from plan import Plan

from exporter.providers.cohere.provider import FINAL_STATUSES, LIST_PAGE_SIZE


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


def poll_duration(exp_url: str) -> float | None:
    """The Cohere provider's last poll duration (the latency simulator is a Cohere API)."""
    return poll_durations(exp_url, METRICS_PATH).get("cohere")


def active_ids(sim_url: str) -> set[str]:
    """The models the exporter polls every cycle: those whose status is not final."""
    truth = get_json(f"{sim_url}/simulator/truth")
    return {m["id"] for m in truth["runs"] if m["status"] not in FINAL_STATUSES}


def latency_simulator_argv(port: int, plan: Plan) -> list[str]:
    return [
        PYTHON,
        str(BENCH / "latency_simulator.py"),
        "--port",
        str(port),
        "--models",
        str(plan.poll_models),
        "--latency-ms",
        f"{plan.latency_ms:g}",
    ]


def read_cycle(
    sim_url: str, duration: float, seen: float, active: set[str], connections: int
) -> Cycle:
    """The requests of the cycle that just ended, counted alone: the counters are reset."""
    counts: dict[str, Any] = get_json(f"{sim_url}/simulator/requests")
    get_json(f"{sim_url}/simulator/reset-requests", method="POST")
    now_connections = int(get_json(f"{sim_url}/bench/connections")["connections"])
    by_model: dict[str, int] = counts["steps_by_run"]
    return Cycle(
        started=seen - duration,
        duration=duration,
        step_requests=int(counts["list_step_metrics"]),
        list_requests=int(counts["list_models"]),
        other_requests=int(counts["total"])
        - int(counts["list_step_metrics"])
        - int(counts["list_models"]),
        each_active_once=set(by_model) == active and all(v == 1 for v in by_model.values()),
        new_connections=now_connections - connections,
    )


def observe(
    run: PollRun, exp_url: str, sim_url: str, active: set[str], plan: Plan, deadline: Deadline
) -> None:
    """Take every new poll duration as the end of a cycle until enough cycles were seen."""
    connections = run.first_cycle_connections
    get_json(f"{sim_url}/simulator/reset-requests", method="POST")
    last = poll_duration(exp_url)
    run.first_cycle_started = time.monotonic() - (last or 0.0)
    c = run.concurrency
    observe_limit = time.monotonic() + (plan.steady_cycles + 4) * run.interval * 1.5 + 30
    while len(run.steady) < plan.steady_cycles or len(run.walks) < 2:
        if time.monotonic() > observe_limit:
            raise RuntimeError(f"poll cycles at C={c} not observed in time")
        deadline.check(what=f"poll cycles at C={c}")
        time.sleep(0.2)
        current = poll_duration(exp_url)
        seen = time.monotonic()
        if current is None or current == last:
            continue
        cycle = read_cycle(sim_url, current, seen, active, connections)
        connections += cycle.new_connections
        run.cycles.append(cycle)
        last = current
        log(
            f"  C={c} cycle {len(run.cycles) + 1}: {current:.3f} s, "
            f"{cycle.step_requests} step + {cycle.list_requests} list requests, "
            f"+{cycle.new_connections} connections"
        )


def bench_poll(children: Children, plan: Plan, concurrency: int, deadline: Deadline) -> PollRun:
    """Measurements 2 and 3: cycle time against the latency bound, requests and connections."""
    sim_port, exp_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim = children.start(
            f"latency-simulator-c{concurrency}", latency_simulator_argv(sim_port, plan)
        )
        procs.append(sim)
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_ok(f"{sim_url}/healthz", sim, deadline, limit=60, what="latency simulator")
        active = active_ids(sim_url)
        run = PollRun(concurrency, plan.poll_models, len(active), plan.latency_ms, 0, 0)
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
        run.first_cycle_connections = int(get_json(f"{sim_url}/bench/connections")["connections"])
        observe(run, exp_url, sim_url, active, plan, deadline)
        return run
    finally:
        for proc in reversed(procs):
            children.stop(proc)
