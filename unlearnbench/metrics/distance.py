"""Distance between two models' output distributions: the Jensen–Shannon divergence, and the distance to the
retrained model (`js_to_retrain`). ZRF (zrf.py) is the same divergence taken to a random model.

The divergence functions take probability rows [N, C] (softmax already applied; use `softmax64` on logits) and
compute in float64 with natural logarithms (nats).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import MetricContext, register_metric


def softmax64(logits: Tensor) -> Tensor:
    """Softmax over the last dimension in float64: logits [N, C] → probabilities [N, C]."""
    return torch.softmax(logits.detach().to(torch.float64), dim=-1)


def log_softmax64(logits: Tensor) -> Tensor:
    """Row-wise log-softmax in float64 (finite wherever the logits are, unlike the log of `softmax64`)."""
    return torch.log_softmax(logits.detach().to(torch.float64), dim=-1)


def float64_pair(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Two probability matrices of equal shape [N, C], detached and in float64; ValueError otherwise."""
    if p.dim() != 2 or p.shape != q.shape:
        raise ValueError(f"expected two probability matrices of equal shape [N, C], got {tuple(p.shape)} and {tuple(q.shape)}")
    return p.detach().to(torch.float64), q.detach().to(torch.float64)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Per-row Jensen–Shannon divergence in nats, float64 [N], each in [0, ln 2].

    JS(p‖q) = ½KL(p‖m) + ½KL(q‖m) with m = ½(p+q); terms with p_j = 0 count 0
    exactly (0·log 0 = 0), so one-hot rows give finite values. JS(p, p) is
    exactly 0; rounding below 0 is clamped to 0.
    """
    p, q = float64_pair(p, q)
    m = (p + q) / 2
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0.0)


def mean_js(p: Tensor, q: Tensor) -> float:
    """Mean over rows of the Jensen–Shannon divergence between p and q, in nats (e.g. unlearned vs retrained model)."""
    return float(js_divergence(p, q).mean())


@register_metric("js_to_retrain", uses_retrained=True, splits=["test"], train_missing=False)
def js_to_retrain(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (split, 'js_to_retrain_forget' | 'js_to_retrain_retain', mean JS in nats, in [0, ln 2]) per split.

    Compares with `ctx.stages.retrained(c)`, the model retrained without class c. It runs only where that model
    is trained anyway (`ctx.has_retrain`: the grid holds the retrain method) or when `train_missing` asks for
    the retrained models to be trained for this metric alone; otherwise it gives no rows.
    """
    if not (ctx.has_retrain or ctx.settings["train_missing"]):
        return []
    retrained = ctx.stages.retrained(ctx.forget_class)
    rows = []
    for split in ctx.settings["splits"]:
        for view in ("forget", "retain"):
            p = softmax64(ctx.logits(split, view))
            q = softmax64(ctx.logits(split, view, model=retrained))
            rows.append((split, f"js_to_retrain_{view}", mean_js(p, q)))
    return rows
