"""Retrain from scratch on D_r(c) with the original recipe: the gold standard, once per forget class."""
from unlearnbench import SingleClassModel, Unlearner, UnlearnTask


class Retrain(Unlearner):
    """The original model's recipe, from a fresh initialisation, on every training sample not of class c.

    The retrained model is a shared stage: other metrics (distance to retrain) reuse the same checkpoint.
    """

    name = "retrain"
    per_class = True

    def unlearn(self, task: UnlearnTask) -> SingleClassModel:
        return SingleClassModel(task.retrained(task.forget_class), task.forget_class)
