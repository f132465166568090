"""Typed views of Together's fine-tuning answers, lenient wherever the API may vary.

Every field but ``id`` and ``status`` may be missing or null; ``training_type`` and
``training_method`` are objects in the SDK's types but are read from a bare string too. Metric
entries stay plain JSON objects: their keys are open (``train/loss``, ``eval/loss``, ...) and
the provider turns them into steps (``exporter.providers.together.steps``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from exporter.providers.together.steps import step_of
from exporter.upstream.values import ApiObject, Integer, Timestamp


def _kind_of(key: str) -> Any:
    """``{"type": "Lora", ...}`` → ``"Lora"``; a bare string stays; anything else is ""."""

    def read(value: Any) -> str:
        if isinstance(value, dict):
            found = value.get(key)
            return found if isinstance(found, str) else ""
        return value if isinstance(value, str) else ""

    return read


class Progress(ApiObject):
    estimate_available: bool = False
    seconds_remaining: Integer | None = None


class Event(ApiObject):
    type: str = ""
    created_at: Timestamp = None
    step: Integer | None = None
    total_steps: Integer | None = None


class Job(ApiObject):
    id: str = ""
    status: str = ""
    created_at: Timestamp = None
    updated_at: Timestamp = None
    model: str = ""
    model_output_name: str = ""
    suffix: str = ""
    training_type: Annotated[str, BeforeValidator(_kind_of("type"))] = ""
    training_method: Annotated[str, BeforeValidator(_kind_of("method"))] = ""
    token_count: Integer | None = None
    progress: Progress | None = None
    events: list[Event] = Field(default_factory=list)


class JobList(ApiObject):
    data: list[Job] = Field(default_factory=list)


class EventList(ApiObject):
    data: list[Event] = Field(default_factory=list)


class MetricList(ApiObject):
    metrics: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("metrics")
    @classmethod
    def _steps_are_integers(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A step that is no integer makes the answer invalid as a whole, like a bad page."""
        for index, entry in enumerate(entries):
            try:
                step_of(entry)
            except ValueError as exc:
                raise ValueError(f"entry {index}: {exc}") from None
        return entries
