"""Typed views of Cohere's answers, lenient where the real API is and strict where it matters.

The API speaks proto3 JSON: zero values are left out, ``null`` means the default, doubles may
come as strings (``"NaN"``, ``"Infinity"``), timestamps carry up to nine fractional digits.
Unknown fields are ignored so that a new API field never breaks polling.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from exporter.upstream.values import ApiObject, Double, Integer, Timestamp, parse_int


class BaseModelInfo(ApiObject):
    name: str = ""
    version: str = ""
    base_type: str = "BASE_TYPE_UNSPECIFIED"
    strategy: str = ""


class FinetuneSettings(ApiObject):
    base_model: BaseModelInfo = Field(default_factory=BaseModelInfo)
    dataset_id: str = ""


class FinetunedModel(ApiObject):
    id: str = ""
    name: str = ""
    settings: FinetuneSettings = Field(default_factory=FinetuneSettings)
    status: str = "STATUS_UNSPECIFIED"
    created_at: Timestamp = None
    updated_at: Timestamp = None
    completed_at: Timestamp = None


class ListFinetunedModelsResponse(ApiObject):
    finetuned_models: list[FinetunedModel] = Field(default_factory=list)
    next_page_token: str = ""
    total_size: Integer = 0


class GetFinetunedModelResponse(ApiObject):
    finetuned_model: FinetunedModel


class TrainingStepMetrics(ApiObject):
    created_at: Timestamp = None
    step_number: Integer = 0
    metrics: dict[str, Double] = Field(default_factory=dict)


class ListTrainingStepMetricsResponse(ApiObject):
    """A page of steps. With ``{"from_step": n}`` as validation context, steps below ``n``
    (already processed: a newest-first page is mostly those) are not parsed beyond their
    number, and only the first, the last and the lowest of them are kept, each as its number
    alone: all that paging needs (the page's order and where it ends), which makes a page with
    nothing new cheap. A step number that is not one still fails the whole page."""

    step_metrics: list[TrainingStepMetrics] = Field(default_factory=list)
    next_page_token: str = ""

    @field_validator("step_metrics", mode="before")
    @classmethod
    def _skip_processed(cls, entries: Any, info: ValidationInfo) -> Any:
        start = (info.context or {}).get("from_step")
        if start is None or not isinstance(entries, list):
            return entries
        numbers = [
            parse_int(entry.get("step_number", 0)) if isinstance(entry, dict) else None
            for entry in entries
        ]
        old = [(i, n) for i, n in enumerate(numbers) if n is not None and n < start]
        if not old:
            return entries
        lowest = min(old, key=lambda pair: pair[1])
        marks = {old[0][0], old[-1][0], lowest[0]}
        return [
            {"step_number": number} if i in marks else entry
            for i, (entry, number) in enumerate(zip(entries, numbers, strict=True))
            if i in marks or number is None or number >= start
        ]


__all__ = [
    "BaseModelInfo",
    "FinetuneSettings",
    "FinetunedModel",
    "GetFinetunedModelResponse",
    "ListFinetunedModelsResponse",
    "ListTrainingStepMetricsResponse",
    "TrainingStepMetrics",
]
