"""Everything about one simulated Cohere model that does not depend on the clock.

A plan (ids, settings, timings, curve shape) and the model's evaluations are pure functions of
``(seed, index)`` (or of a scripted model), so ``CohereWorld`` can build them lazily and cache
them; the draw order of each random stream is part of the contract (ids are the first draw).
"""

from __future__ import annotations

import math
import random
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from exporter.simulator.scenario import ScriptedModel, noise, scripted_rng

_FAILURE_RATE: Final = 1 / 8
_SPIKE_RATE: Final = 1 / 25
_MIN_STEPS: Final = 80
_MAX_STEPS: Final = 400


@dataclass(frozen=True)
class SimStep:
    """One evaluation: the metrics Cohere reports for ``step_number`` at ``created_at``."""

    step_number: int
    created_at: float
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class _BaseModel:
    name: str
    version: str
    base_type: str
    strategy: str
    kinds: tuple[str, ...]
    weight: int


# "STRATEGY_UNSPECIFIED" is the proto3 zero value, so newer chat models show no strategy at all.
_BASE_MODELS: Final = (
    _BaseModel(
        "command-r-08-2024", "", "BASE_TYPE_CHAT", "STRATEGY_UNSPECIFIED", ("chat", "assistant"), 5
    ),
    _BaseModel("medium", "14.2.0", "BASE_TYPE_CHAT", "STRATEGY_TFEW", ("chat", "copilot"), 2),
    _BaseModel("english", "2.0.0", "BASE_TYPE_RERANK", "STRATEGY_VANILLA", ("rerank", "search"), 2),
    _BaseModel(
        "english", "", "BASE_TYPE_CLASSIFICATION", "STRATEGY_VANILLA", ("intent", "triage"), 2
    ),
    _BaseModel("command", "", "BASE_TYPE_GENERATIVE", "STRATEGY_TFEW", ("summarizer",), 1),
)
#: Business areas that name simulated runs (shared with the Together simulator).
DOMAINS: Final = (
    "support",
    "billing",
    "legal",
    "claims",
    "onboarding",
    "retail",
    "docs",
    "hr",
    "sales",
    "medical",
    "travel",
    "security",
)
_LORA_MODULES: Final = (
    "LORA_TARGET_MODULES_QV",
    "LORA_TARGET_MODULES_QKVO",
    "LORA_TARGET_MODULES_QKVO_FFN",
)


@dataclass(frozen=True)
class Plan:
    """Everything about one model that does not depend on the clock."""

    index: int
    id: str
    name: str
    creator_id: str
    settings: Mapping[str, Any]
    created_at: float
    queued_event_at: float
    training_start: float
    step_seconds: float
    total_steps: int
    eval_every: int
    deploy_seconds: float
    fail_step: int | None
    curve: tuple[float, float, float, float, float]  # ce_start, ce_end, acc_start, acc_end, rate
    script: ScriptedModel | None = None

    @property
    def training_end(self) -> float:
        """After the last evaluation: random models' steps have a jitter below one second,
        scripted ones none, so a scripted model trains for exactly ``total_steps`` steps."""
        slack = 0.0 if self.script is not None else 1.0
        return self.training_start + self.total_steps * self.step_seconds + slack

    @property
    def failed_at(self) -> float | None:
        if self.fail_step is None:
            return None
        return self.training_start + self.fail_step * self.step_seconds

    @property
    def ready_at(self) -> float:
        return self.training_end + self.deploy_seconds


def float32(value: float) -> float:
    """Round through float32: the real API's metric values are float32 widened to double."""
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded


def uuid4_from(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng`` (one 128-bit draw)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def derive_id(seed: int, index: int) -> str:
    """The id of model ``index``: the first draw of its stream, for random and scripted alike."""
    return uuid4_from(random.Random(f"{seed}:{index}"))


def _curve(rng: random.Random) -> tuple[float, float, float, float, float]:
    return (
        rng.uniform(3.7, 4.4),
        rng.uniform(0.25, 0.45),
        rng.uniform(0.40, 0.50),
        rng.uniform(0.84, 0.93),
        rng.uniform(4.0, 7.0),
    )


def random_plan(
    seed: int, index: int, creators: tuple[str, ...], start: float, added_at: float | None
) -> Plan:
    """A random model; ``added_at`` is when ``add_model`` created it (``None``: at start-up)."""
    rng = random.Random(f"{seed}:{index}")
    model_id = uuid4_from(rng)  # first draw: the id other code may derive independently
    base = rng.choices(_BASE_MODELS, weights=[b.weight for b in _BASE_MODELS])[0]
    domain = rng.choice(DOMAINS)
    name = f"{domain}-{rng.choice(base.kinds)}-v{rng.randint(1, 9)}"
    settings = _settings(rng, base, domain)
    creator_id = rng.choice(creators)
    queue_s = rng.uniform(5.0, 30.0)
    eval_every = rng.choice((8, 16))
    total_steps = eval_every * rng.randint(-(-_MIN_STEPS // eval_every), _MAX_STEPS // eval_every)
    step_s = rng.uniform(1.8, 2.2)
    deploy_s = rng.uniform(20.0, 60.0)
    fails = rng.random() < _FAILURE_RATE
    fail_step = rng.randint(2 * eval_every + 1, total_steps - 1)
    curve = _curve(rng)
    queued_delay = rng.uniform(0.3, 2.5)
    duration = queue_s + total_steps * step_s + 1.0 + deploy_s
    if added_at is not None:
        created_at = added_at
    else:
        age = _age_at_start(index, rng, queue_s, eval_every, step_s, total_steps, duration)
        created_at = start - age
        if index < 3:  # the showcase models: training now, finished, mid-run
            fails = False
    return Plan(
        index=index,
        id=model_id,
        name=name,
        creator_id=creator_id,
        settings=settings,
        created_at=created_at,
        queued_event_at=created_at + queued_delay,
        training_start=created_at + queue_s,
        step_seconds=step_s,
        total_steps=total_steps,
        eval_every=eval_every,
        deploy_seconds=deploy_s,
        fail_step=fail_step if fails else None,
        curve=curve,
    )


def scripted_plan(
    seed: int, index: int, creators: tuple[str, ...], start: float, script: ScriptedModel
) -> Plan:
    """A scenario model: the id, owner and settings as for a random model, the rest scripted."""
    rng = random.Random(f"{seed}:{index}")
    model_id = uuid4_from(rng)  # the same derivation as random models
    base = rng.choices(_BASE_MODELS, weights=[b.weight for b in _BASE_MODELS])[0]
    domain = rng.choice(DOMAINS)
    settings = _settings(rng, base, domain)
    creator_id = rng.choice(creators)
    created_at = start + script.starts_at
    return Plan(
        index=index,
        id=model_id,
        name=script.name,
        creator_id=creator_id,
        settings=settings,
        created_at=created_at,
        queued_event_at=created_at,
        training_start=created_at + script.queue_seconds,
        step_seconds=script.step_seconds,
        total_steps=script.total_steps,
        eval_every=script.eval_every,
        deploy_seconds=script.deploy_seconds,
        fail_step=script.fail_at_step,
        curve=_curve(scripted_rng(script, "curve")),
        script=script,
    )


def _age_at_start(
    index: int,
    rng: random.Random,
    queue_s: float,
    eval_every: int,
    step_s: float,
    total_steps: int,
    duration: float,
) -> float:
    """How long before clock start a model was created: staggers the account.

    Model 0 is a few evaluations into training (so a demo has data at once), model 1 has
    finished, model 2 is mid-run, models 3 and 4 are queued (4 starts within seconds);
    the rest are spread over one and a half run lengths.
    """
    if index == 0:
        return queue_s + (rng.randint(3, 4) * eval_every + eval_every / 2) * step_s
    if index == 1:
        return duration + rng.uniform(600.0, 5400.0)
    if index == 2:
        return queue_s + total_steps * step_s * rng.uniform(0.3, 0.8)
    if index == 3:
        return rng.uniform(0.0, queue_s / 2)
    if index == 4:
        return queue_s - rng.uniform(1.0, 4.0)
    return rng.uniform(0.0, 1.5 * duration)


def _settings(rng: random.Random, base: _BaseModel, domain: str) -> dict[str, Any]:
    suffix = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=6))
    hyper: dict[str, Any] = {}
    if base.base_type in ("BASE_TYPE_CHAT", "BASE_TYPE_GENERATIVE"):
        hyper = {
            "early_stopping_patience": 6,
            "early_stopping_threshold": 0.01,
            "train_batch_size": rng.choice((8, 16)),
            "train_epochs": rng.randint(1, 3),
            "learning_rate": 0.01,
        }
    if base.name.startswith("command-r"):
        hyper |= {
            "learning_rate": rng.choice((0.0001, 0.0002, 0.0005)),
            "lora_alpha": rng.choice((16, 32)),
            "lora_rank": rng.choice((8, 16, 32)),
            "lora_target_modules": rng.choice(_LORA_MODULES),
        }
    return {
        "base_model": {
            "name": base.name,
            "version": base.version,
            "base_type": base.base_type,
            "strategy": base.strategy,
        },
        "dataset_id": f"{domain}-dataset-{suffix}",
        "hyperparameters": hyper,
        "multi_label": base.base_type == "BASE_TYPE_CLASSIFICATION" and rng.random() < 0.5,
    }


def random_steps(plan: Plan, seed: int, with_nan: bool) -> tuple[SimStep, ...]:
    """Every evaluation a random model will ever report (future ones included), ascending.

    With ``with_nan`` one evaluation mid-run (never step 0 nor the last) reports a NaN
    ``cross_entropy``, and training carries on after it.
    """
    rng = random.Random(f"{seed}:{plan.index}:steps")
    last = plan.total_steps if plan.fail_step is None else plan.fail_step - 1
    numbers = list(range(0, last + 1, plan.eval_every))
    nan_step = numbers[rng.randrange(1, len(numbers) - 1)] if with_nan else None
    ce_start, ce_end, acc_start, acc_end, rate = plan.curve
    steps: list[SimStep] = []
    for number in numbers:
        decay = math.exp(-rate * number / plan.total_steps)
        ce = (ce_end + (ce_start - ce_end) * decay) * math.exp(rng.gauss(0.0, 0.04))
        acc = acc_start + (acc_end - acc_start) * (1.0 - decay) + rng.gauss(0.0, 0.01)
        gen_ce = ce * math.exp(rng.gauss(0.0, 0.03))
        gen_acc = acc + rng.gauss(0.0, 0.01)
        spike = rng.random() < _SPIKE_RATE and number > 0 and number != nan_step
        if spike:
            factor = rng.uniform(3.0, 6.0)
            ce, gen_ce, acc, gen_acc = ce * factor, gen_ce * factor, acc * 0.85, gen_acc * 0.85
        jitter = rng.uniform(0.05, 0.95)
        metrics = {
            "accuracy": float32(min(max(acc, 0.0), 1.0)),
            "cross_entropy": math.nan if number == nan_step else float32(ce),
            "generation_accuracy": float32(min(max(gen_acc, 0.0), 1.0)),
            "generation_cross_entropy": float32(gen_ce),
            "step": float(number),
        }
        created_at = plan.training_start + number * plan.step_seconds + jitter
        steps.append(SimStep(number, created_at, MappingProxyType(metrics)))
    return tuple(steps)


# --------------------------------------------------------------------------- scripted models


def scripted_steps(plan: Plan, script: ScriptedModel) -> tuple[SimStep, ...]:
    """The evaluations of a scripted model: smooth curves with mild noise plus what was scripted.

    The noise streams do not depend on the spikes or non-finite values, so a spiked value is
    exactly ``factor`` times what the same model without the spike reports (before float32).
    """
    rng = scripted_rng(script, "steps")
    extras = {metric: scripted_rng(script, f"metric:{metric}") for metric in script.extra_metrics}
    ce_start, ce_end, acc_start, acc_end, rate = plan.curve
    steps: list[SimStep] = []
    for number in script.evaluated_steps:
        decay = math.exp(-rate * number / plan.total_steps)
        ce_curve = ce_end + (ce_start - ce_end) * decay
        acc_curve = acc_start + (acc_end - acc_start) * (1.0 - decay)
        ce, gen_ce = ce_curve * noise(rng), ce_curve * noise(rng)
        acc, gen_acc = acc_curve * noise(rng), acc_curve * noise(rng)
        factor = script.spike_factor(number)
        non_finite = script.non_finite_value(number)
        metrics = {
            "accuracy": float32(min(max(acc, 0.0), 1.0)),
            "cross_entropy": non_finite if non_finite is not None else float32(ce * factor),
            "generation_accuracy": float32(min(max(gen_acc, 0.0), 1.0)),
            "generation_cross_entropy": float32(gen_ce * factor),
            "step": float(number),
        }
        for metric, stream in extras.items():
            metrics[metric] = float32(ce_curve * noise(stream) * factor)
        created_at = plan.training_start + number * plan.step_seconds
        steps.append(SimStep(number, created_at, MappingProxyType(metrics)))
    return tuple(steps)
