"""DELETE, decoupled distillation to erase (Zhou, Zheng, Mo, Lu, Lin and Zheng, "Decoupled Distillation to Erase: A
General Unlearning Method for Any Class-centric Tasks", CVPR 2025, arXiv 2503.23751; reference implementation
shaaaaron/DELETE, `method/delete.py`, `delete`, with its settings in `config/*.yaml` and `main.py`).

Forget data only: the method reads D_f(c) of the training split and nothing else, no retained sample and no
validation data (declared by `uses_retain = False`, which the method tables show).

A student, initialised from the original, is distilled on D_f(c) towards the original (the teacher, frozen, eval
mode) with the true class masked: the teacher's logit of each sample's label is set to −∞ before the softmax, so
the target gives that class zero probability and spreads the rest over the other classes in the teacher's own
proportions (p_j / (1 − p_y)), the "dark knowledge" of what else the image resembles. Loss KL(target ‖ student) at
temperature 1, averaged over the batch (`_blocks.distillation_kl`, the reference's `KLDivLoss(reduction=
"batchmean")`). Reference settings: SGD lr 1e-4 (CIFAR-10 ResNet-18; 5e-5 for VGG-16 and ViT-S), momentum 0.9,
20 epochs over D_f(c), batches of 128, the student in train mode (its BatchNorm in eval mode only for single-class
Tiny-ImageNet).

Departures: batches of 64 (the CPU grids' forget sets hold a few hundred images); BatchNorm handling is the shared
`norm_statistics` choice ("batch" is the reference's train mode, "frozen" its `disable_bn`); ViTs use AdamW at
lr 1e-4 like the other baselines' ViTs here (the reference: SGD at 5e-5); −∞ instead of the reference's −1e10 for
the masked logit (both give exactly zero probability).
"""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench import UnlearnTask
from unlearnbench.config import at_least
from unlearnbench.search_space import Choice, Float, Int
from ._blocks import batches_per_pass, distillation_kl
from ._finetuning import NORM_STATISTICS, FinetunedModel, FinetuningUnlearner, endless_batches, finetune


@torch.no_grad()
def masked_teacher_probs(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's softmax on `x` with each sample's own class `y` masked out: zero for class y, the other
    classes' probabilities renormalised to sum to 1 (teacher in eval mode)."""
    teacher.eval()
    logits = teacher(x).float()
    return F.softmax(logits.scatter(1, y[:, None], float("-inf")), dim=1)


class Delete(FinetuningUnlearner):
    """Distil the original's other-class knowledge on D_f(c) with class c masked out; no retained data."""

    name = "delete"
    label = "DELETE"
    paper = 'Zhou et al., "Decoupled Distillation to Erase", arXiv 2503.23751'
    venue = "CVPR 2025"
    uses_retain = False
    parameters = {"optimizer": "sgd", "lr": 1e-4, "epochs": 20, "batch_size": 64, "norm_statistics": "batch"}
    family_parameters = {"vit": {"optimizer": "adamw", "lr": 1e-4}}
    # ≤ 30 passes over a CPU grid's forget set (~6 batches of 64) stay within the suite's ~200-step trial budget
    search_space = {"lr": Float(1e-5, 0.1, log=True), "epochs": Int(1, 30), "norm_statistics": Choice(NORM_STATISTICS)}
    parameter_ranges = {**FinetuningUnlearner.parameter_ranges, "epochs": at_least(1)}
    family_search_space = {"vit": {"lr": Float(1e-6, 1e-2, log=True), "norm_statistics": Choice(("batch",))}}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        params, c = task.params, task.forget_class
        forget = task.data.train.forget(c)
        batches = endless_batches(task.data, forget, params["batch_size"], task.generator, f"training set of class {c}")
        teacher = task.original

        def loss(net):
            x, y = next(batches)
            return distillation_kl(net(x), masked_teacher_probs(teacher, x, y), 1.0)

        steps = int(params["epochs"]) * batches_per_pass(len(forget), params["batch_size"])
        model = task.copy_original()
        outcome = finetune(model, loss, dataclasses.replace(task, params={**params, "steps": steps}))
        return FinetunedModel(model.eval(), c, outcome)
