"""Jensen–Shannon divergence between output distributions, ZRF and the bad-teaching ZRF variant.

Every function takes probability rows [N, C] (softmax already applied; use
`softmax64` on logits) and computes in float64 with natural logarithms (nats).
"""
from __future__ import annotations

import torch
from torch import Tensor


def softmax64(logits: Tensor) -> Tensor:
    """Softmax over the last dimension in float64: logits [N, C] → probabilities [N, C]."""
    return torch.softmax(logits.detach().to(torch.float64), dim=-1)


def _pair64(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    if p.dim() != 2 or p.shape != q.shape:
        raise ValueError(f"expected two probability matrices of equal shape [N, C], got {tuple(p.shape)} and {tuple(q.shape)}")
    return p.detach().to(torch.float64), q.detach().to(torch.float64)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Per-row Jensen–Shannon divergence in nats, float64 [N], each in [0, ln 2].

    JS(p‖q) = ½KL(p‖m) + ½KL(q‖m) with m = ½(p+q); terms with p_j = 0 count 0
    exactly (0·log 0 = 0), so one-hot rows give finite values. JS(p, p) is
    exactly 0; rounding below 0 is clamped to 0.
    """
    p, q = _pair64(p, q)
    m = (p + q) / 2
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0.0)


def mean_js(p: Tensor, q: Tensor) -> float:
    """Mean over rows of the Jensen–Shannon divergence between p and q, in nats (e.g. unlearned vs retrained model)."""
    return float(js_divergence(p, q).mean())


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
    p, q = _pair64(p, q)
    m = (p + q) / 2
    terms = 0.5 * (torch.xlogy(m, m) - torch.xlogy(m, p)) + 0.5 * (torch.xlogy(m, m) - torch.xlogy(m, q))
    return 1.0 - float(terms.mean())
