"""A simulator of Cohere's fine-tuning API: run and test the exporter without a Cohere account.

``SimWorld`` is a deterministic account driven by a ``SimClock``; ``build_app`` serves it over
HTTP with Cohere's paths, paging and proto3 JSON quirks; ``run_simulator`` serves it until
cancelled. A ``Scenario`` (``load_scenario``) scripts the account instead: named models with
exact timings, loss spikes and NaNs where a test wants them. A ``FaultInjector`` holding ``Fault``
objects makes the answers fail on demand: error statuses, 429s, dropped and hung connections,
malformed or huge bodies.
"""

from exporter.simulator.app import build_app, run_simulator
from exporter.simulator.clock import SimClock
from exporter.simulator.faults import Fault, FaultInjector, FaultKind
from exporter.simulator.scenario import (
    Scenario,
    ScenarioError,
    ScriptedModel,
    ScriptedSpike,
    bundled_scenarios,
    load_scenario,
)
from exporter.simulator.world import SimStep, SimWorld

__all__ = [
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Scenario",
    "ScenarioError",
    "ScriptedModel",
    "ScriptedSpike",
    "SimClock",
    "SimStep",
    "SimWorld",
    "build_app",
    "bundled_scenarios",
    "load_scenario",
    "run_simulator",
]
