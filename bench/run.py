"""Benchmark of finetune-exporter against baselines, on loopback, in one run.

    python bench/run.py [--quick] [--sizes 100,2000,10000] [--out bench/results.md]

Starts the simulator and the exporter as separate processes, drives them with ``wrk`` and
plain HTTP, prints one table and appends it to ``--out`` with the date, the command line and
the machine. See ``bench/README.md`` for what each number means and how the baselines are
built. Every child process is stopped in a ``finally`` block and the whole run has a deadline.

This module is the command line only; each measurement lives in its own module next to it
(``scrape``, ``poll``, ``cpu``), on top of ``harness`` and ``wrk``, and ``report`` builds the
table. They import each other as top-level modules, since ``bench/`` runs as a script directory.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from cpu import CpuProbe
from harness import BENCH, Children, Deadline, DeadlineExceeded, log
from plan import make_plan
from poll import bench_poll
from report import (
    Row,
    append_results,
    cpu_row,
    exporter_revision,
    memory_rows,
    poll_rows,
    render_table,
    report,
    scrape_rows,
)
from scrape import bench_scrape


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark the exporter against baselines.")
    parser.add_argument("--quick", action="store_true", help="short run (about 4 minutes)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default=None, help="model counts (default 100,2000,10000)"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds before the run is abandoned"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
