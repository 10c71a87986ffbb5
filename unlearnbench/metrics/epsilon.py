"""Retrain-referenced, per-example distinguishability (`epsilon`), after the NeurIPS 2023 Machine Unlearning
Challenge's evaluation (Triantafillou et al., arXiv 2406.09073): can an attacker who sees one model's output on a
forget example tell whether the model was unlearned or retrained without the class?

For `models` = N unlearned models (the cell's, plus N − 1 reruns of its method from the same original with other
seeds) and N models retrained without class c from N seeds, each forget example x gets N scores per side: the
logit-scaled confidence of its true class, ln p_y − ln(1 − p_y). Every threshold attack on those 2N scores (both
directions) has a false-positive and a false-negative rate; ε̂(x) is the largest
max(ln((1 − δ − FPR) / FNR), ln((1 − δ − FNR) / FPR)) over them, floored at 0. Rates are estimated as
(errors + ½) / (N + 1), so ε̂ stays finite (at most ln((N + ½ − δ(N + 1)) / ½) when the sides separate perfectly).
Rows: `epsilon` (the mean of ε̂ over the examples; 0 = indistinguishable) and `epsilon_quality` (the mean of
exp(−ε̂), in (0, 1]; 1 = indistinguishable). docs/protocol.md says where this departs from the challenge.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
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


def epsilon_between(side_a: list[nn.Module], side_b: list[nn.Module], ctx: MetricContext, index: Tensor,
                    delta: float) -> np.ndarray:
    """ε̂ of the forget examples `index` (positions in D_f(c) of the train split) between two sets of networks."""
    split = ctx.view("train", "forget").subset(index)

    def scores(nets: list[nn.Module]) -> np.ndarray:
        with torch.no_grad():
            return np.stack([logit_confidence(predict_logits(net.eval(), ctx.data, split), split.labels)
                             for net in nets])

    return per_example_epsilon(scores(side_a), scores(side_b), delta)


@register_metric("epsilon", in_all=False, models=4, examples=100, delta=0.01, seed=0)
def epsilon(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows ('train', 'epsilon', mean ε̂ ≥ 0) and ('train', 'epsilon_quality', mean exp(−ε̂) in (0, 1]) over
    `examples` forget examples of the train split (seeded), `models` unlearned against as many retrained models.
    Runs only where a grid names it (it reruns the method and retrains N models per class); no rows where the
    cell cannot be re-run."""
    s = ctx.settings
    n, examples, delta = int(s["models"]), int(s["examples"]), float(s["delta"])
    if n < 2 or examples < 1 or not 0 <= delta < 0.5:
        raise UserError(f"metric_settings.epsilon needs models ≥ 2, examples ≥ 1 and 0 ≤ delta < 0.5; got "
                        f"models={s['models']}, examples={s['examples']}, delta={s['delta']}.")
    if ctx.rerun is None:
        return []
    forget = int(ctx.mask("train", "forget").sum())
    generator = torch.Generator().manual_seed(int(s["seed"]))
    index = torch.randperm(forget, generator=generator)[: min(examples, forget)].sort().values
    unlearned = [ctx.net] + [ctx.rerun(k).for_class(ctx.forget_class) for k in range(1, n)]
    retrained = [ctx.stages.retrained(ctx.forget_class, k) for k in range(n)]
    eps = epsilon_between(unlearned, retrained, ctx, index, delta)
    return [("train", "epsilon", float(eps.mean())), ("train", "epsilon_quality", float(np.exp(-eps).mean()))]
