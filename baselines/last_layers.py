"""CF-k and EU-k (Goel, Prabhu, Sanyal, Lim, Torr and Kumaraguru, "Towards Adversarial Evaluations for Inexact
Machine Unlearning", arXiv 2201.06640; reference implementation meghdadk/SCRUB, `small_scale_unlearning.ipynb`
(the CF-k and EU-k cells, `fk_fientune`), read with its port in xcadet/deepunlearn,
`munl/unlearning/catastrophic_forgetting_k.py` and `exact_unlearning_k.py`).

Both train only the end of the network on D_r(c) and leave the rest exactly as the original had it:
- CF-k (catastrophic forgetting): fine-tune the last k layers and the head on D_r(c); class c fades by attrition.
- EU-k (exact unlearning): first re-initialise the last k layers and the head, then train them on D_r(c), so
  nothing they hold was ever computed from D_f(c) (the frozen layers still were).

What a "layer" is, per family: a residual block of a ResNet (timm's BasicBlock/Bottleneck: ResNet-18 has 8, two per
stage), a transformer block of a ViT (timm's Block), and, in a network with neither (VGG), a convolution with the
BatchNorm, ReLU and pooling that follow it (VGG-16 has 13). The trained part is the last k layers and every module
after them in the network's order: the head (ResNet's pooling and `fc`; ViT's final norm and `head`; VGG's
classifier). The rest (stem or patch embedding, class token and position embedding, earlier layers) is frozen: its
parameters get no gradient and its modules stay in eval mode, so its BatchNorm running statistics never change
either. EU-k re-initialises with the original's own initial weights (the group's seeded initialisation,
`task.new_model()`), parameters and buffers alike. The group's retrained models start from that initialisation
too, so EU-k's re-initialised part starts where retraining's did: metrics comparing with the retrained model
(js_to_retrain, ToW, the probe's gap) may find it closer than a fresh draw (deepunlearn's choice) would leave it.

Reference settings (the SCRUB notebook): plain SGD (no momentum) at lr 0.01 with an ℓ2 pull towards the starting
weights instead of weight decay, the model in eval mode while it trains (BatchNorm running statistics frozen); CF-k
10 epochs, EU-k 30 (the original's training length) with the lr cut after the tenth; ResNet-18's trained part is
its last stage `layer4` (2 blocks) without the classifier; EU-k copies the weights and biases of those layers from a
`model_initial` network. deepunlearn trains its last k stages plus the classifier (default k = 1) and draws the
re-initialised weights anew (Kaiming / Xavier).

Departures: k counts blocks, not stages (k = 2 is the reference's ResNet-18 setting), and the head is always
trained; like the other fine-tuning baselines here, a step budget at a constant lr instead of epochs, SGD with
momentum 0.9 and no ℓ2 pull (AdamW on ViTs), and the shared `norm_statistics` choice for the trained part (CF-k's
default "frozen" is the reference's eval mode). EU-k re-initialises BatchNorm running statistics too (the reference
keeps the original's) and so always normalises with batch statistics: its fresh BatchNorm layers hold no
statistics to freeze.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.vision_transformer import Block
from torch import nn

from unlearnbench import UnlearnTask
from unlearnbench.errors import UserError
from unlearnbench.search_space import Int
from ._finetuning import (FINETUNE_SPACE, FinetunedModel, FinetuningUnlearner, cross_entropy_parts,
                          endless_batches, finetune)

BLOCKS = (BasicBlock, Bottleneck, Block)  # timm's residual and transformer blocks


def layer_starts(model: nn.Module) -> list[str]:
    """The names of the modules that begin each layer, in the network's order: its residual or transformer blocks,
    or, in a network with neither, its convolutions."""
    blocks = [name for name, module in model.named_modules() if isinstance(module, BLOCKS)]
    return blocks or [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def last_layers(model: nn.Module, k: int) -> dict[str, nn.Module]:
    """Name → module for the last `k` layers and every module after them in the network's order (the head)."""
    starts = layer_starts(model)
    if not 1 <= k <= len(starts):
        raise UserError(f"k = {k} is not a number of layers of this {type(model).__name__}; choose 1 to {len(starts)}.")
    modules = list(model.named_modules())
    first = [name for name, _ in modules].index(starts[-k])
    return dict(modules[first:])


def freeze_all_but(model: nn.Module, trained: dict[str, nn.Module]) -> list[nn.Module]:
    """Let only the parameters of `trained` modules get gradients; return the frozen modules (every module outside
    `trained` that contains none of them), which the caller keeps in eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in trained.values():
        for p in module.parameters(recurse=False):
            p.requires_grad_(True)
    ancestors = {name.rsplit(".", i)[0] for name in trained for i in range(1, name.count(".") + 1)} | {""}
    return [module for name, module in model.named_modules() if name not in trained and name not in ancestors]


@torch.no_grad()
def reinitialise(trained: dict[str, nn.Module], fresh: nn.Module) -> None:
    """Copy every parameter and buffer of the `trained` modules from the same module of `fresh`."""
    for name, module in trained.items():
        source = fresh.get_submodule(name)
        for key, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            tensor.copy_(getattr(source, key))


class CatastrophicForgettingK(FinetuningUnlearner):
    """CF-k: fine-tune the last k layers and the head on D_r(c), the rest frozen."""

    name = "cf_k"
    label = "CF-k"
    paper = 'Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", arXiv 2201.06640'
    venue = "arXiv 2022"
    from_scratch: ClassVar[bool] = False  # EU-k: re-initialise the trained part first
    parameters = {"optimizer": "sgd", "lr": 0.01, "steps": 100, "batch_size": 64, "k": 1, "norm_statistics": "frozen"}
    family_parameters = {"vit": {"optimizer": "adamw", "lr": 3e-4, "norm_statistics": "batch"}}
    search_space = {**{k: v for k, v in FINETUNE_SPACE.items() if k != "stop_acc"}, "k": Int(1, 4)}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        c = task.forget_class
        model = task.copy_original()
        trained = last_layers(model, int(task.params["k"]))
        if self.from_scratch:
            reinitialise(trained, task.new_model())
        frozen = freeze_all_but(model, trained)
        retain = endless_batches(task.data, task.data.train.retain(c), task.params["batch_size"], task.generator,
                                 f"training set without class {c}")

        def loss(net):
            for module in frozen:
                module.eval()  # `finetune` put the whole model in train mode
            return cross_entropy_parts(net, next(retain))[0]

        outcome = finetune(model, loss, task)
        return FinetunedModel(model.eval(), c, outcome)


class ExactUnlearningK(CatastrophicForgettingK):
    """EU-k: re-initialise the last k layers and the head, then train them on D_r(c), the rest frozen."""

    name = "eu_k"
    label = "EU-k"
    paper = 'Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", arXiv 2201.06640'
    venue = "arXiv 2022"
    from_scratch = True
    parameters = {**CatastrophicForgettingK.parameters, "steps": 200, "norm_statistics": "batch"}
    search_space = {k: v for k, v in CatastrophicForgettingK.search_space.items() if k != "norm_statistics"}
    parameter_ranges = {**CatastrophicForgettingK.parameter_ranges, "norm_statistics": (
        lambda v: v == "batch", "'batch' (its re-initialised BatchNorm layers hold no statistics to freeze)")}
