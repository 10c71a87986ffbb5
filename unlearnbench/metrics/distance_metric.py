"""Distance to the retrained model: mean Jensen–Shannon divergence between the two models' outputs."""
from __future__ import annotations

from .base import MetricContext, register_metric
from .divergence import mean_js, softmax64


@register_metric("js_to_retrain", splits=["test"], train_missing=False)
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
