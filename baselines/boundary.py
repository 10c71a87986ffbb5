"""Boundary Shrink and Boundary Expanding (Chen, Gao, Liu, Peng and Wang, "Boundary Unlearning: Rapid Forgetting of
Deep Networks via Shifting the Decision Boundary", CVPR 2023, arXiv 2303.11570; the authors' code,
Boundary-Unlearning-Code.zip, is shared through Dropbox and was read in a public copy; the implementation read
closely is the port in OPTML-Group/Unlearn-Saliency, `Classification/unlearn/boundary_sh.py` and `boundary_ex.py`).

Both move the decision boundary instead of scrubbing weights, and train on D_f(c) alone.

- Shrink: the frozen original takes one FGSM step of size ε (`bound`, in pixel units of [0, 1]) from each
  forget image, x' = round(255·clip(x + ε·sign ∇_x CE(f(x), c), 0, 1)) / 255; the class the frozen model predicts
  for x' is the image's nearest wrong label, and the original is fine-tuned on D_f(c) with those labels.
- Expanding: the classifier head gets a shadow (K+1)-th output; the whole network is fine-tuned on D_f(c) labelled
  with the shadow class, so D_f's features move into a region of its own; the shadow output is then pruned, and the
  returned model has the original K outputs.
The head is the network's last `nn.Linear` in module order: timm ResNet's `fc`, timm ViT's `head`, VGG's last
classifier layer. Reference settings: ε = 0.1, SGD at lr 1e-5 with momentum 0.9 for 10 epochs over D_f (the authors'
code; the port uses its shared `unlearn_lr`, default 0.01, with weight decay 5e-4); the shadow row is initialised
Xavier-normal with a zero bias (the authors' code; the port keeps `nn.Linear`'s default initialisation).

Departures: Shrink never takes the true class as the nearest label: the argmax over the adversarial logits excludes
c, as the paper describes (both codes take the plain argmax, so an image the step does not flip is trained towards
c); the labels are computed once before fine-tuning (the references recompute them for every batch, which gives the
same labels when, as here, D_f is not augmented). The port does not prune the shadow output (its model keeps K+1
outputs); here it is pruned, as in the paper and the authors' code. Like the other fine-tuning baselines here: a
step budget instead of epochs (60 by default: 10 passes over a mnist5k class of about 360 images in batches of 64),
lr 0.01 (the authors' 1e-5 lies below the shared range), SGD with momentum 0.9 and no weight decay (AdamW on ViTs),
the shared `norm_statistics` choice for BatchNorm (the references train in train mode: "batch"); Shrink stops early
with the held-out rule on the validation split's class c (`stop_acc`), Expanding runs its whole budget (its stopping
rule would see the widened model, whose D_f predictions go to the shadow class before pruning).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench import UnlearnTask
from unlearnbench.data import ImageData, Split
from unlearnbench.models import classifier_head
from unlearnbench.search_space import Float
from unlearnbench.training import autocast, eval_batch_size
from ._finetuning import (FINETUNE_SPACE, FinetunedModel, FinetuningUnlearner, cross_entropy_parts,
                          endless_batches, finetune, held_out_forget_set)


def nearest_wrong_labels(model: nn.Module, data: ImageData, split: Split, bound: float) -> torch.Tensor:
    """Per image of `split`, the class other than its label that the frozen `model` (eval mode) predicts after one
    FGSM step of size `bound` (pixel units of [0, 1]) that raises the cross-entropy of that label."""
    model.eval()
    labels, size = [], eval_batch_size(data.device)
    for start in range(0, len(split), size):
        images, y = split.images[start:start + size], split.labels[start:start + size]
        x = data.normalize(images).requires_grad_(True)
        with torch.enable_grad(), autocast(data.device):
            loss = F.cross_entropy(model(x).float(), y)
        # the normalisation divides by a positive std, so the sign of ∇_x equals that of the gradient in pixels
        step = torch.autograd.grad(loss, x)[0].sign()
        adversarial = (images.float() + 255 * bound * step).clamp(0, 255).round().to(torch.uint8)
        with torch.no_grad(), autocast(data.device):
            logits = model(data.normalize(adversarial)).float()
        labels.append(logits.scatter(1, y[:, None], float("-inf")).argmax(1))  # never the true class
    return torch.cat([split.labels[:0], *labels])


@torch.no_grad()
def with_rows(head: nn.Linear, rows: int, generator: torch.Generator) -> nn.Linear:
    """A copy of `head` with `rows` outputs: its first rows are `head`'s, any new one is drawn Xavier-normal (std
    √(2 / (in + out))) with a zero bias."""
    kept = min(rows, head.out_features)
    linear = nn.Linear(head.in_features, rows, bias=head.bias is not None, device=head.weight.device,
                       dtype=head.weight.dtype)
    linear.weight[:kept] = head.weight[:kept]
    if rows > kept:
        new = torch.randn((rows - kept, head.in_features), generator=generator)
        linear.weight[kept:] = new.to(linear.weight) * math.sqrt(2.0 / (head.in_features + rows))
    if head.bias is not None:
        linear.bias.zero_()
        linear.bias[:kept] = head.bias[:kept]
    return linear


class BoundaryShrink(FinetuningUnlearner):
    """Fine-tune on D_f(c) towards each image's nearest wrong class, found by an FGSM step on the frozen original."""

    name = "boundary_shrink"
    label = "Boundary Shrink"
    paper = 'Chen et al., "Boundary Unlearning", arXiv 2303.11570'
    venue = "CVPR 2023"
    uses_retain = False
    parameters = {"optimizer": "sgd", "lr": 0.01, "steps": 60, "batch_size": 64, "stop_acc": 0.05, "check_every": 1,
                  "bound": 0.1, "norm_statistics": "batch"}
    search_space = {**FINETUNE_SPACE, "bound": Float(0.01, 0.3, log=True)}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        c = task.forget_class
        forget = task.data.train.forget(c)
        relabelled = Split(forget.images, nearest_wrong_labels(task.original, task.data, forget, task.params["bound"]))
        batches = endless_batches(task.data, relabelled, task.params["batch_size"], task.generator,
                                  f"training set of class {c}")
        model = task.copy_original()
        outcome = finetune(model, lambda net: cross_entropy_parts(net, next(batches))[0], task,
                           held_out=held_out_forget_set(task))
        return FinetunedModel(model.eval(), c, outcome)


class BoundaryExpanding(FinetuningUnlearner):
    """Train D_f(c) into a shadow (K+1)-th class of a widened head, then prune the shadow output."""

    name = "boundary_expand"
    label = "Boundary Expanding"
    paper = 'Chen et al., "Boundary Unlearning", arXiv 2303.11570'
    venue = "CVPR 2023"
    uses_retain = False
    parameters = {"optimizer": "sgd", "lr": 0.01, "steps": 60, "batch_size": 64, "norm_statistics": "batch"}
    search_space = {k: v for k, v in FINETUNE_SPACE.items() if k != "stop_acc"}  # no stopping rule (see above)

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        c, classes = task.forget_class, task.data.num_classes
        model = task.copy_original()
        head = classifier_head(model, classes)
        model.set_submodule(head, with_rows(model.get_submodule(head), classes + 1, task.generator))
        forget = task.data.train.forget(c)
        shadow = Split(forget.images, torch.full_like(forget.labels, classes))
        batches = endless_batches(task.data, shadow, task.params["batch_size"], task.generator,
                                  f"training set of class {c}")
        outcome = finetune(model, lambda net: cross_entropy_parts(net, next(batches))[0], task)
        model.set_submodule(head, with_rows(model.get_submodule(head), classes, task.generator))
        return FinetunedModel(model.eval(), c, outcome)
