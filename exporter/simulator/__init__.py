"""Simulators of the fine-tuning APIs the exporter reads: run and test it without an account.

``new_world`` builds a deterministic account of one provider (``PROVIDERS``) driven by a
``SimClock``; ``build_app`` serves it over HTTP with that provider's paths and quirks, plus the
``/simulator/*`` control routes every provider shares; ``run_simulator`` serves it until
cancelled. A ``Scenario`` (``load_scenario``) scripts the account instead: named runs with exact
timings, loss spikes and NaNs where a test wants them. A ``FaultInjector`` holding ``Fault``
objects makes the answers fail on demand: error statuses, 429s, dropped and hung connections,
malformed or huge bodies, JSON nested 100,000 deep or a list of a million entries. Each
provider's own classes live in its subpackage (``exporter.simulator.cohere``,
``exporter.simulator.together``).
"""

from exporter.simulator.clock import SimClock
from exporter.simulator.faults import Fault, FaultInjector, FaultKind
from exporter.simulator.providers import PROVIDERS, build_app, new_world, run_simulator
from exporter.simulator.scenario import (
    Scenario,
    ScenarioError,
    ScriptedModel,
    ScriptedSpike,
    bundled_scenarios,
    load_scenario,
)

__all__ = [
    "PROVIDERS",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Scenario",
    "ScenarioError",
    "ScriptedModel",
    "ScriptedSpike",
    "SimClock",
    "build_app",
    "bundled_scenarios",
    "load_scenario",
    "new_world",
    "run_simulator",
]
