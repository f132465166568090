"""The simulated Together AI fine-tuning API: a deterministic account and its HTTP routes.

``TogetherWorld`` is the account (jobs, lifecycle, events, checkpoints, per-step metrics)
driven by a ``SimClock``; ``build_together_app`` serves it with the paths and shapes of the
official SDK, and with each unconfirmed form of the API (eval step keys, non-finite values,
missing timestamps) taken by some of its jobs.
"""

from exporter.simulator.together.app import build_together_app
from exporter.simulator.together.world import TogetherWorld

__all__ = ["TogetherWorld", "build_together_app"]
