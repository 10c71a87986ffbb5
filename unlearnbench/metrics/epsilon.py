"""Retrain-referenced, per-example distinguishability (`epsilon`), after the NeurIPS 2023 Machine Unlearning
Challenge's evaluation (Triantafillou et al., arXiv 2406.09073): can an attacker who sees one model's output on a
forget example tell whether the model was unlearned or retrained without the class?

For `models` = N unlearned models (the cell's, plus N − 1 reruns of its method from the same original with other
seeds) and N models retrained without class c from N other seeds, each forget example x gets N scores per side: the
logit-scaled confidence of its true class, ln p_y − ln(1 − p_y). Every threshold attack on those 2N scores (both
directions) has a false-positive and a false-negative rate; ε̂(x) is the largest
max(ln((1 − δ − FPR) / FNR), ln((1 − δ − FNR) / FPR)) over them, floored at 0, rates estimated as
(errors + ½) / (N + 1) so that ε̂ stays finite. With N models per side ε̂ is large even by chance (any 2N distinct
scores separate somewhat), so the rows are read against its exact chance level ε₀(N, δ), the mean of ε̂ over all
C(2N, N) equally likely rank orders of two sides drawn from one distribution: `epsilon` (the mean of ε̂ over
the examples), `epsilon_chance` (ε₀) and `epsilon_quality` = 1 − (mean ε̂ − ε₀) / (ε_max − ε₀), clipped to [0, 1]
(1: no more distinguishable than chance; 0: every example perfectly separated). docs/protocol.md says where this
departs from the challenge.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
from torch import Tensor, nn

from ..config import at_least, check_ranges
from ..training import predict_logits
from .base import MetricContext, register_metric


def logit_confidence(logits: Tensor, labels: Tensor) -> np.ndarray:
    """ln p_y − ln(1 − p_y) per row, float64, computed from the logits without forming p (stable when p_y → 1)."""
    logits = logits.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.int64)
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf")).logsumexp(dim=1)
    return (true - others).numpy()


def per_example_epsilon(a: np.ndarray, b: np.ndarray, delta: float) -> np.ndarray:
    """ε̂ per example from scores a [N_a, M] (one side's models) and b [N_b, M] (the other's): the largest ε of any
    threshold attack on each column, both directions, rates smoothed as (errors + ½) / (n + 1); float64 [M] ≥ 0."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"expected score matrices [N_a, M] and [N_b, M], got {a.shape} and {b.shape}")
    both = np.concatenate([a, b])  # every threshold worth trying: each score itself (rule "a if score ≥ t")
    eps = np.zeros(a.shape[1])
    for t in np.concatenate([both, np.full((1, a.shape[1]), np.inf)]):
        a_below = (a < t).sum(0)  # a judged "b"
        b_above = (b >= t).sum(0)  # b judged "a"
        for fn, fp in ((a_below, b_above), (len(a) - a_below, len(b) - b_above)):  # the rule, and its reverse
            fnr, fpr = (fn + 0.5) / (len(a) + 1), (fp + 0.5) / (len(b) + 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                candidate = np.maximum(np.log(np.clip((1 - delta - fpr) / fnr, 1e-300, None)),
                                       np.log(np.clip((1 - delta - fnr) / fpr, 1e-300, None)))
            eps = np.maximum(eps, candidate)
    return eps


def epsilon_bound(n: int, delta: float) -> float:
    """The largest ε̂ with n models per side: both sides separated perfectly (no error on either)."""
    rate = 0.5 / (n + 1)
    return float(np.log((1 - delta - rate) / rate))


@functools.lru_cache(maxsize=None)
def chance_epsilon(n: int, delta: float) -> float:
    """ε₀: the mean ε̂ over all C(2n, n) rank orders of n + n distinct scores, each equally likely when both sides
    come from one distribution (exact; 12,870 orders for n = 8)."""
    ranks = np.arange(2 * n, dtype=float)
    sides = [(np.array(a), np.setdiff1d(ranks, a)) for a in itertools.combinations(ranks, n)]
    a = np.stack([s[0] for s in sides], axis=1)
    b = np.stack([s[1] for s in sides], axis=1)
    return float(per_example_epsilon(a, b, delta).mean())


def epsilon_between(side_a: list[nn.Module], side_b: list[nn.Module], ctx: MetricContext, index: Tensor,
                    delta: float) -> np.ndarray:
    """ε̂ of the forget examples `index` (positions in D_f(c) of the train split) between two sets of networks."""
    split = ctx.view("train", "forget").subset(index)

    def scores(nets: list[nn.Module]) -> np.ndarray:
        with torch.no_grad():
            return np.stack([logit_confidence(predict_logits(net.eval(), ctx.data, split), split.labels)
                             for net in nets])

    return per_example_epsilon(scores(side_a), scores(side_b), delta)


def replicates(settings: dict) -> tuple[int, range]:
    """Reruns 1 … N − 1 of the cell's method, retrained replicates N … 2N − 1 (N = `models`)."""
    n = int(settings["models"])
    return n - 1, range(n, 2 * n)


def check_settings(s: dict) -> None:
    check_ranges(s, {"models": at_least(2), "examples": at_least(1), "delta": (lambda v: 0 <= v < 0.5, "in [0, 0.5)")},
                 "metric_settings.epsilon.{}".format)


@register_metric("epsilon", in_all=False, replicates=replicates, check=check_settings, models=4, examples=100,
                 delta=0.01, seed=0)
def epsilon(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows ('train', 'epsilon', mean ε̂ ≥ 0), ('train', 'epsilon_chance', ε₀) and ('train', 'epsilon_quality',
    in [0, 1]) over `examples` forget examples of the train split (seeded): `models` unlearned models (the cell's
    and reruns 1 … N − 1) against retrained replicates N … 2N − 1 (never the reruns' own, which the `retrain`
    method's reruns are). Runs only where a grid names it; no rows where the cell cannot be re-run."""
    s = ctx.settings
    n, examples, delta = int(s["models"]), int(s["examples"]), float(s["delta"])
    if ctx.rerun is None:
        return []
    forget = int(ctx.mask("train", "forget").sum())
    generator = torch.Generator().manual_seed(int(s["seed"]))
    index = torch.randperm(forget, generator=generator)[: min(examples, forget)].sort().values
    reruns, reference = replicates(s)  # what the plan counts is what runs
    unlearned = [ctx.net] + [ctx.rerun(k).for_class(ctx.forget_class) for k in range(1, reruns + 1)]
    retrained = [ctx.stages.retrained(ctx.forget_class, k) for k in reference]
    mean = float(epsilon_between(unlearned, retrained, ctx, index, delta).mean())
    chance, bound = chance_epsilon(n, delta), epsilon_bound(n, delta)
    quality = min(1.0, max(0.0, 1 - (mean - chance) / (bound - chance)))
    return [("train", "epsilon", mean), ("train", "epsilon_chance", chance), ("train", "epsilon_quality", quality)]
