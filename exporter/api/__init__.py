"""Client and response models of Cohere's fine-tuning API."""

from exporter.api.client import (
    ApiResponseError,
    ApiStatusError,
    ApiTransportError,
    CohereApiError,
    CohereClient,
)
from exporter.api.models import FinetunedModel, TrainingStepMetrics

__all__ = [
    "ApiResponseError",
    "ApiStatusError",
    "ApiTransportError",
    "CohereApiError",
    "CohereClient",
    "FinetunedModel",
    "TrainingStepMetrics",
]
