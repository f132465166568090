"""The simulated Cohere fine-tuning API: a deterministic account and its HTTP routes.

``CohereWorld`` is the account (models, lifecycle, evaluated steps) driven by a ``SimClock``;
``build_cohere_app`` serves it with Cohere's paths, paging and proto3 JSON quirks
(``encoding``).
"""

from exporter.simulator.cohere.app import build_cohere_app
from exporter.simulator.cohere.plan import SimStep
from exporter.simulator.cohere.world import CohereWorld, StepOrder
from exporter.simulator.scenario import SCRIPTED_NOISE

__all__ = ["SCRIPTED_NOISE", "CohereWorld", "SimStep", "StepOrder", "build_cohere_app"]
