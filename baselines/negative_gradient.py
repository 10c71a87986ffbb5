"""Negative gradients (Golatkar et al.) and NegGrad+: gradient ascent on the cross-entropy of D_f(c), once per class,
stopped when the held-out forget accuracy reaches a target or at a step budget."""
from unlearnbench import UnlearnTask
from ._finetuning import (FINETUNE_SPACE, FinetunedModel, FinetuningUnlearner, cross_entropy_parts,
                          endless_batches, finetune, held_out_forget_set)
from unlearnbench.config import one_of
from unlearnbench.search_space import Choice, Float

PASSES = ("separate", "joint")  # NegGrad+: a forward pass per batch (the reference) or one over both


class NegativeGradient(FinetuningUnlearner):
    """Minimise −CE on D_f(c) of the training split. Every `check_every` steps the accuracy on class c of the
    validation split (the held-out slice of D_f; never test) is measured and the run stops once it is at most
    `stop_acc`; `steps` caps it. The ascent accelerates as the class is forgotten, so the check runs every step.
    A NaN/inf loss restores the last finite weights and the returned model reports `diverged` (and
    `diagnostics()`), never an exception (see `baselines/_finetuning.py`, `finetune`).
    """

    name = "negative_gradient"
    paper = 'Golatkar et al., "Eternal Sunshine of the Spotless Net", arXiv 1911.04933'
    venue = "CVPR 2020"
    uses_retain = False
    parameters = {"optimizer": "sgd", "lr": 0.003, "steps": 50, "batch_size": 64, "stop_acc": 0.05, "check_every": 1,
                  "norm_statistics": "batch"}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        model = task.copy_original()
        c = task.forget_class
        forget = endless_batches(task.data, task.data.train.forget(c), task.params["batch_size"], task.generator,
                                 f"training set of class {c}")
        outcome = finetune(model, lambda net: -cross_entropy_parts(net, next(forget))[0], task,
                           held_out=held_out_forget_set(task))
        return FinetunedModel(model.eval(), c, outcome)


class NegGradPlus(FinetuningUnlearner):
    """NegGrad+ (Kurmanji et al.; reference implementation meghdadk/SCRUB, `train_negrad` in
    thirdparty/repdistiller/helper/loops.py): minimise α·CE on a D_r(c) batch − (1−α)·CE on a D_f(c) batch, with the
    same stopping rule, step budget and divergence handling as `negative_gradient`.

    `passes: separate` (the default) is the reference's form: the two batches go through two forward passes, so
    with `norm_statistics: batch` BatchNorm normalises the forget batch with its own statistics and updates its
    running statistics after each pass. `passes: joint` (not in the reference) sends their concatenation through
    one pass, so each batch is normalised with the statistics of both; tuning chooses between the two for CNNs
    (ViTs have no BatchNorm, so the two are the same computation there). Departures, shared by the fine-tuning
    baselines here: a step budget with the held-out stopping rule replaces the reference's epochs over D_r, and SGD
    has momentum 0.9 (the reference: none).
    """

    name = "neggrad_plus"
    label = "NegGrad+"
    paper = 'Kurmanji et al., "Towards Unbounded Machine Unlearning", arXiv 2302.09880'
    venue = "NeurIPS 2023"
    parameters = {"optimizer": "sgd", "lr": 0.01, "steps": 50, "batch_size": 64, "stop_acc": 0.05, "check_every": 1,
                  "alpha": 0.9, "norm_statistics": "batch", "passes": "separate"}
    parameter_ranges = {**FinetuningUnlearner.parameter_ranges, "alpha": (lambda v: 0 <= v <= 1, "in [0, 1]"),
                        "passes": one_of(PASSES)}
    search_space = {**FINETUNE_SPACE, "alpha": Float(0.5, 0.99)}
    # the shared per-family spaces, plus the choice of passes on CNNs (ViTs have no BatchNorm: one computation)
    family_search_space = {**FinetuningUnlearner.family_search_space, "cnn": {"passes": Choice(PASSES)}}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        model = task.copy_original()
        c, size, alpha = task.forget_class, task.params["batch_size"], task.params["alpha"]
        forget = endless_batches(task.data, task.data.train.forget(c), size, task.generator,
                                 f"training set of class {c}")
        retain = endless_batches(task.data, task.data.train.retain(c), size, task.generator,
                                 f"training set without class {c}")

        def loss(net):
            if task.params["passes"] == "joint":
                ce_retain, ce_forget = cross_entropy_parts(net, next(retain), next(forget))
            else:
                ce_retain = cross_entropy_parts(net, next(retain))[0]
                ce_forget = cross_entropy_parts(net, next(forget))[0]
            return alpha * ce_retain - (1 - alpha) * ce_forget

        outcome = finetune(model, loss, task, held_out=held_out_forget_set(task))
        return FinetunedModel(model.eval(), c, outcome)
