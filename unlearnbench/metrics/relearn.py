"""Relearn time (RT): epochs of ordinary training needed to regain the original forget-class accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError, did_you_mean

OPTIMIZERS = ("sgd", "adam")


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
    forget_accuracy(model): forget-class accuracy in [0, 1]; it sets eval mode
        itself, and train mode is set again before the next epoch.
    target: the original model's forget accuracy; reached when accuracy ≥ target.
    optimizer: "sgd" (with `momentum`) or "adam" (momentum ignored); lr fixed.

    The accuracy is checked before any training (epoch 0). A model with no
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
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return RelearnResult(max_epochs, False, curve * (max_epochs + 1))
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(params, lr=lr)
    for epoch in range(max_epochs):
        model.train()
        for x, y in sample_epoch(epoch):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        curve.append(float(forget_accuracy(model)))
        if curve[-1] >= target:
            return RelearnResult(epoch + 1, True, curve)
    return RelearnResult(max_epochs, False, curve)
