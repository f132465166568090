"""Watching an exporter's poll cycles from outside: when each provider's cycle ends, what it
asked of the simulator and what it cost the exporter.

Each provider's poller publishes a new ``finetune_poll_duration_seconds{provider=...}`` when a
cycle ends, and also every few seconds of a long one (progress, with the duration so far). So
every new value is a *publication*, and its implied start (seen minus the value) names its
cycle: publications of one cycle share the start, those of the next start an interval later.
A cycle's last publication is its end; it is known to be the last once a publication of a
later cycle has been seen.

The watch scrapes ``/metrics`` with gzip, which the exporter sends from its cache, and inflates
only the first few kilobytes, where the provider families come first: cheap for both sides.
At each publication the harness reads the provider's simulator counters (cumulative, never
reset while watching, so no request is lost between a read and a reset) and the exporter's
CPU time; a cycle's requests are the difference between its end and the previous end.
"""

from __future__ import annotations

import gzip
import itertools
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet import Exporter, Fleet
from harness import Deadline, cpu_seconds, http, log

from exporter import contract
from exporter.simulator.cohere.app import DIALECT as COHERE_DIALECT
from exporter.simulator.together.app import DIALECT as TOGETHER_DIALECT

#: The request kind of each simulator that reads one run's steps: what a cycle must ask once
#: per active run.
METRICS_KIND: dict[str, str] = {
    d.provider: d.metrics_kind for d in (COHERE_DIALECT, TOGETHER_DIALECT)
}
POLL_DURATION_LINE = re.compile(
    rb"^"
    + re.escape(contract.POLL_DURATION.sample.encode())
    + rb"\{"
    + re.escape(contract.PROVIDER_LABEL.encode())
    + rb'="([^"]*)"\} (\S+)$',
    re.M,
)
#: Compressed bytes inflated to find the poll durations (the provider families come first).
PREFIX_BYTES = 8192
#: Seconds between two looks at the poll durations.
WATCH_PERIOD = 0.5


def parse_poll_durations(text: bytes) -> dict[str, float]:
    """Each provider's ``finetune_poll_duration_seconds`` in an exposition (or its start)."""
    return {m.group(1).decode(): float(m.group(2)) for m in POLL_DURATION_LINE.finditer(text)}


def inflate_prefix(body: bytes, limit: int = PREFIX_BYTES) -> bytes:
    """The text at the start of a gzip body: only the first ``limit`` compressed bytes. The
    exporter sends gzip members back to back (RFC 1952 allows it), so each member found in the
    prefix is inflated in turn, the last one as far as the prefix reaches."""
    data, text = body[:limit], []
    while data:
        member = zlib.decompressobj(31)
        text.append(member.decompress(data))
        if not member.eof:
            break
        data = member.unused_data
    return b"".join(text)


def poll_durations(exporter_url: str, metrics_path: str) -> dict[str, float]:
    """The exporter's current poll durations, read the cheap way."""
    body = http(
        f"{exporter_url}{metrics_path}", headers={"Accept-Encoding": "gzip"}, decode_gzip=False
    ).body
    found = parse_poll_durations(inflate_prefix(body))
    if not found:  # families moved further in: read it all
        found = parse_poll_durations(gzip.decompress(body))
    return found


@dataclass(frozen=True)
class Publication:
    """One new poll duration of one provider, as seen from outside."""

    provider: str
    seen: float  # monotonic, when the new value was seen
    duration: float
    cpu_s: float  # the exporter's utime + stime when it was seen
    counts: Mapping[str, Any]  # the simulator's cumulative request counts, read just after
    read_at: float  # monotonic, when those counts had been read

    @property
    def start(self) -> float:
        return self.seen - self.duration


@dataclass(frozen=True)
class Cycle:
    """One provider's complete cycle: its publications, the last one its end."""

    provider: str
    publications: tuple[Publication, ...]
    next_start: float  # implied start of the cycle after it

    @property
    def end(self) -> Publication:
        return self.publications[-1]

    @property
    def duration(self) -> float:
        return self.end.duration

    @property
    def overlapped(self) -> bool:
        """The counters were read after the next cycle had started: some of its requests may be
        counted here."""
        return self.end.read_at >= self.next_start


def group_cycles(publications: Sequence[Publication], tolerance: float) -> list[Cycle]:
    """Complete cycles per provider, in order: publications whose implied starts lie within
    ``tolerance`` of their cycle's first are one cycle; the last cycle of each provider is left
    out (nothing says it has ended)."""
    cycles: list[Cycle] = []
    for provider in sorted({p.provider for p in publications}):
        groups: list[list[Publication]] = []
        for pub in (p for p in publications if p.provider == provider):
            if groups and abs(pub.start - groups[-1][0].start) <= tolerance:
                groups[-1].append(pub)
            else:
                groups.append([pub])
        for this, after in itertools.pairwise(groups):
            cycles.append(Cycle(provider, tuple(this), after[0].start))
    return cycles


def delta(after: Mapping[str, Any], before: Mapping[str, Any], kind: str) -> int:
    return int(after.get(kind, 0)) - int(before.get(kind, 0))


def runs_delta(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, int]:
    """Metrics requests per run between two readings of ``steps_by_run``."""
    now: Mapping[str, int] = after.get("steps_by_run", {})
    then: Mapping[str, int] = before.get("steps_by_run", {})
    changed = {run: count - then.get(run, 0) for run, count in now.items()}
    return {run: n for run, n in changed.items() if n}


def previous_cycle(cycle: Cycle, cycles: Sequence[Cycle]) -> Cycle | None:
    """The provider's cycle before ``cycle``, if one was seen."""
    earlier = [c for c in cycles if c.provider == cycle.provider and c.end.seen < cycle.end.seen]
    return earlier[-1] if earlier else None


def previous_counts(
    cycle: Cycle, cycles: Sequence[Cycle], baseline: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any]:
    """The counters at the end of the provider's cycle before ``cycle``, or, for its first
    cycle, as they were when watching began (``baseline``, by provider)."""
    earlier = previous_cycle(cycle, cycles)
    return earlier.end.counts if earlier is not None else baseline[cycle.provider]


def countable(cycle: Cycle, cycles: Sequence[Cycle]) -> bool:
    """Whether the counters around ``cycle`` hold its requests and no other cycle's: read at
    its end before the next cycle started, and at the end of the one before before it started
    (a late read there counts some of this cycle's requests in the one before)."""
    earlier = previous_cycle(cycle, cycles)
    return not cycle.overlapped and (earlier is None or not earlier.overlapped)


@dataclass
class Watch:
    """Every publication seen on one exporter, with what was read at each."""

    fleet: Fleet
    exporter: Exporter
    metrics_path: str
    providers: tuple[str, ...]
    publications: list[Publication] = field(default_factory=list)
    baseline: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline_cpu: float = 0.0
    last: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        """Take the current values as already seen, and the counters and CPU as they are."""
        self.last = poll_durations(self.exporter.url, self.metrics_path)
        self.baseline = {p: self.fleet.requests(p) for p in self.providers}
        self.baseline_cpu = cpu_seconds(self.exporter.pid)

    def look(self) -> list[Publication]:
        """One look: the publications since the last one."""
        current = poll_durations(self.exporter.url, self.metrics_path)
        seen = time.monotonic()
        new: list[Publication] = []
        for provider in self.providers:
            value = current.get(provider)
            if value is None or value == self.last.get(provider):
                continue
            self.last[provider] = value
            cpu = cpu_seconds(self.exporter.pid)
            counts = self.fleet.requests(provider)
            new.append(Publication(provider, seen, value, cpu, counts, time.monotonic()))
        self.publications.extend(new)
        return new

    def cycles(self, tolerance: float) -> list[Cycle]:
        return group_cycles(self.publications, tolerance)

    def run_until(
        self,
        enough: int,
        deadline: Deadline,
        *,
        limit: float,
        tolerance: float,
        what: str,
    ) -> list[Cycle]:
        """Watch until every provider has ``enough`` complete cycles; fails after ``limit`` s or
        when the exporter exits."""
        give_up = time.monotonic() + limit
        while True:
            cycles = self.cycles(tolerance)
            if all(sum(c.provider == p for c in cycles) >= enough for p in self.providers):
                return cycles
            if self.exporter.proc.poll() is not None:
                raise RuntimeError(f"exporter of {what} exited (see its log)")
            if time.monotonic() > give_up:
                raise RuntimeError(f"{enough} poll cycles of {what} not seen in {limit:.0f} s")
            deadline.check(what=what)
            time.sleep(WATCH_PERIOD)
            for pub in self.look():
                log(f"  {what}: {pub.provider} published {pub.duration:.3f} s")
