"""Random labels (Hayase et al.): fine-tune the original on D_f(c) relabelled with other classes; once per class."""
from unlearnbench import UnlearnTask
from ._finetuning import (FinetunedModel, FinetuningUnlearner, cross_entropy_parts, endless_batches,
                                     finetune, held_out_forget_set, relabelled_forget_set)


class RandomLabels(FinetuningUnlearner):
    """Cross-entropy on D_f(c) of the training split, each sample relabelled once with a uniformly drawn class ≠ c.
    Every `check_every` steps the accuracy on class c of the validation split is measured and the run stops once it
    is at most `stop_acc`; `steps` caps it (see `baselines/_finetuning.py`, `finetune`).
    """

    name = "random_labels"
    paper = 'Hayase et al., "Selective Forgetting of Deep Networks at a Finer Level than Samples", arXiv 2012.11849'
    venue = "arXiv 2020"
    uses_retain = False
    parameters = {"optimizer": "sgd", "lr": 0.003, "steps": 50, "batch_size": 64, "stop_acc": 0.05, "check_every": 1,
                  "norm_statistics": "batch"}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        model = task.copy_original()
        forget = endless_batches(task.data, relabelled_forget_set(task), task.params["batch_size"], task.generator,
                                 f"training set of class {task.forget_class}")
        outcome = finetune(model, lambda net: cross_entropy_parts(net, next(forget))[0], task,
                           held_out=held_out_forget_set(task))
        return FinetunedModel(model.eval(), task.forget_class, outcome)


class RandomLabelsMixed(FinetuningUnlearner):
    """Random labels mixed with D_r(c) (amnesiac / bad-teaching style): every step averages the cross-entropy of a
    relabelled D_f(c) batch and of a D_r(c) batch with true labels, so the retained classes are rehearsed; same
    stopping rule and budget as `random_labels`.
    """

    name = "random_labels_mixed"
    label = "Random Labels (mixed)"
    paper = ('Hayase et al., "Selective Forgetting of Deep Networks at a Finer Level than Samples", arXiv 2012.11849 '
             "(mixing in D_r batches is this suite's variant)")
    venue = "arXiv 2020"
    parameters = {"optimizer": "sgd", "lr": 0.01, "steps": 50, "batch_size": 64, "stop_acc": 0.05, "check_every": 1,
                  "norm_statistics": "batch"}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        model = task.copy_original()
        c, size = task.forget_class, task.params["batch_size"]
        forget = endless_batches(task.data, relabelled_forget_set(task), size, task.generator,
                                 f"training set of class {c}")
        retain = endless_batches(task.data, task.data.train.retain(c), size, task.generator,
                                 f"training set without class {c}")
        outcome = finetune(model, lambda net: sum(cross_entropy_parts(net, next(forget), next(retain))) / 2, task,
                           held_out=held_out_forget_set(task))
        return FinetunedModel(model.eval(), c, outcome)
