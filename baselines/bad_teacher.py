"""Bad Teacher (Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
Incompetent Teacher", arXiv 2205.08096; reference implementation vikram2000b/bad-teaching-unlearning,
`unlearn.py`: `blindspot_unlearner`, `UnlearnerLoss`, `UnLearningData`; read here in the copy the SSD repository
ships, if-loops/selective-synaptic-dampening `src/unlearn.py` and `src/forget_full_class_strategies.py`,
`blindspot`).

A student, initialised from the original, is distilled on D_f(c) together with a random `retain_fraction` of D_r(c)
(reference: 30 %), shuffled together, for `epochs` epochs. Each sample's target is the softmax at temperature T of
one of two frozen teachers: the original (competent) for retained samples, a randomly initialised network of the
same architecture (incompetent) for forgotten ones. The loss is KL(target ‖ student) at T. Reference defaults:
Adam, lr 1e-4, 1 epoch, batch 256 (the SSD repository: 256 for ResNets, 128 for ViTs), T = 1.

Departures: the KL is summed over classes, averaged over the batch and scaled by T² (`_blocks.distillation_kl`;
the reference's `F.kl_div` default averages over classes too and has no T², constant factors that Adam, invariant to
a loss's scale, and the tuned learning rate absorb);
batches of 64 by default (the CPU grids' forget sets hold a few hundred images); BatchNorm handling is the shared
`norm_statistics` choice (the reference trains the student in train mode: "batch").
"""
import dataclasses

import torch

from unlearnbench import UnlearnTask
from unlearnbench.data import Split
from unlearnbench.search_space import Choice, Float, Int
from ._blocks import batches_per_pass, distillation_kl, retain_sample, teacher_probs
from ._finetuning import NORM_STATISTICS, FinetunedModel, FinetuningUnlearner, endless_batches, finetune


class BadTeacher(FinetuningUnlearner):
    """Distil from the competent teacher on retained samples and from a random one on D_f(c)."""

    name = "bad_teacher"
    label = "Bad Teacher"
    paper = 'Chundawat et al., "Can Bad Teaching Induce Forgetting?", arXiv 2205.08096'
    venue = "AAAI 2023"
    parameters = {"optimizer": "adam", "lr": 1e-4, "epochs": 1, "batch_size": 64, "temperature": 1.0,
                  "retain_fraction": 0.3, "norm_statistics": "batch"}
    family_parameters = {}
    search_space = {"lr": Float(1e-5, 1e-2, log=True), "epochs": Int(1, 3), "temperature": Float(1.0, 8.0),
                    "retain_fraction": Float(0.1, 0.6), "norm_statistics": Choice(NORM_STATISTICS)}
    family_search_space = {"vit": {"norm_statistics": Choice(("batch",))}}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        params, c = task.params, task.forget_class
        forget, retain = task.data.train.forget(c), retain_sample(task, params["retain_fraction"])
        # the labels of this mix say which teacher a sample learns from: 1 the incompetent one, 0 the original
        mix = Split.concat([Split(forget.images, torch.ones_like(forget.labels)),
                            Split(retain.images, torch.zeros_like(retain.labels))])
        batches = endless_batches(task.data, mix, params["batch_size"], task.generator,
                                  f"training set of class {c} with its retain sample")
        competent, incompetent = task.original, task.new_model(task.seed).eval()
        temperature = params["temperature"]

        def loss(net):
            x, from_incompetent = next(batches)
            chosen = from_incompetent.bool()
            target = None
            for teacher, rows in ((incompetent, chosen), (competent, ~chosen)):  # each teacher sees only its rows
                if rows.any():
                    probs = teacher_probs(teacher, x[rows], temperature)
                    target = probs.new_empty((len(x), probs.shape[1])) if target is None else target
                    target[rows] = probs
            return distillation_kl(net(x), target, temperature)

        steps = int(params["epochs"]) * batches_per_pass(len(mix), params["batch_size"])
        model = task.copy_original()
        outcome = finetune(model, loss, dataclasses.replace(task, params={**params, "steps": steps}))
        return FinetunedModel(model.eval(), c, outcome)
