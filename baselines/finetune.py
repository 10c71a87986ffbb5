"""Fine-tuning on D_r(c) only: the original model keeps training without class c and forgets it by attrition."""
from unlearnbench import UnlearnTask
from ._finetuning import (FINETUNE_SPACE, FinetunedModel, FinetuningUnlearner, cross_entropy_parts,
                                     endless_batches, finetune)


class Finetune(FinetuningUnlearner):
    """Cross-entropy on D_r(c) of the training split with true labels for a fixed step budget, no stopping rule
    (see `baselines/_finetuning.py`, `finetune`).
    """

    name = "finetune"
    label = "Fine-tune"
    paper = 'Golatkar et al., "Eternal Sunshine of the Spotless Net", arXiv 1911.04933'
    venue = "CVPR 2020"
    parameters = {"optimizer": "sgd", "lr": 0.1, "steps": 100, "batch_size": 64, "norm_statistics": "batch"}
    family_parameters = {"vit": {"optimizer": "adamw", "lr": 3e-3, "steps": 50}}
    search_space = {k: v for k, v in FINETUNE_SPACE.items() if k != "stop_acc"}  # no stopping rule to tune

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        model = task.copy_original()
        c = task.forget_class
        retain = endless_batches(task.data, task.data.train.retain(c), task.params["batch_size"], task.generator,
                                 f"training set without class {c}")
        outcome = finetune(model, lambda net: cross_entropy_parts(net, next(retain))[0], task)
        return FinetunedModel(model.eval(), c, outcome)
