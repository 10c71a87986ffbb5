"""The original model, unchanged: the reference row of every table (nothing is unlearned)."""
from unlearnbench import SharedModel, Unlearner, UnlearnTask


class Original(Unlearner):
    """Serves the original model for every forget class; its rows anchor accuracy, ZRF and relearn time."""

    name = "original"
    uses_retain = False
    per_class = False

    def unlearn(self, task: UnlearnTask) -> SharedModel:
        return SharedModel(task.original, task.data.num_classes)
