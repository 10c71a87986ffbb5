"""ℓ1-sparse unlearning (Jia et al., "Model Sparsity Can Simplify Machine Unlearning", arXiv 2304.04934; reference
implementation OPTML-Group/Unlearn-Sparse, `unlearn/FT.py`, the `FT_l1` method).

Fine-tune the original on D_r(c) with cross-entropy plus α_t · ‖θ‖₁ (`l1_regularization`: the ℓ1 norm of every
parameter concatenated). α_t decays linearly from α to 0 over the run (reference: α·(1 − epoch / epochs), optionally
with some final epochs at 0), so the sparsity pressure prunes weights early and the last steps repair accuracy; no
stopping rule, as in fine-tuning. The reference leaves α to the user (`--alpha`, scripts pass a value); here it is
searched on a log scale.

Departures from the reference: α_t decays per optimiser step rather than per epoch (the runs here are step
budgets of a few dozen to a few hundred steps, often less than one epoch); SGD with momentum 0.9 and no weight
decay, as every fine-tuning baseline here; BatchNorm handling is the shared `norm_statistics` choice.
"""
import torch

from unlearnbench import UnlearnTask
from unlearnbench.search_space import Float
from ._finetuning import (FINETUNE_SPACE, FinetunedModel, FinetuningUnlearner, cross_entropy_parts,
                          endless_batches, finetune)


def l1_norm(model: torch.nn.Module) -> torch.Tensor:
    """‖θ‖₁: the sum of absolute values of every trainable parameter."""
    return sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


class L1Sparse(FinetuningUnlearner):
    """Cross-entropy on D_r(c) + α·(1 − t/T)·‖θ‖₁ at step t of T (see the module docstring)."""

    name = "l1_sparse"
    label = "l1-sparse"
    paper = 'Jia et al., "Model Sparsity Can Simplify Machine Unlearning", arXiv 2304.04934'
    venue = "NeurIPS 2023"
    parameters = {"optimizer": "sgd", "lr": 0.01, "steps": 100, "batch_size": 64, "alpha": 5e-4,
                  "norm_statistics": "batch"}
    family_parameters = {"vit": {"optimizer": "adamw", "lr": 3e-4}}
    search_space = {**{k: v for k, v in FINETUNE_SPACE.items() if k != "stop_acc"},
                    "alpha": Float(1e-6, 1e-2, log=True)}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        model = task.copy_original()
        c, budget, alpha = task.forget_class, int(task.params["steps"]), task.params["alpha"]
        retain = endless_batches(task.data, task.data.train.retain(c), task.params["batch_size"], task.generator,
                                 f"training set without class {c}")
        step = 0

        def loss(net):
            nonlocal step
            weight = alpha * (1 - step / budget)
            step += 1
            return cross_entropy_parts(net, next(retain))[0] + weight * l1_norm(net)

        outcome = finetune(model, loss, task)
        return FinetunedModel(model.eval(), c, outcome)
