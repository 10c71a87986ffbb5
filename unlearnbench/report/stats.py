"""The statistics behind every report cell: Student-t confidence intervals of a mean, the Wilcoxon signed-rank
test of paired values (scipy) and Holm's step-down adjustment of a family of p-values. Why these: docs/protocol.md,
"Confidence intervals and paired tests"."""
from __future__ import annotations

import numpy as np
from scipy import stats

LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # a Holm-adjusted p below this marks a difference


def t_half_width(sd, n, level: float = LEVEL) -> np.ndarray:
    """Half-width of the two-sided `level` Student-t interval of a mean: t_{(1+level)/2, n−1} · sd / √n, element-wise
    over arrays of sample standard deviations (ddof 1) and sizes; NaN where n < 2."""
    sd, n = np.asarray(sd, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)


def signed_rank_p(x, y) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test that the paired differences x − y are centred on 0.

    Zero differences are dropped (Wilcoxon's convention); differences equal to 12 significant digits of the
    larger |value| tie. The p-value is scipy's `wilcoxon(method="auto")`: exact for ≤ 13 differences (all 2^n sign
    flips of the mid-ranks, computed here at once, `_sign_flip_p`: scipy's per-call overhead made it most of a
    report's time, whose tests pair 1 to 3 values), scipy's exact null distribution for ≤ 50 without ties, the
    normal approximation beyond. 1.0 when every difference is zero, NaN when there is no pair."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if not len(x):
        return float("nan")
    scale = max(np.abs(x).max(), np.abs(y).max())
    d = np.round((x - y) / scale, 12) if scale > 0 else np.zeros_like(x)
    if not d.any():
        return 1.0
    if len(d) <= 13:
        return _sign_flip_p(d[d != 0])
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto").pvalue)


def _sign_flip_p(nonzero: np.ndarray) -> float:
    """The p-value scipy's `wilcoxon(method="auto")` gives for ≤ 13 differences (its exact permutation test over all
    2^n sign flips with ties or zeros, and without them its exact null distribution, which is the same
    enumeration), computed at once as one matrix product rather than one statistic per flip (scipy took about a
    second per test at n = 12 with ties, minutes for a report's thousands). Zeros flip to themselves,
    so leaving them out keeps every fraction; the statistic is the rank sum of the positive differences, and values
    within scipy's relative tolerance (100 ε) of the observed one count as equal."""
    ranks = stats.rankdata(np.abs(nonzero))
    observed = ranks[nonzero > 0].sum()
    flips = (np.arange(2 ** len(nonzero))[:, None] >> np.arange(len(nonzero))) & 1
    null = flips @ ranks
    gamma = abs(np.finfo(float).eps * 100 * observed)
    less, greater = np.mean(null <= observed + gamma), np.mean(null >= observed - gamma)
    return float(min(1.0, 2 * min(less, greater)))


def holm(p) -> np.ndarray:
    """Holm's step-down adjustment of one family of p-values (NaN entries are not tests and stay NaN): the k-th
    smallest of m becomes max over j ≤ k of min(1, (m − j + 1) · p_(j))."""
    p = np.asarray(p, float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted
