"""The metric registry and what a metric receives: one unlearned model, one forget class, shared stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import torch
from torch import nn

from ..data import ImageData, Split
from ..registry import Registry
from ..stages import Stages
from ..store import BoundedMemo
from ..training import finite_logits
from ..unlearner import UnlearnedModel


CELL_LOGIT_BYTES = 512 * 2**20  # a cell's logits kept across its metrics and forget classes


@dataclass
class MetricContext:
    """One (cell, forget class) under evaluation.

    Logits are computed once per (network, split) over the whole split and shared by every metric and, through
    `logit_cache` (bounded: CELL_LOGIT_BYTES, least recently used out, recomputed when needed again), by every
    forget class of the cell (a network serving several classes is evaluated once); `results` memoises small
    results across the cell's classes (attacks fitted once).
    `has_retrain` is set by the runner when the grid trains retrained models for this group anyway (it holds
    the retrain method); metrics comparing with them (js_to_retrain) run only then, unless told otherwise.
    `rerun(k)` runs the cell's method again from the same original with seed replicate k ≥ 1 (None where the
    cell cannot be re-run, e.g. a model built by hand); it re-seeds the global RNGs, as every cell does.
    `has_retrain` is False where the recipe trains 0 epochs (pretrained originals): nothing can be retrained.
    """

    data: ImageData
    model: UnlearnedModel
    forget_class: int
    stages: Stages
    method: str
    settings: dict
    logit_cache: BoundedMemo = field(default_factory=lambda: BoundedMemo(CELL_LOGIT_BYTES))
    results: dict = field(default_factory=dict)
    has_retrain: bool = False
    rerun: Callable[[int], UnlearnedModel] | None = None

    @cached_property
    def net(self) -> nn.Module:
        """The unlearned model for this forget class, as a plain module x → logits."""
        return self.model.for_class(self.forget_class)

    def mask(self, split: str, view: str) -> torch.Tensor:
        """Boolean mask of the 'forget', 'retain' or 'all' view over a split ('train', 'val', 'test')."""
        labels = self.data.split(split).labels
        if view == "all":
            return torch.ones_like(labels, dtype=torch.bool)
        return labels == self.forget_class if view == "forget" else labels != self.forget_class

    def view(self, split: str, view: str) -> Split:
        return self.data.split(split).subset(self.mask(split, view))

    def logits(self, split: str, view: str, model: nn.Module | None = None) -> torch.Tensor:
        """Logits of `model` (default: the unlearned model for this class) on a view of a split. A shared stage
        model's (original, retrained, random) come from the group's memo, computed once for all cells."""
        net = self.net if model is None else model
        logits = self.stages.stage_logits(net, split)  # a stage model's: the group's memo holds them
        if logits is None:  # the entry keeps `net` alive, so its id stays its own
            _, logits = self.logit_cache.get((id(net), split), lambda: (net, finite_logits(net, self.data, split)),
                                             lambda entry: entry[1].nbytes)
        return logits[self.mask(split, view)]

    def labels(self, split: str, view: str) -> torch.Tensor:
        return self.data.split(split).labels[self.mask(split, view)]


@dataclass(frozen=True)
class Metric:
    """A registered metric: `compute(ctx) → [(split, metric name, value), …]`, its default settings, whether
    a grid's `metrics: all` includes it (costly metrics run only where a grid names them), whether it compares
    with the retrained model of the forget class (where that exists, or its `train_missing` setting asks) and
    `replicates(settings) → (reruns, numbers)`: how many reruns of the cell's method it makes (`ctx.rerun(1 …
    reruns)`; a rerun k of `retrain` trains retrained replicate k) and which further retrained replicates of the
    forget class it trains (`stages.retrained(c, k)` for k in `numbers`), so a plan can count what it trains, and
    `check(settings)`, which raises UserError for settings it cannot run with (the plan calls it before any work)."""

    name: str
    compute: Callable[[MetricContext], list[tuple[str, str, float]]]
    defaults: dict
    in_all: bool = True
    uses_retrained: bool = False
    replicates: Callable[[dict], tuple[int, range]] | None = None
    check: Callable[[dict], None] | None = None
    fits_sklearn: bool = False  # fits scikit-learn models (attacks, probes): its records are keyed by its version


METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str, *, in_all: bool = True, uses_retrained: bool = False,
                    replicates: Callable[[dict], tuple[int, range]] | None = None,
                    check: Callable[[dict], None] | None = None, fits_sklearn: bool = False, **defaults):
    """Decorator registering `compute` as metric `name` with default settings (overridable in the grid); with
    `in_all=False` a grid runs it only when its `metrics` list names it; `uses_retrained` lets the runner train
    the retrained models it compares with before the cells; `replicates` declares the reruns and retrained
    replicates it trains (see `Metric`), for the plan's counts and estimates; `check` refuses settings before any
    work (see `Metric`); `fits_sklearn` keys its records by scikit-learn's version."""

    def decorate(compute):
        METRICS.register(name)(Metric(name, compute, defaults, in_all, uses_retrained, replicates, check,
                                                fits_sklearn))
        return compute

    return decorate
