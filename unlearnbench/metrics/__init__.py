"""Metrics, one module per family: accuracy, zrf, distance (JS to the retrained model), relearn (relearn time),
insertion_deletion and membership (membership inference); base holds the Metric contract and registry.

Importing this package registers every metric in `METRICS`.
"""
from . import accuracy, distance, insertion_deletion, membership, relearn, zrf  # noqa: F401  (importing registers)
from .base import METRICS, Metric, MetricContext, register_metric

__all__ = ["METRICS", "Metric", "MetricContext", "register_metric"]
