"""Insertion / deletion AUCs for models whose unlearning closes per-class gates (WF-Net's α)."""
from __future__ import annotations

import torch

from ..errors import UserError
from ..training import predict_logits
from .base import MetricContext, register_metric
from .insertion_deletion import Gates, auc, deletion_curve, insertion_curve


@register_metric("insertion_deletion", step=0.05, split="test")
def insertion_deletion(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (split, 'insertion', AUC) and (split, 'deletion', AUC), unitless, for models exposing
    `relevance(c)`; no rows for any other model.

    The confidence at each point of a curve is the mean softmax probability of class c over the D_f(c) samples
    of `split` under the gated model, divided by the same mean under the pass-through model (every gate 1.0),
    which for WF-Net is exactly the original model, i.e. the model before untraining. Gates change by a
    fraction `step` of all elements per point (K = 1/step, K + 1 evaluations per curve).
    """
    c = ctx.forget_class
    relevance = ctx.model.relevance(c)
    if relevance is None:
        return []
    split = ctx.settings["split"]
    if split not in ("train", "val", "test"):
        raise UserError(f"insertion_deletion split must be train, val or test, got '{split}'.")
    forget = ctx.view(split, "forget")
    device = ctx.data.device

    def mean_confidence(gates: Gates) -> float:
        moved = {name: (w.to(device, torch.float32), b.to(device, torch.float32)) for name, (w, b) in gates.items()}
        logits = predict_logits(ctx.model.gated(moved), ctx.data, forget)
        return float(torch.softmax(logits.double(), dim=1)[:, c].mean())

    baseline = mean_confidence({name: (torch.ones_like(w), torch.ones_like(b)) for name, (w, b) in relevance.items()})

    def confidence(gates: Gates) -> float:
        return mean_confidence(gates) / baseline

    step = float(ctx.settings["step"])
    return [(split, "insertion", auc(*insertion_curve(confidence, relevance, step))),
            (split, "deletion", auc(*deletion_curve(confidence, relevance, step)))]
