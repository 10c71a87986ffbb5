"""Relearn time: epochs of ordinary training on random training samples until the forget class is regained."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..data import ImageData, Split
from ..errors import UserError
from ..store import stable_hash
from ..training import accuracy, predict_logits
from .base import MetricContext, register_metric
from .relearn import relearn_time


def epoch_sampler(data: ImageData, split: Split, samples: int, batch_size: int,
                  seed: int) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """`sample_epoch(e)`: normalised (x, y) batches of `samples` examples drawn without replacement from the whole
    of `split` (every class), a fresh draw per epoch that depends only on (`seed`, e)."""

    def sample_epoch(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(int(stable_hash([seed, epoch]), 16) % 2**63)
        index = torch.randperm(len(split), generator=generator)[:samples]
        return data.batches(split.subset(index), batch_size)

    return sample_epoch


class FrozenNormStatistics(nn.Module):
    """Wraps a network so that `train()` leaves every BatchNorm layer in eval mode: running statistics stay fixed
    while its affine parameters still train. Batch statistics would otherwise rescale channels a per-channel
    gate has closed (WF-Net), so every method relearns under this rule."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> "FrozenNormStatistics":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


@register_metric("relearn", optimizer="sgd", lr=0.01, momentum=0.9, batch_size=50, samples_per_epoch=500,
                 max_epochs=100, eval_split="val", freeze_batchnorm_stats=True, seed=0)
def relearn(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (eval_split, 'relearn_epochs', epochs in 0…max_epochs), (eval_split, 'relearned', 1.0 or 0.0) and the
    relearn curve (eval_split, 'relearn_curve_<e>', forget accuracy as a fraction after e epochs) for e = 0 (before
    training) … relearn_epochs: the curve stops where the class regained the target.

    Trains `ctx.model.trainable_copy(c)` (WF-Net: the class-c row stays selected, backbone weights train) with a
    fixed optimiser and learning rate on `samples_per_epoch` samples drawn per epoch from the full training
    split, until its accuracy on the forget samples of `eval_split` (default the validation split, so the test
    split is never used for a stopping decision) reaches the original model's accuracy there. The draws depend
    on (seed setting, group seed, c) only, so every method relearns class c from the same samples.
    """
    s = ctx.settings
    split = s["eval_split"]
    if split not in ("train", "val", "test"):
        raise UserError(f"relearn eval_split must be train, val or test, got '{split}'.")
    forget = ctx.view(split, "forget")
    target = accuracy(ctx.logits(split, "forget", model=ctx.stages.original()), forget.labels)
    net = ctx.model.trainable_copy(ctx.forget_class)
    if s["freeze_batchnorm_stats"]:
        net = FrozenNormStatistics(net)
    seed = int(stable_hash([s["seed"], ctx.stages.seed, ctx.forget_class]), 16) % 2**63
    result = relearn_time(
        net,
        epoch_sampler(ctx.data, ctx.data.train, int(s["samples_per_epoch"]), int(s["batch_size"]), seed),
        lambda model: accuracy(predict_logits(model, ctx.data, forget), forget.labels),
        target,
        lr=float(s["lr"]), optimizer=s["optimizer"], momentum=float(s["momentum"]), max_epochs=int(s["max_epochs"]),
    )
    curve = [(split, f"relearn_curve_{epoch}", value) for epoch, value in enumerate(result.curve)]
    return [(split, "relearn_epochs", float(result.epochs)), (split, "relearned", float(result.relearned)), *curve]
