"""Top-1 accuracy on the retain set D_r(c) and the forget set D_f(c), on the test and train splits."""
from __future__ import annotations

from ..training import accuracy
from .base import MetricContext, register_metric


@register_metric("accuracy", splits=["test", "train"])
def retain_forget_accuracy(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (split, 'acc_retain' | 'acc_forget', accuracy in [0, 1]) for each configured split."""
    rows = []
    for split in ctx.settings["splits"]:
        for view, metric in (("retain", "acc_retain"), ("forget", "acc_forget")):
            rows.append((split, metric, accuracy(ctx.logits(split, view), ctx.labels(split, view))))
    return rows
