"""Prometheus exporter for the training-step metrics of Cohere fine-tuned models."""

__version__ = "0.1.0"
