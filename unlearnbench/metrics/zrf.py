"""ZRF on the forget set D_f(c): how close the unlearned model's outputs are to a randomly initialised model's,
by the protocol's definition and by the bad-teaching repository's (legacy)."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import MetricContext, register_metric
from .distance import float64_pair, mean_js, softmax64


def zrf(p_unlearned: Tensor, q_random: Tensor) -> float:
    """ZRF score (protocol definition): 1 − mean_i JS(p_i‖q_i), unitless, in [1 − ln 2, 1].

    p_unlearned: the unlearned model's probabilities on the forget samples;
    q_random: a randomly initialised model's (same architecture, fixed seed).
    1 means the unlearned model answers like the random model.
    """
    return 1.0 - mean_js(p_unlearned, q_random)


def zrf_legacy(p: Tensor, q: Tensor) -> float:
    """ZRF as computed by the bad-teaching repository (`UnLearningScore`/`JSDiv`), unitless.

    That code evaluates `0.5*F.kl_div(log p, m) + 0.5*F.kl_div(log q, m)` with
    the default 'mean' reduction, i.e. KL(m‖p)-style terms averaged over all
    N×C entries rather than summed over classes and averaged over samples:

        zrf_legacy = 1 − (1/(N·C)) Σ_i Σ_j [½ m_ij ln(m_ij/p_ij) + ½ m_ij ln(m_ij/q_ij)],  m = ½(p+q).

    As in the original, an entry with p_ij = 0 (or q_ij = 0) while m_ij > 0 makes
    the result −inf. Offered for comparison only; `zrf` is the default.
    """
    p, q = float64_pair(p, q)
    m = (p + q) / 2
    terms = 0.5 * (torch.xlogy(m, m) - torch.xlogy(m, p)) + 0.5 * (torch.xlogy(m, m) - torch.xlogy(m, q))
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
        p = softmax64(ctx.logits(split, "forget"))
        q = softmax64(ctx.logits(split, "forget", model=random_net))
        rows.append((split, "zrf", zrf(p, q)))
        if ctx.settings["legacy"]:
            rows.append((split, "zrf_legacy", zrf_legacy(p, q)))
    return rows
