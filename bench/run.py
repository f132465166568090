"""Benchmark of finetune-exporter against baselines and targets, on loopback, in one run.

    python bench/run.py [--quick] [--only NAME[,NAME]] [--sizes 100,1000,10000]
                        [--out bench/results.md] [--deadline SECONDS]

Starts simulators (Cohere and Together AI) and exporters as separate processes, drives them with
``wrk`` and plain HTTP, prints one table (and the scaling table) and appends them to ``--out``
with the date, the command line, the machine and the measurements that ran. See
``bench/README.md`` for what each number means. Every child process is stopped in a ``finally``
block and the whole run has a deadline.

This module is the command line only; each measurement lives in its own module next to it, on
top of ``harness``, ``commands``, ``fleet`` and ``wrk``, and ``report`` builds the entry. They
import each other as top-level modules, since ``bench/`` runs as a script directory; this
checkout's ``exporter`` comes first on the path, whatever copy the environment has installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's exporter

import argparse
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from cpu import CpuProbe, CpuResult
from first_scrape import first_scrape_rows
from fleet import fleet, split_runs
from harness import BENCH, ROOT, Children, Deadline, DeadlineExceeded, log
from long_job import LongJob, bench_long_job, long_job_rows
from per_request import per_request_rows
from plan import MEASUREMENTS, Plan, make_plan, parse_only
from poll import PollRun, bench_poll
from report import (
    append_results,
    cpu_row,
    exporter_revision,
    memory_rows,
    poll_rows,
    report,
    scrape_rows,
)
from scaling import CycleResults, bench_cycles, cycle_sizes, scaling_rows, scaling_table
from scrape import ScrapeSize, bench_scrape
from status_page import StatusPage, bench_status_page, status_page_rows
from table import Row, render_table

import exporter


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if not sizes or any(size < 2 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be integers of 2 or more, e.g. 100,1000")
    return sizes


def only_names(text: str) -> tuple[str, ...]:
    try:
        return parse_only(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def build_parser() -> argparse.ArgumentParser:
    names = "; ".join(f"{name}: {what}" for name, what in MEASUREMENTS.items())
    parser = argparse.ArgumentParser(description="Benchmark the exporter against baselines.")
    parser.add_argument("--quick", action="store_true", help="short run (smaller and shorter)")
    parser.add_argument(
        "--only", type=only_names, default=None, help=f"comma-separated measurements ({names})"
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="runs of the /metrics cells (100,1000,10000)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds before the run is abandoned"
    )
    return parser


@dataclass
class Results:
    scrapes: list[ScrapeSize] = field(default_factory=list)
    polls: list[PollRun] = field(default_factory=list)
    cpu: CpuResult | None = None
    cycles: CycleResults = field(default_factory=CycleResults)
    status: StatusPage | None = None
    long_job: LongJob | None = None


def measure(children: Children, plan: Plan, deadline: Deadline, out: Results) -> None:
    """Every measurement of the plan, one size's simulators at a time."""
    scrape_sizes = set(plan.sizes) if plan.runs("scrape") else set()
    cycling = cycle_sizes(plan)
    for runs in sorted(scrape_sizes | cycling):
        with fleet(children, str(runs), split_runs(runs), deadline) as f:
            if runs in scrape_sizes:
                out.scrapes.append(bench_scrape(f, plan, deadline))
            if runs in cycling:
                bench_cycles(f, plan, deadline, out.cycles)
    if plan.runs("poll"):
        out.polls = [bench_poll(children, plan, c, deadline) for c in plan.concurrencies]
    if plan.runs("status-page"):
        out.status = bench_status_page(children, plan, deadline)
    if plan.runs("long-job"):
        out.long_job = bench_long_job(children, plan, deadline)


def rows_of(plan: Plan, results: Results) -> list[Row]:
    rows: list[Row] = []
    for size in results.scrapes:
        rows.extend(scrape_rows(size))
    for run in results.polls:
        rows.extend(poll_rows(run))
    rows.extend(memory_rows(results.scrapes))
    if results.cpu is not None:
        rows.append(cpu_row(plan, results.cpu))
    rows.extend(per_request_rows(results.cycles.per_request, plan))
    if results.cycles.sizes:
        rows.extend(scaling_rows(results.cycles.sizes, plan))
    if results.cycles.first_scrapes is not None:
        rows.extend(first_scrape_rows(results.cycles.first_scrapes, plan))
    if results.status is not None:
        rows.extend(status_page_rows(results.status))
    if results.long_job is not None:
        rows.extend(long_job_rows(results.long_job))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = make_plan(args.quick, args.sizes, args.deadline, args.only)
    if Path(exporter.__file__).resolve().parents[1] != ROOT:
        print(f"error: exporter imported from {exporter.__file__}, not {ROOT}", file=sys.stderr)
        return 2
    if plan.runs("scrape") and shutil.which("wrk") is None:
        print("error: wrk not found; install it (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    deadline = Deadline(plan.deadline)
    started = datetime.now(UTC)
    revision = exporter_revision()  # before the run: the code that is measured
    clock = time.monotonic()
    logdir = Path(tempfile.mkdtemp(prefix="finetune-exporter-bench-"))
    children = Children(logdir)
    results = Results()
    try:
        with signals_exit():
            log(f"child logs in {logdir}; measurements: {', '.join(plan.only)}")
            probe = CpuProbe(children, plan) if plan.runs("cpu") else None
            try:
                if probe is not None:
                    probe.start(deadline)
                    log(f"CPU window of {plan.cpu_window:.0f} s started in the background")
                measure(children, plan, deadline, results)
                if probe is not None:
                    results.cpu = probe.finish(deadline)
            finally:
                if probe is not None:
                    probe.cancel()
    except (DeadlineExceeded, RuntimeError, OSError) as exc:  # a child gone: say which, stop all
        print(f"error: {exc}; child logs in {logdir}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()
    extra = []
    if results.cycles.sizes:
        extra.append(("Scaling", scaling_table(results.cycles.sizes)))
    table = render_table(rows_of(plan, results))
    text = report(plan, table, started, time.monotonic() - clock, revision, extra)
    print(text)
    append_results(args.out, text)
    shutil.rmtree(logdir, ignore_errors=True)
    log(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
