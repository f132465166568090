"""A deterministic simulated Cohere account: fine-tuned models, their lifecycle and step metrics.

Everything is derived from ``(seed, model index)`` and the clock, so a test can name exact values
and a demo shows the same account every time. Plans and evaluations come from
``exporter.simulator.cohere.plan``, built on first use and cached (see ``Account``).
"""

from __future__ import annotations

import bisect
import copy
import random
from typing import Any, Final, Literal

from exporter.simulator.account import Account
from exporter.simulator.clock import SimClock
from exporter.simulator.cohere import encoding
from exporter.simulator.cohere.plan import (
    Plan,
    SimStep,
    derive_id,
    random_plan,
    random_steps,
    scripted_plan,
    scripted_steps,
    uuid4_from,
)
from exporter.simulator.scenario import Scenario

StepOrder = Literal["newest-first", "oldest-first"]

STATUS_QUEUED: Final = "STATUS_QUEUED"
STATUS_FINETUNING: Final = "STATUS_FINETUNING"
STATUS_DEPLOYING_API: Final = "STATUS_DEPLOYING_API"
STATUS_READY: Final = "STATUS_READY"
STATUS_FAILED: Final = "STATUS_FAILED"

#: The keys of ``CohereWorld.request_counts``, one per API operation the simulator serves.
REQUEST_KINDS: Final = (
    "list_models",
    "get_model",
    "list_events",
    "list_step_metrics",
    "delete_model",
)


class CohereWorld(Account[Plan]):
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
        if step_order not in ("newest-first", "oldest-first"):
            raise ValueError(f"unknown step_order {step_order!r}")
        super().__init__(
            runs=models,
            seed=seed,
            clock=clock,
            api_key=api_key,
            scenario=scenario,
            request_kinds=REQUEST_KINDS,
        )
        self.step_order: StepOrder = step_order
        account = random.Random(f"{seed}:account")
        self.organization_id = uuid4_from(account)
        self._creators = tuple(uuid4_from(account) for _ in range(3))
        count = self._initial_runs
        self._nan_index = account.randrange(count) if scenario is None and count >= 3 else None
        self._steps: dict[int, tuple[SimStep, ...]] = {}

    def _make_plan(self, index: int) -> Plan:
        if self.scenario is not None and index < len(self.scenario.models):
            script = self.scenario.models[index]
            return scripted_plan(self.seed, index, self._creators, self._start, script)
        added_at = self._added_at.get(index)
        return random_plan(self.seed, index, self._creators, self._start, added_at)

    def _derive_id(self, index: int) -> str:
        return derive_id(self.seed, index)

    def _all_steps(self, index: int) -> tuple[SimStep, ...]:
        """Every evaluation the model will ever report (future ones included), ascending."""
        cached = self._steps.get(index)
        if cached is None:
            plan = self._plan(index)
            if plan.script is not None:
                cached = scripted_steps(plan, plan.script)
            else:
                cached = random_steps(plan, self.seed, with_nan=index == self._nan_index)
            self._steps[index] = cached
        return cached

    # ----------------------------------------------------------------- public API

    def model_ids(self) -> list[str]:
        """IDs of the models currently in the account, oldest ``created_at`` first."""
        return self.run_ids()

    def add_model(self) -> str:
        """Create a model now: it starts QUEUED at ``clock.now()``. Returns its id."""
        return self.add_run()

    def status(self, model_id: str) -> str:
        """The lifecycle status at ``clock.now()``; raises ``KeyError`` for an absent model."""
        return self._status(self._plan(self._index(model_id)), self.clock.now())

    @staticmethod
    def _status(plan: Plan, now: float) -> str:
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

    def truth(self) -> list[dict[str, Any]]:
        """Every model present now with its status and newest step (doubles as protojson)."""
        runs = []
        for model_id in self.model_ids():
            model = self.model(model_id)
            steps = self.steps(model_id)
            newest = steps[-1] if steps else None
            runs.append(
                {
                    "id": model_id,
                    "name": model["name"],
                    "status": model["status"],
                    "newest_step": None
                    if newest is None
                    else {
                        "step_number": newest.step_number,
                        "created_at": newest.created_at,
                        "metrics": {k: encoding.double(v) for k, v in newest.metrics.items()},
                    },
                    "step_count": len(steps),
                }
            )
        return runs
