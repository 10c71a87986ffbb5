"""Selective Synaptic Dampening (Foster et al., "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening", arXiv 2308.07707; reference implementation if-loops/selective-synaptic-dampening, `src/ssd.py`,
`ParameterPerturber.calc_importance` and `modify_weight`) and its label-free variant LF-SSD (Foster et al.,
"Loss-Free Machine Unlearning", arXiv 2402.19308; its code is the snippet in the same repository's README).

No training. Per parameter θ_i, an importance on the forget set I_f and one on the whole training set I_D, each
a mean over batches of the gradient of a batch loss: SSD squares the gradient of the cross-entropy with the true
labels (the diagonal of the empirical Fisher); LF-SSD takes the absolute gradient of the batch mean of each
sample's squared logit norm ‖f(x)‖₂², so no label is needed (README: `torch.norm(out, p="fro", dim=1).pow(2)
.mean()`, `imp += grad.abs()`). Where
I_f,i > α·I_D,i the parameter is dampened: θ_i ← β·θ_i with β = min(λ·I_D,i / I_f,i, 1). Everything else is left
exactly as it was. The full-data importance runs over D_f(c) and D_r(c) together (`src/forget_full_class_main.py`,
`full_train_dl`), in batches of one class each: the reference's loader does not shuffle its class-by-class lists,
and since each batch adds the square of its mean gradient, mixed batches give smaller I_D and so another meaning to
α. Here the training split is sorted by class first (`class_ordered`), whatever order it is stored in. Reference
defaults for full-class forgetting (`forget_full_class_strategies.ssd_tuning`): λ = 1,
α = 10 (ViTs: 5), batches of 64.

The importances are computed with the model in eval mode (BatchNorm running statistics, no dropout), as the
reference does. Departures: none in the algorithm; D's classes are in class order with D_f(c) in its place (the
reference puts it last), which changes only the batches where two classes meet. α (`selection_weighting`), known to be sensitive, and λ
(`dampening`) are the searched parameters; LF-SSD keeps SSD's α, λ and selection rule.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench import SingleClassModel, Unlearner, UnlearnTask
from unlearnbench.data import ImageData, Split
from unlearnbench.errors import UserError
from unlearnbench.search_space import Float
from unlearnbench.training import autocast


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SSD's importance loss: mean cross-entropy with the true labels."""
    return F.cross_entropy(logits, labels)


def output_norm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LF-SSD's importance loss: the mean over the batch of ‖logits‖₂²; the labels are ignored."""
    return logits.norm(p=2, dim=1).pow(2).mean()


def importances(model: nn.Module, data: ImageData, split: Split, batch_size: int,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                magnitude: Callable[[torch.Tensor], torch.Tensor] = torch.square) -> dict[str, torch.Tensor]:
    """Per parameter name, the mean over `split`'s batches of `magnitude` (SSD: the square; LF-SSD: the absolute
    value) of the gradient of `loss_fn` (model in eval
    mode; its weights are not changed, but every parameter is set to require gradients)."""
    if len(split) == 0:
        raise UserError("SSD needs samples to compute importances on, and the split it was given is empty.")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    count = 0
    for x, y in data.batches(split, batch_size):
        model.zero_grad(set_to_none=True)
        with autocast(data.device):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                total[name] += magnitude(p.grad.float())
        count += 1
    model.zero_grad(set_to_none=True)
    return {name: value / count for name, value in total.items()}


def class_ordered(split: Split) -> Split:
    """`split` sorted by class, each class's samples in their stored order: batches taken in turn then hold one
    class each, but where two classes meet. A split stored so already is returned as it is (no copy)."""
    if bool((split.labels[1:] >= split.labels[:-1]).all()):
        return split
    return split.subset(torch.argsort(split.labels, stable=True))


@torch.no_grad()
def dampen(model: nn.Module, forget: dict[str, torch.Tensor], full: dict[str, torch.Tensor], selection: float,
           dampening: float) -> int:
    """θ ← min(λ·I_D / I_f, 1)·θ where I_f > α·I_D (α = `selection`, λ = `dampening`), in place; returns how many
    parameters were selected."""
    selected = 0
    for name, p in model.named_parameters():
        chosen = forget[name] > selection * full[name]
        factor = (dampening * full[name] / forget[name]).clamp(max=1.0)
        p.copy_(torch.where(chosen, p * factor.to(p.dtype), p))
        selected += int(chosen.sum())
    return selected


class SelectiveSynapticDampening(Unlearner):
    """Dampen the parameters far more important to D_f(c) than to the whole training set (cross-entropy Fisher)."""

    name = "ssd"
    label = "SSD"
    paper = ('Foster et al., "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening", arXiv '
             '2308.07707')
    venue = "AAAI 2024"
    importance_loss = staticmethod(cross_entropy_loss)
    gradient_magnitude = staticmethod(torch.square)
    parameters = {"selection_weighting": 10.0, "dampening": 1.0, "batch_size": 64}
    family_parameters = {"vit": {"selection_weighting": 5.0}}
    search_space = {"selection_weighting": Float(0.1, 100.0, log=True), "dampening": Float(0.1, 10.0, log=True)}

    def unlearn(self, task: UnlearnTask) -> SingleClassModel:
        params, c = task.params, task.forget_class
        model = task.copy_original()
        size = int(params["batch_size"])
        forget = importances(model, task.data, task.data.train.forget(c), size, self.importance_loss,
                             self.gradient_magnitude)
        full = importances(model, task.data, class_ordered(task.data.train), size, self.importance_loss,
                           self.gradient_magnitude)
        for p in model.parameters():
            p.requires_grad_(False)
        selected = dampen(model, forget, full, params["selection_weighting"], params["dampening"])
        return DampenedModel(model.eval(), c, selected, sum(p.numel() for p in model.parameters()))


class LossFreeSSD(SelectiveSynapticDampening):
    """LF-SSD: SSD with importances |∇ mean ‖logits‖₂²|, so no label is used."""

    name = "lf_ssd"
    label = "LF-SSD"
    paper = 'Foster et al., "Loss-Free Machine Unlearning", arXiv 2402.19308'
    venue = "ICLR 2024 Tiny Papers"
    importance_loss = staticmethod(output_norm_loss)
    gradient_magnitude = staticmethod(torch.abs)


class DampenedModel(SingleClassModel):
    """SSD's result, with the fraction of parameters it dampened as a diagnostic."""

    def __init__(self, net: nn.Module, forget_class: int, selected: int, total: int) -> None:
        super().__init__(net, forget_class)
        self.selected_fraction = selected / max(total, 1)

    def diagnostics(self) -> dict[str, float]:
        return {"dampened_fraction": self.selected_fraction}
