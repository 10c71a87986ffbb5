"""Metrics: accuracy, ZRF, relearn time, insertion/deletion, membership inference, distance, cost.

Importing this package registers every metric in `METRICS`.
"""
from . import accuracy  # noqa: F401  (registers)
from .base import METRICS, Metric, MetricContext, register_metric

__all__ = ["METRICS", "Metric", "MetricContext", "register_metric"]
