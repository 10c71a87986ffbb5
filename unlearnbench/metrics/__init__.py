"""Metrics: accuracy, ZRF, relearn time, insertion/deletion, membership inference, distance, cost.

Importing this package registers every metric in `METRICS`.
"""
from . import (  # noqa: F401  (importing registers)
    accuracy, distance_metric, insertion_deletion_metric, membership_metric, relearn_metric, zrf_metric,
)
from .base import METRICS, Metric, MetricContext, register_metric

__all__ = ["METRICS", "Metric", "MetricContext", "register_metric"]
