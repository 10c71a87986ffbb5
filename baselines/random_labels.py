"""Random labels (Hayase et al.): fine-tune the original on D_f(c) relabelled with other classes; once per class."""
from unlearnbench import UnlearnTask
from unlearnbench.finetuning import (FinetunedModel, FinetuningUnlearner, cross_entropy_parts, endless_batches,
                                     finetune, held_out_forget_set, relabelled_forget_set)


class RandomLabels(FinetuningUnlearner):
    """Cross-entropy on D_f(c) of the training split, each sample relabelled once with a uniformly drawn class ≠ c.
    Every `check_every` steps the accuracy on class c of the validation split is measured and the run stops once it
    is at most `stop_acc`; `steps` caps it (see `unlearnbench.finetuning.finetune`).

    Evidence for the defaults (mnist5k validation split, mean over the 10 classes; rule in unlearnbench.finetuning):

        backbone (original Acc_r / Acc_f)   setting                         Acc_r / Acc_f   steps
        resnet18-w0.0625 (0.965 / 0.965)   sgd lr 0.001                    0.807 / 0.025    36
                                           sgd lr 0.003 (default)          0.818 / 0.023    20
                                           sgd lr 0.01                     0.752 / 0.008    12
                                           sgd lr 0.001, no stopping rule  0.821 / 0.093    30
        vit_tiny-… (0.852 / 0.853)         adamw lr 3e-5, 100 steps        0.774 / 0.065    92
                                           adamw lr 1e-4                   0.767 / 0.030    30
                                           adamw lr 3e-4 (default)         0.762 / 0.020    11
    Defaults on full MNIST's validation split (originals 0.986 and 0.972): resnet18 0.749 / 0.036 in 17 steps,
    vit_tiny 0.944 / 0.035 in 7.
    """

    name = "random_labels"
    parameters = {"optimizer": "sgd", "lr": 0.003, "steps": 50, "batch_size": 64, "stop_acc": 0.05, "check_every": 1}
    vit_parameters = {"optimizer": "adamw", "lr": 3e-4}

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

    Evidence for the defaults (mnist5k validation split, mean over the 10 classes; rule in unlearnbench.finetuning):

        backbone (original Acc_r / Acc_f)   setting                   Acc_r / Acc_f   steps
        resnet18-w0.0625 (0.965 / 0.965)   sgd lr 0.003              0.942 / 0.020    16
                                           sgd lr 0.01 (default)     0.934 / 0.008     8
                                           sgd lr 0.03               0.916 / 0.010     5
        vit_tiny-… (0.852 / 0.853)         adamw lr 1e-4             0.812 / 0.035    32
                                           adamw lr 3e-4 (default)   0.800 / 0.018    11
                                           adamw lr 1e-3             0.771 / 0.008     3
    Defaults on full MNIST's validation split (originals 0.986 and 0.972): resnet18 0.938 / 0.019 in 6 steps,
    vit_tiny 0.947 / 0.035 in 8.
    """

    name = "random_labels_mixed"
    parameters = {"optimizer": "sgd", "lr": 0.01, "steps": 50, "batch_size": 64, "stop_acc": 0.05, "check_every": 1}
    vit_parameters = {"optimizer": "adamw", "lr": 3e-4}

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
