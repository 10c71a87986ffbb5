"""Metrics, one module per family: accuracy, zrf, distance (JS to the retrained model), epsilon (per-example
distinguishability from retrained models, only where a grid names it), relearn (relearn time),
insertion_deletion, membership (membership inference: the logistic `mia` and SalUn's SVC `mia_svc`), probe
(feature-level forgetting: a linear probe on the penultimate features) and tug_of_war (ToW and ToW-MIA against
the retrained model); base holds the Metric contract and registry.

Importing this package registers every metric in `METRICS`.
"""
from . import (accuracy, distance, epsilon, insertion_deletion, membership, probe, relearn,  # noqa: F401
               tug_of_war, zrf)  # (importing registers them)
from .base import METRICS, Metric, MetricContext, register_metric

__all__ = ["METRICS", "Metric", "MetricContext", "register_metric"]
