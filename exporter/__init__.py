"""Prometheus exporter for the training-step metrics of fine-tuning runs (Cohere, Together AI)."""

__version__ = "0.2.0"
