"""Insertion / deletion scores for WF-Net's gates (RISE adapted to α), generic over any gated model, and the
`insertion_deletion` metric computing their AUCs for models exposing `relevance(c)`.

A "gates" dict maps each filtered layer to (gate_w [C_out], gate_b [C_out]), the
multipliers applied to its weights and bias for one class c: σ(α_w[c]),
σ(α_b[c]) for the model unlearned on c, all 1.0 for pass-through. The
relevance of an element is how far it was dropped: 1 − σ(α).

`confidence(gates)` is supplied by the caller: it runs the model with those
gates on the D_f(c) samples and returns their softmax confidence on class c,
each divided by the original model's confidence on the same sample, averaged
(unitless). Gates are handed over as float64 CPU tensors; the caller casts and
moves them.

With K = 1/step steps, the curves record the confidence at x = k/K for
k = 0..K (K + 1 evaluations) after changing the most relevant elements:
- ranking "per_matrix" (the paper: "we reactivate a percentage of elements in
  each [α matrix] sorted by relevancy"): the ceil(k·n_m/K) most relevant of
  each matrix m of n_m elements (a layer's weight gates and its bias gates are
  two matrices), so every matrix is k/K changed at step k;
- ranking "global": the ceil(k·n/K) most relevant of all n elements ranked
  together, so a few layers of high relevance change first.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..config import check_ranges, one_of
from ..errors import UserError
from ..training import predict_logits
from .base import MetricContext, register_metric

Gates = dict[str, tuple[Tensor, Tensor]]
Confidence = Callable[[Gates], float]
RANKINGS = ("per_matrix", "global")


def _flat(relevance: Gates) -> Tensor:
    """All relevance values in canonical order (layers in dict order; per layer w then b), float64 CPU."""
    return torch.cat([v.detach().reshape(-1).to("cpu", torch.float64) for pair in relevance.values() for v in pair])


def _order(flat: Tensor) -> Tensor:
    """Indices into `flat`, most relevant first; ties keep the canonical order of `_flat`."""
    return torch.sort(flat, descending=True, stable=True).indices


def _unflatten(flat: Tensor, like: Gates) -> Gates:
    """Inverse of `_flat`: a gates dict shaped like `like`, viewing `flat`."""
    chunks = iter(flat.split([v.numel() for pair in like.values() for v in pair]))
    return {name: (next(chunks).view_as(w), next(chunks).view_as(b)) for name, (w, b) in like.items()}


def changed_first(relevance: Gates, k: int, steps: int, ranking: str) -> Tensor:
    """Indices into `_flat(relevance)` of the elements changed at step k of `steps` under `ranking`."""
    if ranking == "global":
        flat = _flat(relevance)
        return _order(flat)[: -(-k * flat.numel() // steps)]
    if ranking != "per_matrix":
        raise UserError(f"insertion_deletion ranking must be one of {', '.join(RANKINGS)} or both, got '{ranking}'.")
    picked, offset = [], 0
    for matrix in (v for pair in relevance.values() for v in pair):
        values = matrix.detach().reshape(-1).to("cpu", torch.float64)
        picked.append(_order(values)[: -(-k * values.numel() // steps)] + offset)
        offset += values.numel()
    return torch.cat(picked)


def _curve(confidence: Confidence, relevance: Gates, start: Tensor, value: float, step: float,
           ranking: str) -> tuple[list[float], list[float]]:
    steps = round(1 / step)
    if steps < 1 or abs(steps * step - 1) > 1e-9:
        raise ValueError(f"step must be 1/K for a whole number K ≥ 1, got {step}")
    xs, ys = [], []
    for k in range(steps + 1):
        gates = start.clone()
        gates[changed_first(relevance, k, steps, ranking)] = value
        xs.append(k / steps)
        ys.append(float(confidence(_unflatten(gates, relevance))))
    return xs, ys


def insertion_curve(confidence: Confidence, relevance: Gates, step: float = 0.05,
                    ranking: str = "per_matrix") -> tuple[list[float], list[float]]:
    """Insertion curve (xs = fraction restored in [0, 1], ys = normalised confidence on class c).

    Starts from the model unlearned on c, gates = 1 − relevance (= σ(α[c])),
    and sets the most relevant elements back to pass-through (gate 1.0) step
    by step; xs[-1] = 1 is the pass-through model. A high AUC is good.
    """
    return _curve(confidence, relevance, 1 - _flat(relevance), 1.0, step, ranking)


def deletion_curve(confidence: Confidence, relevance: Gates, step: float = 0.05,
                   ranking: str = "per_matrix") -> tuple[list[float], list[float]]:
    """Deletion curve (xs = fraction closed in [0, 1], ys = normalised confidence on class c).

    Starts from pass-through (all gates 1.0) and closes the most relevant
    elements (gate 0.0) step by step; xs[-1] = 1 has every gate closed. A low
    AUC is good.
    """
    return _curve(confidence, relevance, torch.ones_like(_flat(relevance)), 0.0, step, ranking)


def auc(xs: list[float], ys: list[float]) -> float:
    """Area under the curve by the trapezoid rule over x in [0, 1] (xs ascending, from 0 to 1)."""
    if len(xs) != len(ys) or len(xs) < 2 or xs[0] != 0 or xs[-1] != 1:
        raise ValueError("auc needs matching xs, ys with xs running from 0 to 1")
    return float(sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:])))


def check_settings(s: dict) -> None:
    whole = (lambda v: 0 < v <= 1 and abs(round(1 / v) * v - 1) <= 1e-9, "1/K for a whole number K ≥ 1")
    check_ranges(s, {"step": whole, "split": one_of(("train", "val", "test")), "ranking": one_of((*RANKINGS, "both"))},
                 "metric_settings.insertion_deletion.{}".format)


@register_metric("insertion_deletion", check=check_settings, step=0.05, split="test", ranking="per_matrix")
def insertion_deletion(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (split, 'insertion', AUC) and (split, 'deletion', AUC), unitless, for models exposing
    `relevance(c)`; no rows for any other model.

    The confidence at each point of a curve is, for each D_f(c) sample of `split` that the pass-through model
    (every gate 1.0, which for WF-Net is exactly the original model, i.e. the model before untraining) classifies
    as c, the softmax probability of class c under the gated model divided by the pass-through model's, averaged
    over those samples (so the AUC is the mean of their per-sample AUCs). Samples the original misclassifies are
    left out: their tiny baseline probability would make their ratios, and the mean, unbounded. No rows when the
    original classifies none as c. Gates change by a fraction `step` per point (K = 1/step, K + 1 evaluations per
    curve), ranked as `ranking` says: "per_matrix" (the paper's), "global", or "both" (the global ranking's rows
    are then named insertion_global and deletion_global).
    """
    c = ctx.forget_class
    split, ranking = ctx.settings["split"], ctx.settings["ranking"]
    relevance = ctx.model.relevance(c)
    if relevance is None:
        return []
    rankings = {"both": {"per_matrix": "", "global": "_global"}}.get(ranking, {ranking: ""})
    device = ctx.data.device

    def gated_logits(gates: Gates, samples) -> Tensor:
        moved = {name: (w.to(device, torch.float32), b.to(device, torch.float32)) for name, (w, b) in gates.items()}
        return predict_logits(ctx.model.gated(moved), ctx.data, samples).double()

    forget = ctx.view(split, "forget")
    original = gated_logits({name: (torch.ones_like(w), torch.ones_like(b)) for name, (w, b) in relevance.items()},
                            forget)
    recognised = original.argmax(1) == c
    if not recognised.any():
        return []
    forget = forget.subset(recognised)
    baseline = torch.softmax(original[recognised], dim=1)[:, c]

    def confidence(gates: Gates) -> float:
        return float((torch.softmax(gated_logits(gates, forget), dim=1)[:, c] / baseline).mean())

    step = float(ctx.settings["step"])
    rows = []
    for name, suffix in rankings.items():
        rows += [(split, f"insertion{suffix}", auc(*insertion_curve(confidence, relevance, step, name))),
                 (split, f"deletion{suffix}", auc(*deletion_curve(confidence, relevance, step, name)))]
    return rows
