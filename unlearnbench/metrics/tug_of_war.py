"""Tug of War (ToW) and ToW-MIA (Zhao et al., "What makes unlearning hard and what to do about it", NeurIPS 2024;
kairanzhao/RUM `surgical_plugins/analysis.py` and `analysis_mia.py`): how close an unlearned model's accuracies
are to the retrained model's, as one number in [0, 1] (1: the retrained model's accuracies exactly)."""
from __future__ import annotations

from typing import Iterable

from ..training import accuracy
from .base import MetricContext, register_metric
from .membership import SVC_SHADOW_SIZE, svc_attack_efficacies, svc_attack_settings

# (split, view) of the three accuracy terms: forget and retain sets of the train split, and the test split with
# class c removed (the test set SalUn's and RUM's code evaluate class-wise forgetting on)
TOW_TERMS = {"forget": ("train", "forget"), "retain": ("train", "retain"), "test": ("test", "retain")}


def tug_of_war(pairs: Iterable[tuple[float, float]]) -> float:
    """Π over (unlearned, retrained) pairs of (1 − |unlearned − retrained|), in [0, 1].

    Each pair holds two fractions in [0, 1] (accuracies, or MIA-efficacies for ToW-MIA); ValueError otherwise.
    """
    product = 1.0
    for unlearned, retrained in pairs:
        if not (0.0 <= unlearned <= 1.0 and 0.0 <= retrained <= 1.0):
            raise ValueError(f"tug_of_war takes fractions in [0, 1], got {unlearned!r} and {retrained!r}")
        product *= 1.0 - abs(unlearned - retrained)
    return product


@register_metric("tow", fits_sklearn=True, uses_retrained=True, check=lambda s: svc_attack_settings(s, "tow"), shadow_size=SVC_SHADOW_SIZE,
                 seed=0, train_missing=False)
def tug_of_war_to_retrain(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows ('train', 'tow', ToW) and ('train', 'tow_mia', ToW-MIA), each in [0, 1] (retrain: exactly 1).

    ToW multiplies (1 − |Δacc|) over the forget and retain accuracy on the train split and the accuracy on the test
    split without class c, Δ against `ctx.stages.retrained(c)`. ToW-MIA replaces the forget term by 1 − |Δ| of
    the SVC MIA-efficacy with the confidence feature (as `mia_svc_confidence`), the unlearned and the retrained
    model each attacked on its own outputs with this metric's shadow_size and seed. Like js_to_retrain it runs
    only where the retrained models exist anyway (`ctx.has_retrain`) or `train_missing` asks for them; otherwise
    no rows.
    """
    if not (ctx.has_retrain or ctx.settings["train_missing"]):
        return []
    retrained = ctx.stages.retrained(ctx.forget_class)

    def term(split: str, view: str) -> tuple[float, float]:
        return tuple(accuracy(ctx.logits(split, view, model=m), ctx.labels(split, view)) for m in (None, retrained))

    forget, retain, test = (term(split, view) for split, view in TOW_TERMS.values())
    mia = tuple(svc_attack_efficacies(ctx, "tow", ["confidence"], model=m)["confidence"] for m in (None, retrained))
    return [("train", "tow", tug_of_war([forget, retain, test])), ("train", "tow_mia", tug_of_war([mia, retain, test]))]
