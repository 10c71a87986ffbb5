"""Relearn time (RT): epochs of ordinary training on random training samples until the forget class regains the
original model's accuracy; `relearn_time` is the loop, the `relearn` metric runs it on one unlearned model."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageData, Split
from ..config import above, at_least, check_ranges, one_of
from ..errors import UserError, did_you_mean
from ..store import derive_seed
from ..training import OPTIMIZERS, accuracy, make_optimizer, predict_logits
from .base import MetricContext, register_metric


@dataclass(frozen=True)
class RelearnResult:
    """Outcome of one relearn run.

    epochs: training epochs until the forget accuracy reached the target
        (0 if it already did; `max_epochs` if it never did).
    relearned: whether the target was reached within `max_epochs`.
    curve: forget accuracy (fraction in [0, 1]) before training (curve[0]) and
        after each epoch; always `epochs + 1` entries.
    """

    epochs: int
    relearned: bool
    curve: list[float]
    diverged: bool = False  # training made the model's outputs non-finite: it never relearns (epochs = the cap)


def relearn_time(
    model: nn.Module,
    sample_epoch: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    forget_accuracy: Callable[[nn.Module], float],
    target: float,
    *,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    max_epochs: int = 100,
) -> RelearnResult:
    """Train `model` in place one epoch at a time until its forget accuracy reaches `target`.

    model: logits = model(x); trained in place (pass a copy). Only parameters
        with requires_grad are optimised (for WF-Net: the selected-class model,
        α frozen, backbone weights trainable). Its train/eval flag is restored
        at the end.
    sample_epoch(e): the (x, y) batches of epoch e (0-based), already on the
        model's device; per the protocol, 500 samples drawn at random from the
        full training set (all classes) each epoch.
    forget_accuracy(model): forget-class accuracy in [0, 1], NaN where the
        model's outputs are not finite; it sets eval mode itself, and train mode
        is set again before the next epoch.
    target: the original model's forget accuracy; reached when accuracy ≥ target.
    optimizer: one of the trainer's optimisers (`training.OPTIMIZERS`), built by
        `training.make_optimizer` with a fixed `lr`, no weight decay and no
        Nesterov step; `momentum` applies to "sgd" only.

    The accuracy is checked before any training (epoch 0). Relearning that
    diverges (a NaN accuracy after an epoch) never regains the class: the result
    is (max_epochs, False, diverged), the rest of the curve 0.0 (a non-finite
    output classifies nothing), as the protocol counts a class that never
    relearns at the cap. A model with no
    trainable parameter cannot change: if it is below target the result is
    (max_epochs, False) and the curve repeats the epoch-0 accuracy for every
    epoch without running or re-evaluating anything.
    """
    if optimizer not in OPTIMIZERS:
        raise UserError(f"Unknown relearn optimizer '{optimizer}'{did_you_mean(optimizer, OPTIMIZERS)}; choose one of {', '.join(OPTIMIZERS)}.")
    was_training = model.training
    try:
        return _relearn(model, sample_epoch, forget_accuracy, target, lr, optimizer, momentum, max_epochs)
    finally:
        model.train(was_training)


def _relearn(
    model: nn.Module,
    sample_epoch: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    forget_accuracy: Callable[[nn.Module], float],
    target: float,
    lr: float,
    optimizer: str,
    momentum: float,
    max_epochs: int,
) -> RelearnResult:
    curve = [float(forget_accuracy(model))]
    if curve[0] >= target:
        return RelearnResult(0, True, curve)
    if not any(p.requires_grad for p in model.parameters()):
        return RelearnResult(max_epochs, False, curve * (max_epochs + 1))
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum=momentum)
    for epoch in range(max_epochs):
        model.train()
        for x, y in sample_epoch(epoch):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        now = float(forget_accuracy(model))
        if math.isnan(now):  # diverged (weights or outputs non-finite): it cannot come back
            return RelearnResult(max_epochs, False, curve + [0.0] * (max_epochs - epoch), diverged=True)
        curve.append(now)
        if curve[-1] >= target:
            return RelearnResult(epoch + 1, True, curve)
    return RelearnResult(max_epochs, False, curve)


def epoch_sampler(data: ImageData, split: Split, samples: int, batch_size: int,
                  seed: int) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """`sample_epoch(e)`: normalised (x, y) batches of `samples` examples drawn without replacement from the whole
    of `split` (every class), a fresh draw per epoch that depends only on (`seed`, e)."""

    def sample_epoch(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(derive_seed([seed, epoch], bits=63))
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


def check_settings(s: dict) -> None:
    check_ranges(s, {"optimizer": one_of(OPTIMIZERS), "lr": above(0), "momentum": at_least(0),
                     "batch_size": at_least(1), "samples_per_epoch": at_least(1), "max_epochs": at_least(1),
                     "eval_split": one_of(("train", "val", "test"))}, "metric_settings.relearn.{}".format)


@register_metric("relearn", check=check_settings, optimizer="sgd", lr=0.01, momentum=0.9, batch_size=50,
                 samples_per_epoch=500, max_epochs=100, eval_split="val", freeze_batchnorm_stats=True, seed=0)
def relearn(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows (eval_split, 'relearn_epochs', epochs in 0…max_epochs), (eval_split, 'relearned', 1.0 or 0.0),
    (eval_split, 'relearn_diverged', 1.0 where relearning at this optimiser and rate made the model's outputs
    non-finite, so it counts as never relearned) and the relearn curve (eval_split, 'relearn_curve_<e>', forget
    accuracy as a fraction after e epochs) for e = 0 (before training) … relearn_epochs: the curve stops where the
    class regained the target. An unlearned model whose outputs are non-finite before relearning fails the cell.

    Trains `ctx.model.trainable_copy(c)` (WF-Net: the class-c row stays selected, backbone weights train) with a
    fixed optimiser and learning rate on `samples_per_epoch` samples drawn per epoch from the full training
    split, until its accuracy on the forget samples of `eval_split` (default the validation split, so the test
    split is never used for a stopping decision) reaches the original model's accuracy there. The draws depend
    on (seed setting, group seed, c) only, so every method relearns class c from the same samples.
    """
    s = ctx.settings
    split = s["eval_split"]
    forget = ctx.view(split, "forget")
    if len(forget) == 0:  # (an empty set's accuracy is NaN, which relearning would read as diverged)
        raise UserError(f"relearn: class {ctx.forget_class} has no {split} samples to measure relearning on.")
    target = accuracy(ctx.logits(split, "forget", model=ctx.stages.original()), forget.labels)
    net = ctx.model.trainable_copy(ctx.forget_class)
    if s["freeze_batchnorm_stats"]:
        net = FrozenNormStatistics(net)
    seed = derive_seed([s["seed"], ctx.stages.seed, ctx.forget_class], bits=63)
    device = ctx.data.device
    ctx.logits(split, "forget")  # the unlearned model's own outputs: non-finite ones fail the cell, as for any metric

    def forget_accuracy(model: nn.Module) -> float:  # NaN once relearning has made the outputs non-finite
        logits = predict_logits(model, ctx.data, forget)
        return accuracy(logits, forget.labels) if bool(torch.isfinite(logits).all()) else math.nan

    # dropout in train mode (ImageNet's VGG-16) draws from the global RNG: seeded here, and restored after, so its
    # draws depend on the cell alone, not on what the worker ran before (a stage model built mid-cell reseeds it)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        result = relearn_time(
            net,
            epoch_sampler(ctx.data, ctx.data.train, int(s["samples_per_epoch"]), int(s["batch_size"]), seed),
            forget_accuracy,
            target,
            lr=float(s["lr"]), optimizer=s["optimizer"], momentum=float(s["momentum"]),
            max_epochs=int(s["max_epochs"]),
        )
    curve = [(split, f"relearn_curve_{epoch}", value) for epoch, value in enumerate(result.curve)]
    return [(split, "relearn_epochs", float(result.epochs)), (split, "relearned", float(result.relearned)),
            (split, "relearn_diverged", float(result.diverged)), *curve]
