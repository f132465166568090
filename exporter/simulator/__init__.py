"""A simulator of Cohere's fine-tuning API: run and test the exporter without a Cohere account.

``SimWorld`` is a deterministic account driven by a ``SimClock``; ``build_app`` serves it over
HTTP with Cohere's paths, paging and proto3 JSON quirks; ``run_simulator`` serves it until
cancelled.
"""

from exporter.simulator.app import build_app, run_simulator
from exporter.simulator.clock import SimClock
from exporter.simulator.world import SimStep, SimWorld

__all__ = ["SimClock", "SimStep", "SimWorld", "build_app", "run_simulator"]
