"""ZRF on the forget set D_f(c): how close the unlearned model's outputs are to a randomly initialised model's,
by the protocol's definition and by the bad-teaching repository's (legacy)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import MetricContext, register_metric
from .distance import float64_pair, log_softmax64, mean_js, softmax64


def zrf(p_unlearned: Tensor, q_random: Tensor) -> float:
    """ZRF score (protocol definition): 1 − mean_i JS(p_i‖q_i), unitless, in [1 − ln 2, 1].

    p_unlearned: the unlearned model's probabilities on the forget samples;
    q_random: a randomly initialised model's (same architecture, fixed seed).
    1 means the unlearned model answers like the random model.
    """
    return 1.0 - mean_js(p_unlearned, q_random)


def zrf_legacy(log_p: Tensor, log_q: Tensor) -> float:
    """ZRF as computed by the bad-teaching repository (`UnLearningScore`/`JSDiv`), unitless, from the two models'
    log-probabilities (rows of log-softmax).

    That code evaluates `0.5*F.kl_div(log p, m) + 0.5*F.kl_div(log q, m)` with
    the default 'mean' reduction, i.e. KL(m‖p)-style terms averaged over all
    N×C entries rather than summed over classes and averaged over samples:

        zrf_legacy = 1 − (1/(N·C)) Σ_i Σ_j [½ m_ij ln(m_ij/p_ij) + ½ m_ij ln(m_ij/q_ij)],  m = ½(p+q).

    Departure: the reference takes ln of float32 softmax probabilities, so a probability that underflows to 0
    makes its result −inf (which would fail the cell here); this reads ln p and ln q from log-softmax in float64,
    which gives the same value wherever the reference's is finite and a finite one where it is not.
    Offered for comparison only; `zrf` is the default.
    """
    log_p, log_q = float64_pair(log_p, log_q)
    if (log_p > 1e-9).any() or (log_q > 1e-9).any():
        raise ValueError("zrf_legacy takes log-probabilities (≤ 0), not probabilities.")
    m = (log_p.exp() + log_q.exp()) / 2
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    terms = 0.5 * m * (log_m - log_p) + 0.5 * m * (log_m - log_q)
    return 1.0 - float(terms.mean())


@register_metric("zrf", seed=0, splits=["test", "train"], legacy=False)
def zrf_score(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (split, 'zrf', ZRF in [1 − ln 2, 1]) per configured split, plus (split, 'zrf_legacy', value) when
    `legacy` is set.

    The random model is `ctx.stages.random_model(seed)`: the backbone of this (dataset, backbone, seed) group,
    initialised from a seed derived from the `seed` setting (never an original's initialisation or the layers
    a method draws with `task.new_model()`) and never trained, shared by every method and class of the group.
    """
    random_net = ctx.stages.random_model(int(ctx.settings["seed"]))
    rows = []
    for split in ctx.settings["splits"]:
        forget, random_forget = ctx.logits(split, "forget"), ctx.logits(split, "forget", model=random_net)
        rows.append((split, "zrf", zrf(softmax64(forget), softmax64(random_forget))))
        if ctx.settings["legacy"]:
            rows.append((split, "zrf_legacy", zrf_legacy(log_softmax64(forget), log_softmax64(random_forget))))
    return rows
