"""SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", arXiv 2302.09880; reference implementation
meghdadk/SCRUB, `large_scale_unlearning.ipynb` (its `train_distill` loop and settings) with
`thirdparty/repdistiller/distiller_zoo/KD.py`, `DistillKL`).

A student, initialised from the original, is distilled from the original (the teacher, frozen, eval mode):

    max step, on a D_f(c) batch:  minimise −KL_T(teacher ‖ student)          (move away from the teacher)
    min step, on a D_r(c) batch:  minimise γ·CE(student, y) + α·KL_T(teacher ‖ student)   (stay with it)

KL_T is the distillation loss at temperature T (scaled by T², `_blocks.distillation_kl`). Each of `epochs` epochs
makes one pass over D_f(c) in max steps (only the first `forget_epochs` epochs) and then one pass over D_r(c) in min
steps, with one optimiser throughout. Reference settings (large-scale notebook): T = 4, γ = 0.99, α = 0.001, β = 0,
SGD lr 5e-4, momentum 0.9, weight decay 5e-4, msteps 2 of sgda_epochs 3, loaders of 512 (forget) and 256
(retain) images; its `del_batch_size` 32 and `sgda_batch_size` 128 are set but unused. (Its small-scale notebook
uses other values: Adam, T = 2, γ = 1, α = 0.5, 3 of 10 epochs.)

Departures: no weight decay (every fine-tuning baseline here runs without); no label smoothing or β term (both 0 in
the reference settings); forget batches of 32 and retain batches of 64 (the CPU grids' classes hold a few hundred
images), and a pass over D_r(c) capped at `retain_steps` batches so the
method fits the CPU grids (the reference passes over all of D_r(c)); BatchNorm handling is the shared
`norm_statistics` choice; ViTs use AdamW like the other baselines here.
"""
import dataclasses

import torch.nn.functional as F

from unlearnbench import UnlearnTask
from unlearnbench.search_space import Choice, Float, Int
from ._blocks import batches_per_pass, distillation_kl, phased_loss, teacher_probs
from ._finetuning import (NORM_STATISTICS, FinetunedModel, FinetuningUnlearner, endless_batches,
                          finetune)


class SCRUB(FinetuningUnlearner):
    """Alternating max steps (away from the teacher on D_f(c)) and min steps (CE + KL to it on D_r(c))."""

    name = "scrub"
    label = "SCRUB"
    paper = 'Kurmanji et al., "Towards Unbounded Machine Unlearning", arXiv 2302.09880'
    venue = "NeurIPS 2023"
    parameters = {"optimizer": "sgd", "lr": 5e-4, "epochs": 3, "forget_epochs": 2, "temperature": 4.0,
                  "gamma": 0.99, "alpha": 0.001, "forget_batch_size": 32, "batch_size": 64, "retain_steps": 60,
                  "norm_statistics": "batch"}
    family_parameters = {"vit": {"optimizer": "adamw", "lr": 1e-4}}
    search_space = {"lr": Float(1e-5, 0.1, log=True), "epochs": Int(1, 4), "forget_epochs": Int(1, 3),
                    "alpha": Float(1e-4, 1.0, log=True), "temperature": Float(1.0, 8.0),
                    "norm_statistics": Choice(NORM_STATISTICS)}
    family_search_space = {"vit": {"lr": Float(1e-6, 1e-2, log=True), "norm_statistics": Choice(("batch",))}}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        params, c = task.params, task.forget_class
        model, teacher = task.copy_original(), task.original
        temperature = params["temperature"]
        forget_set, retain_set = task.data.train.forget(c), task.data.train.retain(c)
        forget = endless_batches(task.data, forget_set, params["forget_batch_size"], task.generator,
                                 f"training set of class {c}")
        retain = endless_batches(task.data, retain_set, params["batch_size"], task.generator,
                                 f"training set without class {c}")

        def max_step(net):
            x, _ = next(forget)
            return -distillation_kl(net(x), teacher_probs(teacher, x, temperature), temperature)

        def min_step(net):
            x, y = next(retain)
            logits = net(x)
            return (params["gamma"] * F.cross_entropy(logits, y)
                    + params["alpha"] * distillation_kl(logits, teacher_probs(teacher, x, temperature), temperature))

        forget_pass = batches_per_pass(len(forget_set), params["forget_batch_size"])
        retain_pass = min(batches_per_pass(len(retain_set), params["batch_size"]), int(params["retain_steps"]))
        phases = []
        for epoch in range(int(params["epochs"])):
            if epoch < int(params["forget_epochs"]):
                phases.append((forget_pass, max_step))
            phases.append((retain_pass, min_step))
        steps, loss = phased_loss(phases)
        outcome = finetune(model, loss, dataclasses.replace(task, params={**params, "steps": steps}))
        return FinetunedModel(model.eval(), c, outcome)
