"""Feature-level forgetting (`probe`): is class c still linearly decodable from the unlearned model's penultimate
features? A method can hide a class at the output (cut its logit, close a late gate) and score Acc_f = 0 while the
features still separate it; the probe sees through that.

The probe: the model's features (`UnlearnedModel.features`, the input of its classifier head) frozen; a standardised
multinomial logistic regression fitted on `train_per_class` seeded training samples of every class, class c
included; its accuracy on the test split's D_f(c) (`probe_forget`) and D_r(c) (`probe_retain`, how good the probe
is at all). The same probe on the model retrained without c gives the reference: `probe_forget_gap` =
probe_forget − the retrained model's, where the grid trains retrained models anyway.
"""
from __future__ import annotations

import weakref
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..data import ImageData, Split
from ..config import above, at_least, check_ranges
from ..models import penultimate_features
from ..training import eval_batch_size, gather_batches
from .base import MetricContext, register_metric

Features = Callable[[Tensor], Tensor]  # a normalised batch x → features [N, D]
# the retrained model's probe_forget, per stage model and settings: every cell of a group compares with it
_REFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def probe_split(split: Split, per_class: int, seed: int) -> Split:
    """At most `per_class` samples of every class of `split`, drawn without replacement by a numpy generator
    seeded with `seed` (classes in increasing order)."""
    rng = np.random.default_rng(seed)
    labels = split.labels.cpu().numpy()
    index = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    return split.subset(torch.as_tensor(np.sort(index)))


def features_of(features: Features, data: ImageData, split: Split) -> np.ndarray:
    """float64 [N, D] features of every sample of `split`, computed without gradients in eval batches."""
    with torch.no_grad():
        out = gather_batches((features(x) for x, _ in data.batches(split, eval_batch_size(data.device))),
                             len(split), dtype=torch.float64, device="cpu")
    return np.empty((0, 0)) if out is None else out.numpy()


def probe_accuracies(features: Features, data: ImageData, fit: Split, targets: dict[str, Split], *, C: float,
                     max_iter: int, seed: int) -> dict[str, float]:
    """Fit the probe on the features of `fit` (all classes) and return its accuracy on each of `targets`."""
    from sklearn.linear_model import LogisticRegression  # sklearn (a second to import) only where a probe is fit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    probe.fit(features_of(features, data, fit), fit.labels.cpu().numpy())
    return {name: float(np.mean(probe.predict(features_of(features, data, split)) == split.labels.cpu().numpy()))
            for name, split in targets.items() if len(split)}


def stage_features(model: nn.Module, num_classes: int) -> Features:
    """The features of a plain stage model (original, retrained): the input of its classifier head."""
    model.eval()
    return lambda x: penultimate_features(model, x, num_classes)


def check_settings(s: dict) -> None:
    check_ranges(s, {"train_per_class": at_least(1), "C": above(0), "max_iter": at_least(1)},
                 "metric_settings.probe.{}".format)


@register_metric("probe", fits_sklearn=True, uses_retrained=True, check=check_settings, train_per_class=100, C=1.0, max_iter=1000,
                 seed=0, train_missing=False)
def probe(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows ('test', 'probe_forget' | 'probe_retain', probe accuracy in [0, 1]) and, where the retrained models
    exist (`ctx.has_retrain`, or `train_missing` asks for them), ('test', 'probe_forget_gap', probe_forget minus
    the retrained model's, in [-1, 1])."""
    s = ctx.settings
    fit = probe_split(ctx.data.train, int(s["train_per_class"]), int(s["seed"]))
    targets = {"forget": ctx.view("test", "forget"), "retain": ctx.view("test", "retain")}
    settings = {"C": float(s["C"]), "max_iter": int(s["max_iter"]), "seed": int(s["seed"])}
    n = ctx.data.num_classes
    unlearned = probe_accuracies(lambda x: ctx.model.features(x, ctx.forget_class, n), ctx.data, fit, targets,
                                 **settings)
    rows = [("test", f"probe_{view}", acc) for view, acc in unlearned.items()]
    if "forget" in unlearned and (ctx.has_retrain or s["train_missing"]):
        model = ctx.stages.retrained(ctx.forget_class)
        memo = _REFERENCE.setdefault(model, {})
        key = (int(s["train_per_class"]), *settings.values())
        if key not in memo:
            memo[key] = probe_accuracies(stage_features(model, n), ctx.data, fit, {"forget": targets["forget"]},
                                         **settings)["forget"]
        rows.append(("test", "probe_forget_gap", unlearned["forget"] - memo[key]))
    return rows
