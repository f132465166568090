"""Simulators and the exporter that polls them, started together for one measurement.

A ``Fleet`` is one simulator per provider (Cohere and Together AI, half the runs each unless a
measurement asks otherwise) and, once they answer, any number of exporters polling some or all
of them in turn. The harness stops whatever a fleet started when the measurement ends.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from commands import exporter_argv, max_models_for, simulate_argv
from harness import Children, Deadline, free_port, get_json, wait_ok

from exporter.core.provider import TERMINAL_PHASES, Phase
from exporter.providers.cohere.provider import PHASES as COHERE_PHASES
from exporter.providers.together.provider import PHASES as TOGETHER_PHASES

#: How each provider's own statuses map to phases, as the exporter maps them.
PROVIDER_PHASES: dict[str, Mapping[str, Phase]] = {
    "cohere": COHERE_PHASES,
    "together": TOGETHER_PHASES,
}
#: Simulated seconds per real second of the simulators the measurements poll: a millionth, so a
#: whole run of the benchmark lasts a few simulated milliseconds, no run logs a step or changes
#: status while it is measured, and every cycle after the first finds nothing new. (The
#: simulators refuse a speed of 0.)
STILL_SPEED = 1e-6
#: Seconds the first poll cycle may take per run, on top of a minute (10,000 runs on two
#: shared cores: a few minutes, most of it the simulators building their metric logs).
READY_SECONDS_PER_RUN = 0.06


def split_runs(runs: int) -> dict[str, int]:
    """``runs`` shared between the providers, half each (the odd one to Cohere)."""
    together = runs // 2
    return {"cohere": runs - together, "together": together}


def is_active(provider: str, status: str) -> bool:
    """Whether the exporter polls a run of this status every cycle: its phase is not final
    (an unknown status counts as active, as the exporter treats it)."""
    return PROVIDER_PHASES[provider].get(status, "unknown") not in TERMINAL_PHASES


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    url: str
    ready_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Fleet:
    """Running simulators (provider → URL) and the children to start exporters with."""

    name: str
    children: Children
    runs: dict[str, int]
    sims: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())

    def active(self) -> dict[str, set[str]]:
        """The runs each provider's exporter polls every cycle, from the simulators' truth."""
        found: dict[str, set[str]] = {}
        for provider, url in self.sims.items():
            truth = get_json(f"{url}/simulator/truth")
            found[provider] = {
                run["id"] for run in truth["runs"] if is_active(provider, str(run["status"]))
            }
        return found

    def requests(self, provider: str) -> dict[str, object]:
        """The simulator's request counts since its last reset (``/simulator/requests``)."""
        answer: dict[str, object] = get_json(f"{self.sims[provider]}/simulator/requests")
        return answer

    def reset_requests(self) -> None:
        for url in self.sims.values():
            get_json(f"{url}/simulator/reset-requests", method="POST")

    def start_exporter(
        self,
        label: str,
        deadline: Deadline,
        *,
        providers: tuple[str, ...] | None = None,
        interval: float,
        discovery: float,
        concurrency: int = 32,
        **settings: str | int | float | bool,
    ) -> Exporter:
        """An exporter polling ``providers`` (default: every simulator of the fleet), returned
        once ``/readyz`` answers 200, i.e. after its first poll cycle."""
        chosen = providers or tuple(self.sims)
        apis = {provider: self.sims[provider] for provider in chosen}
        port = free_port()
        proc = self.children.start(
            f"exporter-{self.name}-{label}",
            exporter_argv(
                port,
                apis,
                interval=interval,
                discovery=discovery,
                concurrency=concurrency,
                max_models=max_models_for(max(self.runs[p] for p in chosen)),
                **settings,
            ),
        )
        url = f"http://127.0.0.1:{port}"
        runs = sum(self.runs[p] for p in chosen)
        ready = wait_ok(
            f"{url}/readyz",
            proc,
            deadline,
            limit=60 + READY_SECONDS_PER_RUN * runs,
            what=f"exporter {label} ({runs:,} runs)",
        )
        return Exporter(proc, url, ready)

    def stop(self, exporter: Exporter) -> None:
        self.children.stop(exporter.proc)


@contextmanager
def fleet(
    children: Children,
    name: str,
    runs: Mapping[str, int],
    deadline: Deadline,
    *,
    speed: float = STILL_SPEED,
    scenario: Path | None = None,
) -> Iterator[Fleet]:
    """Simulators of ``runs`` (provider → runs; a provider with 0 runs gets none) at ``speed``
    (a millionth of real time by default: the data does not change during a measurement), stopped
    with every exporter started from them when the block ends."""
    started = Fleet(name, children, {p: n for p, n in runs.items() if n > 0 or scenario})
    before = {id(proc) for _, proc in children.running()}
    try:
        for provider, count in started.runs.items():
            port = free_port()
            proc = children.start(
                f"simulator-{name}-{provider}",
                simulate_argv(port, count, speed, provider=provider, scenario=scenario),
            )
            started.procs[provider] = proc
            url = f"http://127.0.0.1:{port}"
            wait_ok(f"{url}/healthz", proc, deadline, limit=60, what=f"{provider} simulator")
            started.sims[provider] = url
        yield started
    finally:
        for _, proc in reversed(children.running()):
            if id(proc) not in before:
                children.stop(proc)
