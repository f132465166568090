"""A deterministic simulated Cohere account: fine-tuned models, their lifecycle and step metrics.

Everything is derived from ``(seed, model index)`` and the clock, so a test can name exact values
and a demo shows the same account every time. Each model's static plan (timings, curve shape) and
its evaluated steps are built on first use and cached, which keeps a 10,000-model account cheap to
construct; what a caller sees at any moment is the plan filtered by ``clock.now()``.
"""

from __future__ import annotations

import bisect
import collections
import copy
import math
import random
import struct
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from exporter.simulator.clock import SimClock
from exporter.simulator.scenario import Scenario, ScriptedModel

StepOrder = Literal["newest-first", "oldest-first"]

STATUS_QUEUED: Final = "STATUS_QUEUED"
STATUS_FINETUNING: Final = "STATUS_FINETUNING"
STATUS_DEPLOYING_API: Final = "STATUS_DEPLOYING_API"
STATUS_READY: Final = "STATUS_READY"
STATUS_FAILED: Final = "STATUS_FAILED"

#: The keys of ``SimWorld.request_counts``, one per API operation the simulator serves.
REQUEST_KINDS: Final = (
    "list_models",
    "get_model",
    "list_events",
    "list_step_metrics",
    "delete_model",
)

_FAILURE_RATE: Final = 1 / 8
_SPIKE_RATE: Final = 1 / 25
_MIN_STEPS: Final = 80
_MAX_STEPS: Final = 400
#: Bound of the multiplicative noise on scripted models' metrics: a spike of 3x or more can never
#: be mistaken for noise (nor noise for a 2x spike).
SCRIPTED_NOISE: Final = 0.03


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
_DOMAINS: Final = (
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
class _Plan:
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

    @property
    def duration(self) -> float:
        """Seconds from creation to READY (ignoring a failure)."""
        return self.ready_at - self.created_at


def _float32(value: float) -> float:
    """Round through float32: the real API's metric values are float32 widened to double."""
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class SimWorld:
    """The simulated account that the HTTP app serves and that tests compare ``/metrics`` against.

    ``step_order`` chooses how the step-metrics endpoint pages: "newest-first" is what the API
    documentation promises, "oldest-first" is what its official example shows; clients must cope
    with both. ``api_key`` set means every API request must carry it as a bearer token.

    With a ``scenario`` the account holds exactly the scenario's models (``models`` is ignored),
    index ``i`` being the scenario's ``i``-th model; a scripted model is in the account from its
    ``created_at`` on. ``add_model`` still adds random models after them.
    """

    def __init__(
        self,
        *,
        models: int = 5,
        seed: int = 1,
        clock: SimClock,
        step_order: StepOrder = "newest-first",
        api_key: str | None = None,
        scenario: Scenario | None = None,
    ) -> None:
        if scenario is not None:
            models = len(scenario.models)
        elif models < 0:
            raise ValueError(f"models must not be negative, got {models}")
        if step_order not in ("newest-first", "oldest-first"):
            raise ValueError(f"unknown step_order {step_order!r}")
        self.seed = seed
        self.clock = clock
        self.step_order: StepOrder = step_order
        self.api_key = api_key
        self.scenario = scenario
        self.request_counts: collections.Counter[str] = collections.Counter(
            dict.fromkeys(REQUEST_KINDS, 0)
        )
        self.step_requests_by_model: collections.Counter[str] = collections.Counter()
        self._initial_models = models
        self._start = clock.now()
        account = random.Random(f"{seed}:account")
        self.organization_id = _uuid(account)
        self._creators = tuple(_uuid(account) for _ in range(3))
        random_nan = scenario is None and models >= 3
        self._nan_index = account.randrange(models) if random_nan else None
        self._lock = threading.RLock()
        self._next_index = models
        self._added_at: dict[int, float] = {}
        self._deleted: set[int] = set()
        self._plans: dict[int, _Plan] = {}
        self._steps: dict[int, tuple[SimStep, ...]] = {}
        self._ids: dict[str, int] | None = None
        self._order: list[int] | None = None

    # ----------------------------------------------------------------- plans (lazy, cached)

    def _plan(self, index: int) -> _Plan:
        plan = self._plans.get(index)
        if plan is None:
            with self._lock:
                plan = self._plans.get(index)
                if plan is None:
                    plan = self._make_plan(index)
                    self._plans[index] = plan
        return plan

    def _make_plan(self, index: int) -> _Plan:
        if self.scenario is not None and index < len(self.scenario.models):
            return self._scripted_plan(index, self.scenario.models[index])
        rng = random.Random(f"{self.seed}:{index}")
        model_id = _uuid(rng)  # first draw: the id other code may derive independently
        base = rng.choices(_BASE_MODELS, weights=[b.weight for b in _BASE_MODELS])[0]
        domain = rng.choice(_DOMAINS)
        name = f"{domain}-{rng.choice(base.kinds)}-v{rng.randint(1, 9)}"
        settings = self._settings(rng, base, domain)
        creator_id = rng.choice(self._creators)
        queue_s = rng.uniform(5.0, 30.0)
        eval_every = rng.choice((8, 16))
        total_steps = eval_every * rng.randint(
            -(-_MIN_STEPS // eval_every), _MAX_STEPS // eval_every
        )
        step_s = rng.uniform(1.8, 2.2)
        deploy_s = rng.uniform(20.0, 60.0)
        fails = rng.random() < _FAILURE_RATE
        fail_step = rng.randint(2 * eval_every + 1, total_steps - 1)
        curve = (
            rng.uniform(3.7, 4.4),
            rng.uniform(0.25, 0.45),
            rng.uniform(0.40, 0.50),
            rng.uniform(0.84, 0.93),
            rng.uniform(4.0, 7.0),
        )
        queued_delay = rng.uniform(0.3, 2.5)
        duration = queue_s + total_steps * step_s + 1.0 + deploy_s
        if index in self._added_at:
            created_at = self._added_at[index]
        else:
            age = self._age_at_start(index, rng, queue_s, eval_every, step_s, total_steps, duration)
            created_at = self._start - age
            if index < 3:  # the showcase models: training now, finished, mid-run
                fails = False
        return _Plan(
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

    def _scripted_plan(self, index: int, script: ScriptedModel) -> _Plan:
        """A scenario model: the id, owner and settings as for a random model, the rest scripted."""
        rng = random.Random(f"{self.seed}:{index}")
        model_id = _uuid(rng)  # the same derivation as random models
        base = rng.choices(_BASE_MODELS, weights=[b.weight for b in _BASE_MODELS])[0]
        domain = rng.choice(_DOMAINS)
        settings = self._settings(rng, base, domain)
        creator_id = rng.choice(self._creators)
        shape = _scripted_rng(script, "curve")
        curve = (
            shape.uniform(3.7, 4.4),
            shape.uniform(0.25, 0.45),
            shape.uniform(0.40, 0.50),
            shape.uniform(0.84, 0.93),
            shape.uniform(4.0, 7.0),
        )
        created_at = self._start + script.starts_at
        return _Plan(
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
            curve=curve,
            script=script,
        )

    @staticmethod
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

    @staticmethod
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

    def _all_steps(self, index: int) -> tuple[SimStep, ...]:
        """Every evaluation the model will ever report (future ones included), ascending."""
        cached = self._steps.get(index)
        if cached is not None:
            return cached
        plan = self._plan(index)
        if plan.script is not None:
            result = _scripted_steps(plan, plan.script)
            self._steps[index] = result
            return result
        rng = random.Random(f"{self.seed}:{index}:steps")
        last = plan.total_steps if plan.fail_step is None else plan.fail_step - 1
        numbers = list(range(0, last + 1, plan.eval_every))
        # The NaN lands mid-run (never step 0 nor the last step): training carries on after it.
        nan_step = numbers[rng.randrange(1, len(numbers) - 1)] if index == self._nan_index else None
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
                "accuracy": _float32(min(max(acc, 0.0), 1.0)),
                "cross_entropy": math.nan if number == nan_step else _float32(ce),
                "generation_accuracy": _float32(min(max(gen_acc, 0.0), 1.0)),
                "generation_cross_entropy": _float32(gen_ce),
                "step": float(number),
            }
            created_at = plan.training_start + number * plan.step_seconds + jitter
            steps.append(SimStep(number, created_at, MappingProxyType(metrics)))
        result = tuple(steps)
        self._steps[index] = result
        return result

    # ----------------------------------------------------------------- lookup

    def _id_map(self) -> dict[str, int]:
        with self._lock:
            if self._ids is None:
                # Only the first draw of each model's stream: no full plan needed for a lookup.
                self._ids = {
                    _uuid(random.Random(f"{self.seed}:{i}")): i for i in range(self._next_index)
                }
            return self._ids

    def _index(self, model_id: str) -> int:
        index = self._id_map().get(model_id)
        if index is None or index in self._deleted or not self._exists(index, self.clock.now()):
            raise KeyError(model_id)
        return index

    def _exists(self, index: int, now: float) -> bool:
        """Whether the model has been created by ``now``: only scripted models can be later."""
        return self.scenario is None or self._plan(index).created_at <= now

    def _ordered(self) -> list[int]:
        with self._lock:
            if self._order is None:
                present = (i for i in range(self._next_index) if i not in self._deleted)
                self._order = sorted(present, key=lambda i: (self._plan(i).created_at, i))
            return self._order

    # ----------------------------------------------------------------- public API

    def model_ids(self) -> list[str]:
        """IDs of the models currently in the account, oldest ``created_at`` first."""
        now = self.clock.now()
        return [self._plan(i).id for i in self._ordered() if self._exists(i, now)]

    def status(self, model_id: str) -> str:
        """The lifecycle status at ``clock.now()``; raises ``KeyError`` for an absent model."""
        return self._status(self._plan(self._index(model_id)), self.clock.now())

    @staticmethod
    def _status(plan: _Plan, now: float) -> str:
        if now < plan.training_start:
            return STATUS_QUEUED
        failed_at = plan.failed_at
        if failed_at is not None and now >= failed_at:
            return STATUS_FAILED
        if now < plan.training_end:
            return STATUS_FINETUNING
        if now < plan.ready_at:
            return STATUS_DEPLOYING_API
        return STATUS_READY

    def events(self, model_id: str) -> list[dict[str, Any]]:
        """Status changes that have happened by now, oldest first; system events have no user."""
        plan = self._plan(self._index(model_id))
        now = self.clock.now()
        user = plan.creator_id
        timeline: list[tuple[float, str, str]] = [
            (plan.queued_event_at, STATUS_QUEUED, user),
            (plan.training_start, STATUS_FINETUNING, user),
        ]
        failed_at = plan.failed_at
        if failed_at is not None:
            timeline.append((failed_at, STATUS_FAILED, ""))
        else:
            timeline.append((plan.training_end, STATUS_DEPLOYING_API, user))
            timeline.append((plan.ready_at, STATUS_READY, ""))
        return [{"user_id": u, "status": s, "created_at": t} for t, s, u in timeline if t <= now]

    def model(self, model_id: str) -> dict[str, Any]:
        """The FinetunedModel as the API sends it, before proto3 encoding.

        Times are Unix seconds; zero values are still present (``completed_at`` is 0.0 until the
        model is READY or FAILED, ``strategy`` may be ``STRATEGY_UNSPECIFIED``) and are left out
        only by the encoder, as protojson does. The dict is a copy: callers may change it.
        """
        plan = self._plan(self._index(model_id))
        status = self._status(plan, self.clock.now())
        events = self.events(model_id)
        completed_at = 0.0
        if status == STATUS_READY:
            completed_at = plan.training_end
        elif status == STATUS_FAILED:
            completed_at = plan.failed_at or 0.0
        return {
            "id": plan.id,
            "name": plan.name,
            "creator_id": plan.creator_id,
            "organization_id": self.organization_id,
            "settings": copy.deepcopy(plan.settings),
            "status": status,
            "created_at": plan.created_at,
            "updated_at": events[-1]["created_at"] if events else plan.created_at,
            "completed_at": completed_at,
        }

    def steps(self, model_id: str) -> list[SimStep]:
        """Every evaluated step visible now (``created_at <= clock.now()``), ascending."""
        all_steps = self._all_steps(self._index(model_id))
        visible = bisect.bisect_right([s.created_at for s in all_steps], self.clock.now())
        return list(all_steps[:visible])

    def newest_step(self, model_id: str) -> SimStep | None:
        """The highest-numbered visible step, or ``None`` before the base-model evaluation."""
        visible = self.steps(model_id)
        return visible[-1] if visible else None

    def delete(self, model_id: str) -> None:
        """Remove the model from the account; later lookups raise ``KeyError``."""
        with self._lock:
            self._deleted.add(self._index(model_id))
            self._order = None

    def add_model(self) -> str:
        """Create a model now: it starts QUEUED at ``clock.now()``. Returns its id."""
        with self._lock:
            index = self._next_index
            self._added_at[index] = self.clock.now()
            self._next_index += 1
            plan = self._plan(index)
            if self._ids is not None:
                self._ids[plan.id] = index
            self._order = None
            return plan.id


# --------------------------------------------------------------------------- scripted models


def _scripted_rng(script: ScriptedModel, purpose: str) -> random.Random:
    """A stream that depends on the scripted model alone, not on the account around it."""
    return random.Random(f"scenario:{script.seed}:{script.name}:{purpose}")


def _noise(rng: random.Random) -> float:
    """A multiplicative factor within ``1 ± SCRIPTED_NOISE``."""
    return 1.0 + rng.uniform(-SCRIPTED_NOISE, SCRIPTED_NOISE)


def _scripted_steps(plan: _Plan, script: ScriptedModel) -> tuple[SimStep, ...]:
    """The evaluations of a scripted model: smooth curves with mild noise plus what was scripted.

    The noise streams do not depend on the spikes or non-finite values, so a spiked value is
    exactly ``factor`` times what the same model without the spike reports (before float32).
    """
    rng = _scripted_rng(script, "steps")
    extras = {metric: _scripted_rng(script, f"metric:{metric}") for metric in script.extra_metrics}
    ce_start, ce_end, acc_start, acc_end, rate = plan.curve
    steps: list[SimStep] = []
    for number in script.evaluated_steps:
        decay = math.exp(-rate * number / plan.total_steps)
        ce_curve = ce_end + (ce_start - ce_end) * decay
        acc_curve = acc_start + (acc_end - acc_start) * (1.0 - decay)
        ce, gen_ce = ce_curve * _noise(rng), ce_curve * _noise(rng)
        acc, gen_acc = acc_curve * _noise(rng), acc_curve * _noise(rng)
        factor = script.spike_factor(number)
        non_finite = script.non_finite_value(number)
        metrics = {
            "accuracy": _float32(min(max(acc, 0.0), 1.0)),
            "cross_entropy": non_finite if non_finite is not None else _float32(ce * factor),
            "generation_accuracy": _float32(min(max(gen_acc, 0.0), 1.0)),
            "generation_cross_entropy": _float32(gen_ce * factor),
            "step": float(number),
        }
        for metric, stream in extras.items():
            metrics[metric] = _float32(ce_curve * _noise(stream) * factor)
        created_at = plan.training_start + number * plan.step_seconds
        steps.append(SimStep(number, created_at, MappingProxyType(metrics)))
    return tuple(steps)
