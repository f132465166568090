"""The metrics log of one job: every entry ``/metrics`` will ever return, built and encoded once.

A long job logs tens of thousands of entries, and clients ask for them again and again with
``global_step_from = last + 1``; so each entry's JSON text is made once per job and kept, with
parallel arrays of steps and log times (both ascending in log order) that ``select`` bisects.
A request costs two bisections and a join, never a rebuild.

Entries are flat objects of numbers. A training entry has ``train/*`` keys; an evaluation entry
(``eval/*``) follows the training entry of its step and, depending on the job, carries
``eval/global_step`` or no step key at all. ``timestamp`` is integer nanoseconds, left out by
some jobs. A non-finite value is, depending on the job, the JSON string ``"NaN"`` (or
``"Infinity"``) or a key left out.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from dataclasses import dataclass
from typing import Any, Final

from exporter.simulator.scenario import noise, scripted_rng
from exporter.simulator.together.plan import JobPlan

_SPIKE_RATE: Final = 1 / 300
_STRINGS: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}


@dataclass(frozen=True)
class MetricsLog:
    """Every entry of one job in log order, with what ``select`` needs to find them."""

    entries: tuple[bytes, ...]
    steps: tuple[int, ...]
    times_ns: tuple[int, ...]
    train: tuple[int, ...]  # positions of training entries
    evals: tuple[int, ...]  # positions of evaluation entries
    nan_step: int | None

    def visible(self, now_ns: int) -> int:
        """How many entries have been logged by ``now_ns``."""
        return bisect.bisect_right(self.times_ns, now_ns)


@dataclass(frozen=True)
class MetricsQuery:
    """The metrics endpoint's filters; ``None`` means "not given"."""

    step_from: int | None = None
    step_to: int | None = None
    logged_from_ns: int | None = None
    logged_to_ns: int | None = None
    resolution: int | None = None


def select(log: MetricsLog, query: MetricsQuery, now_ns: int) -> list[int]:
    """Positions of the entries that answer ``query`` at ``now_ns``, in log order.

    Steps and log times both grow along the log, so each filter cuts one contiguous range.
    ``resolution`` keeps that many training entries, uniformly spread with the first and the
    last included (one: the newest), and every evaluation entry of the range.
    """
    lo, hi = 0, log.visible(now_ns)
    if query.step_from is not None:
        lo = max(lo, bisect.bisect_left(log.steps, query.step_from))
    if query.step_to is not None:
        hi = min(hi, bisect.bisect_right(log.steps, query.step_to))
    if query.logged_from_ns is not None:
        lo = max(lo, bisect.bisect_left(log.times_ns, query.logged_from_ns))
    if query.logged_to_ns is not None:
        hi = min(hi, bisect.bisect_right(log.times_ns, query.logged_to_ns))
    if lo >= hi:
        return []
    if query.resolution is None:
        return list(range(lo, hi))
    first = bisect.bisect_left(log.train, lo)
    count = bisect.bisect_left(log.train, hi) - first
    wanted = query.resolution
    if count <= wanted:
        picked = log.train[first : first + count]
    elif wanted == 1:
        picked = (log.train[first + count - 1],)
    else:
        picked = tuple(
            log.train[first + round(i * (count - 1) / (wanted - 1))] for i in range(wanted)
        )
    evals = log.evals[bisect.bisect_left(log.evals, lo) : bisect.bisect_left(log.evals, hi)]
    return sorted((*picked, *evals))


def body(log: MetricsLog, positions: list[int]) -> bytes:
    """The endpoint's answer for these entries: ``{"metrics": [...]}``."""
    return b'{"metrics":[' + b",".join(log.entries[p] for p in positions) + b"]}"


def decode(log: MetricsLog, positions: list[int]) -> list[dict[str, Any]]:
    """The entries as a client decodes them (for truth reports and tests)."""
    return [json.loads(log.entries[p]) for p in positions]


# --------------------------------------------------------------------------- building


def build(plan: JobPlan, seed: int, with_nan: bool) -> MetricsLog:
    """Every entry ``plan`` ever logs. With ``with_nan`` one step mid-run reports a NaN loss
    and gradient norm (training diverges there for a moment, then carries on)."""
    logged = [s for s in range(1, plan.last_step + 1) if plan.is_logged(s)]
    nan_step = None
    if with_nan and len(logged) >= 4:
        chooser = random.Random(f"together:{seed}:{plan.index}:nan")
        nan_step = logged[chooser.randrange(len(logged) // 4, 3 * len(logged) // 4)]
    values = _Scripted(plan) if plan.script is not None else _Random(plan, seed, nan_step)
    entries: list[bytes] = []
    steps: list[int] = []
    times: list[int] = []
    train: list[int] = []
    evals: list[int] = []
    for step in logged:
        train.append(len(entries))
        _add(entries, steps, times, step, plan.step_ns(step), _train(plan, step, values))
        if plan.is_eval(step):
            evals.append(len(entries))
            _add(entries, steps, times, step, plan.eval_ns(step), _eval(plan, step, values))
    return MetricsLog(
        tuple(entries), tuple(steps), tuple(times), tuple(train), tuple(evals), nan_step
    )


def _add(
    entries: list[bytes],
    steps: list[int],
    times: list[int],
    step: int,
    at_ns: int,
    fields: dict[str, Any],
) -> None:
    entries.append(json.dumps(fields, allow_nan=False, separators=(",", ":")).encode())
    steps.append(step)
    times.append(at_ns)


def _put(plan: JobPlan, fields: dict[str, Any], key: str, value: float) -> None:
    """Set a value; a non-finite one in the job's form: a JSON string or no key at all."""
    if math.isfinite(value):
        fields[key] = value
    elif plan.nan_form == "string":
        fields[key] = "NaN" if math.isnan(value) else _STRINGS[value]


def _train(plan: JobPlan, step: int, values: _Values) -> dict[str, Any]:
    loss, grad_norm, extras = values.train(step)
    fields: dict[str, Any] = {}
    _put(plan, fields, "train/loss", loss)
    for name, value in extras.items():
        _put(plan, fields, name, value)
    fields["train/learning_rate"] = _learning_rate(plan, step)
    _put(plan, fields, "train/grad_norm", grad_norm)
    fields["train/epoch"] = round(step / plan.steps_per_epoch, 4)
    fields["train/global_step"] = step
    if plan.timestamps:
        fields["timestamp"] = plan.step_ns(step)
    return fields


def _eval(plan: JobPlan, step: int, values: _Values) -> dict[str, Any]:
    loss = values.eval(step)
    fields: dict[str, Any] = {}
    _put(plan, fields, "eval/loss", loss)
    if plan.perplexity:
        _put(plan, fields, "eval/perplexity", math.exp(min(loss, 700.0)))
    if plan.eval_form == "global_step":
        fields["eval/global_step"] = step
    if plan.timestamps:
        fields["timestamp"] = plan.eval_ns(step)
    return fields


def _learning_rate(plan: JobPlan, step: int) -> float:
    """Linear warmup to the job's rate, then linear or cosine decay to its floor."""
    peak = float(plan.settings["learning_rate"])
    curve = plan.curve
    if step <= curve.warmup_steps:
        return peak * step / curve.warmup_steps
    progress = (step - curve.warmup_steps) / max(1, plan.total_steps - curve.warmup_steps)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if curve.cosine else 1 - progress
    return peak * (curve.min_lr_ratio + (1 - curve.min_lr_ratio) * shape)


def _loss_curve(plan: JobPlan, step: int) -> float:
    curve = plan.curve
    decay = math.exp(-curve.rate * step / plan.total_steps)
    return curve.loss_end + (curve.loss_start - curve.loss_end) * decay


def _grad_curve(plan: JobPlan, step: int) -> float:
    return 0.3 + 1.7 * math.exp(-4 * step / plan.total_steps)


class _Values:
    """The numbers of a job's entries, step by step (called in step order)."""

    def train(self, step: int) -> tuple[float, float, dict[str, float]]:
        raise NotImplementedError

    def eval(self, step: int) -> float:
        raise NotImplementedError


class _Random(_Values):
    """Noisy curves with occasional deterministic spikes, and maybe one NaN step."""

    def __init__(self, plan: JobPlan, seed: int, nan_step: int | None) -> None:
        self._plan = plan
        self._nan_step = nan_step
        self._rng = random.Random(f"together:{seed}:{plan.index}:metrics")

    def train(self, step: int) -> tuple[float, float, dict[str, float]]:
        rng = self._rng
        loss = _loss_curve(self._plan, step) * math.exp(rng.gauss(0.0, 0.03))
        grad_norm = _grad_curve(self._plan, step) * math.exp(rng.gauss(0.0, 0.15))
        if step == self._nan_step:
            return math.nan, math.nan, {}
        if rng.random() < _SPIKE_RATE:
            loss, grad_norm = loss * rng.uniform(2.5, 4.0), grad_norm * rng.uniform(5.0, 15.0)
        return loss, grad_norm, {}

    def eval(self, step: int) -> float:
        gap = self._plan.curve.eval_gap
        return _loss_curve(self._plan, step) * gap * math.exp(self._rng.gauss(0.0, 0.02))


class _Scripted(_Values):
    """Mild noise only, plus what the scenario scripted.

    The noise streams do not depend on spikes or non-finite values, so a spiked value is
    exactly ``factor`` times what the same job without the spike reports.
    """

    def __init__(self, plan: JobPlan) -> None:
        assert plan.script is not None
        self._plan = plan
        self._script = plan.script
        self._loss = scripted_rng(plan.script, "together:loss")
        self._grad = scripted_rng(plan.script, "together:grad")
        self._eval = scripted_rng(plan.script, "together:eval")
        self._extras = {
            name: scripted_rng(plan.script, f"together:metric:{name}")
            for name in plan.script.extra_metrics
        }

    def train(self, step: int) -> tuple[float, float, dict[str, float]]:
        curve = _loss_curve(self._plan, step)
        factor = self._script.spike_factor(step)
        loss = curve * noise(self._loss) * factor
        grad_norm = _grad_curve(self._plan, step) * noise(self._grad)
        extras = {name: curve * noise(stream) * factor for name, stream in self._extras.items()}
        non_finite = self._script.non_finite_value(step)
        return (loss if non_finite is None else non_finite), grad_norm, extras

    def eval(self, step: int) -> float:
        curve = _loss_curve(self._plan, step) * self._plan.curve.eval_gap
        return curve * noise(self._eval) * self._script.spike_factor(step)
