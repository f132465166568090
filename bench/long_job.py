"""Measurement 10: a finished Together AI job of 50,000 logged steps, first polled and backfilled.

A simulator serves ``long-job.yaml`` (one job, 50,000 steps, finished long before its clock's
t = 0); an exporter polls it once (``/readyz``) and ``backfill`` writes its history. The same is
done with ``short-job.yaml`` (the same job with 100 steps), and what is reported is the
difference in peak RSS: what the 49,900 more steps cost.

Whether any step was lost: the exporter's first read samples the curve (``resolution``), so for
it "nothing lost" is the newest step and the finished phase being right
(``finetune_steps_processed_total`` is shown too: it counts only the steps judged after the
first read, so a job met finished shows 0); a backfill must write every step, so the distinct
step numbers of ``finetune_step_number`` in its file must be every step the simulator logged.
The exporter's peak is its ``VmHWM`` after the first cycle, the backfill's its ``ru_maxrss``
as ``maxrss.py`` (a small launcher, so the harness's own size does not count) reads it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commands import METRICS_PATH, PYTHON, backfill_argv
from fleet import Fleet, fleet
from harness import BENCH, Children, Deadline, get_json, http, log, proc_status_kb, wait_exit
from plan import Plan
from table import Row, exporter_row, fmt_mb, verdict

from exporter import contract

LONG_JOB = BENCH / "long-job.yaml"
#: The launcher that reports a command's own peak RSS.
MAXRSS = BENCH / "maxrss.py"
SHORT_JOB = BENCH / "short-job.yaml"
#: The target: what 49,900 more steps may add to the peak RSS, exporter and backfill alike.
MAX_GROWTH_KB = 30 * 1024
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class JobRead:
    """One exporter's first poll and one backfill of the job of a scenario."""

    steps: int  # training steps the simulator logged
    newest: int  # the simulator's newest step
    status: str
    exporter_hwm_kb: int
    exporter_newest: float | None
    exporter_processed: float | None
    exporter_phase: str | None
    backfill_kb: int
    backfill_code: int
    backfill_s: float
    backfilled_steps: int


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in an exposition: its labels and value."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels, _, rest = line[len(name) + 1 :].rpartition("} ")
        found.append((dict(_LABEL.findall(labels)), float(rest.split()[0])))
    return found


def step_numbers(openmetrics: str) -> set[int]:
    """The distinct step numbers of ``finetune_step_number`` in a backfilled file."""
    return {int(value) for _, value in samples(openmetrics, contract.STEP_NUMBER.sample)}


def truth_of(f: Fleet) -> dict[str, Any]:
    runs: list[dict[str, Any]] = get_json(f"{f.sims['together']}/simulator/truth")["runs"]
    if len(runs) != 1:
        raise RuntimeError(f"the scenario should hold one job, the simulator has {len(runs)}")
    return runs[0]


def read_job(children: Children, scenario: Path, deadline: Deadline) -> JobRead:
    name = scenario.stem
    with fleet(children, name, {"together": 1}, deadline, scenario=scenario) as f:
        truth = truth_of(f)
        exporter = f.start_exporter(
            "first-poll", deadline, providers=("together",), interval=3600, discovery=3600
        )
        hwm = proc_status_kb(exporter.pid, "VmHWM")
        text = http(f"{exporter.url}{METRICS_PATH}").body.decode()
        f.stop(exporter)
        newest = samples(text, contract.STEP_NUMBER.sample)
        processed = samples(text, contract.STEPS_PROCESSED.sample)
        phases = [
            labels["phase"]
            for labels, value in samples(text, contract.RUN_PHASE.sample)
            if value == 1.0
        ]
        out, peak = children.logdir / f"{name}.om", children.logdir / f"{name}.maxrss"
        command = backfill_argv(out, {"together": f.sims["together"]})
        started = time.monotonic()
        proc = children.start(
            f"backfill-{name}", [PYTHON, "-S", str(MAXRSS), str(peak), "--", *command]
        )
        code = wait_exit(proc, deadline, limit=600, what=f"backfill of {name}")
        seconds = time.monotonic() - started
        maxrss = int(peak.read_text()) if peak.exists() else 0
        written = step_numbers(out.read_text()) if code == 0 and out.exists() else set()
    newest_step = truth.get("newest_step") or {}
    result = JobRead(
        steps=int(truth["step_count"]),
        newest=int(newest_step.get("step_number", -1)),
        status=str(truth["status"]),
        exporter_hwm_kb=hwm,
        exporter_newest=newest[0][1] if newest else None,
        exporter_processed=processed[0][1] if processed else None,
        exporter_phase=phases[0] if phases else None,
        backfill_kb=maxrss,
        backfill_code=code,
        backfill_s=seconds,
        backfilled_steps=len(written),
    )
    log(
        f"{name}: {result.steps:,} steps; exporter peak {hwm / 1024:.1f} MB, newest "
        f"{result.exporter_newest}, processed {result.exporter_processed}; backfill peak "
        f"{maxrss / 1024:.1f} MB, {result.backfilled_steps:,} steps in {seconds:.1f} s"
    )
    return result


@dataclass(frozen=True)
class LongJob:
    long: JobRead
    short: JobRead


def bench_long_job(children: Children, plan: Plan, deadline: Deadline) -> LongJob:
    return LongJob(read_job(children, LONG_JOB, deadline), read_job(children, SHORT_JOB, deadline))


def long_job_rows(result: LongJob) -> Iterator[Row]:
    long, short = result.long, result.short
    grown = long.exporter_hwm_kb - short.exporter_hwm_kb
    newest_ok = long.exporter_newest == long.newest
    phase_ok = long.exporter_phase == "succeeded"
    yield exporter_row(
        "10",
        f"first poll of a finished Together job of {long.steps:,} steps: peak RSS (VmHWM) after "
        f"the first cycle, minus that for {short.steps:,} steps; newest step, phase, steps "
        "processed",
        f"{grown / 1024:+.1f} MB ({fmt_mb(long.exporter_hwm_kb)} against "
        f"{fmt_mb(short.exporter_hwm_kb)}); newest {_number(long.exporter_newest)} of "
        f"{long.newest:,}, phase {long.exporter_phase}, {_number(long.exporter_processed)} "
        "processed",
        f"{grown / MAX_GROWTH_KB:.2f}x target",
        f"≤ +{MAX_GROWTH_KB // 1024} MB, newest step and phase right",
        verdict(grown <= MAX_GROWTH_KB and newest_ok and phase_ok),
    )
    grown = long.backfill_kb - short.backfill_kb
    every = long.backfilled_steps == long.steps and long.backfill_code == 0
    yield exporter_row(
        "10",
        f"backfill of the same job: peak RSS (ru_maxrss) minus a backfill of {short.steps:,} "
        "steps; distinct steps written",
        f"{grown / 1024:+.1f} MB ({fmt_mb(long.backfill_kb)} against "
        f"{fmt_mb(short.backfill_kb)}); {long.backfilled_steps:,} of {long.steps:,} steps in "
        f"{long.backfill_s:.1f} s"
        + (f", exit code {long.backfill_code}" if long.backfill_code else ""),
        f"{grown / MAX_GROWTH_KB:.2f}x target",
        f"≤ +{MAX_GROWTH_KB // 1024} MB, every step",
        verdict(grown <= MAX_GROWTH_KB and every),
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"
