"""Insertion / deletion scores for WF-Net's gates (RISE adapted to α), generic over any gated model.

A "gates" dict maps each filtered layer to (gate_w [C_out], gate_b [C_out]), the
multipliers applied to its weights and bias for one class c: σ(α_w[c]),
σ(α_b[c]) for the model unlearned on c, all 1.0 for pass-through. The
relevance of an element is how far it was dropped: 1 − σ(α).

`confidence(gates)` is supplied by the caller: it runs the model with those
gates on the D_f(c) samples and returns the mean softmax confidence on class c
divided by the original model's mean confidence on the same samples (unitless).
Gates are handed over as float64 CPU tensors; the caller casts and moves them.

With n elements and K = 1/step steps, the curves record the confidence at
x = k/K for k = 0..K (K + 1 evaluations) after changing the ceil(k·n/K) most
relevant elements.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Gates = dict[str, tuple[Tensor, Tensor]]
Confidence = Callable[[Gates], float]


def relevance_from_alpha(alpha_rows: Gates) -> Gates:
    """Relevance 1 − σ(α) per element, float64, from {layer: (α_w[c], α_b[c])} (each [C_out])."""
    return {name: (1 - torch.sigmoid(w.detach().double()), 1 - torch.sigmoid(b.detach().double())) for name, (w, b) in alpha_rows.items()}


def _flat(relevance: Gates) -> Tensor:
    """All relevance values in canonical order (layers in dict order; per layer w then b), float64 CPU."""
    return torch.cat([v.detach().reshape(-1).to("cpu", torch.float64) for pair in relevance.values() for v in pair])


def _order(flat: Tensor) -> Tensor:
    return torch.sort(flat, descending=True, stable=True).indices


def relevance_order(relevance: Gates) -> list[tuple[str, str, int]]:
    """All elements (layer, "w" | "b", index), most relevant first.

    Ties keep the canonical order: layers in dict order, within a layer the
    weight gates then the bias gates, each by index.
    """
    elements = [(name, kind, i) for name, pair in relevance.items() for kind, v in zip("wb", pair) for i in range(v.numel())]
    return [elements[i] for i in _order(_flat(relevance)).tolist()]


def _unflatten(flat: Tensor, like: Gates) -> Gates:
    """Inverse of `_flat`: a gates dict shaped like `like`, viewing `flat`."""
    chunks = iter(flat.split([v.numel() for pair in like.values() for v in pair]))
    return {name: (next(chunks).view_as(w), next(chunks).view_as(b)) for name, (w, b) in like.items()}


def _curve(confidence: Confidence, relevance: Gates, flat: Tensor, start: Tensor, value: float, step: float) -> tuple[list[float], list[float]]:
    steps = round(1 / step)
    if steps < 1 or abs(steps * step - 1) > 1e-9:
        raise ValueError(f"step must be 1/K for a whole number K ≥ 1, got {step}")
    order = _order(flat)
    n = flat.numel()
    xs, ys = [], []
    for k in range(steps + 1):
        gates = start.clone()
        gates[order[: -(-k * n // steps)]] = value
        xs.append(k / steps)
        ys.append(float(confidence(_unflatten(gates, relevance))))
    return xs, ys


def insertion_curve(confidence: Confidence, relevance: Gates, step: float = 0.05) -> tuple[list[float], list[float]]:
    """Insertion curve (xs = fraction restored in [0, 1], ys = normalised confidence on class c).

    Starts from the model unlearned on c, gates = 1 − relevance (= σ(α[c])),
    and sets the most relevant elements back to pass-through (gate 1.0) step
    by step; xs[-1] = 1 is the pass-through model. A high AUC is good.
    """
    flat = _flat(relevance)
    return _curve(confidence, relevance, flat, 1 - flat, 1.0, step)


def deletion_curve(confidence: Confidence, relevance: Gates, step: float = 0.05) -> tuple[list[float], list[float]]:
    """Deletion curve (xs = fraction closed in [0, 1], ys = normalised confidence on class c).

    Starts from pass-through (all gates 1.0) and closes the most relevant
    elements (gate 0.0) step by step; xs[-1] = 1 has every gate closed. A low
    AUC is good.
    """
    flat = _flat(relevance)
    return _curve(confidence, relevance, flat, torch.ones_like(flat), 0.0, step)


def auc(xs: list[float], ys: list[float]) -> float:
    """Area under the curve by the trapezoid rule over x in [0, 1] (xs ascending, from 0 to 1)."""
    if len(xs) != len(ys) or len(xs) < 2 or xs[0] != 0 or xs[-1] != 1:
        raise ValueError("auc needs matching xs, ys with xs running from 0 to 1")
    return float(sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:])))
