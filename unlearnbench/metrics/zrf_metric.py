"""ZRF on the forget set D_f(c): how close the unlearned model's outputs are to a randomly initialised model's."""
from __future__ import annotations

from .base import MetricContext, register_metric
from .divergence import softmax64, zrf, zrf_legacy


@register_metric("zrf", seed=0, splits=["test", "train"], legacy=False)
def zrf_score(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (split, 'zrf', ZRF in [1 − ln 2, 1]) per configured split, plus (split, 'zrf_legacy', value) when
    `legacy` is set.

    The random model is `ctx.stages.random_model(seed)`: the backbone of this (dataset, backbone, seed) group,
    initialised from the `seed` setting and never trained, shared by every method and class of the group.
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
