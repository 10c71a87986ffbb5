"""unlearnbench: a benchmark suite for class unlearning in image classifiers."""
__version__ = "0.1.0"

from . import datasets  # noqa: E402,F401  (registers the datasets)
from .errors import UserError  # noqa: E402
from .unlearner import SharedModel, SingleClassModel, UnlearnedModel, Unlearner, UnlearnTask  # noqa: E402

__all__ = ["Unlearner", "UnlearnTask", "UnlearnedModel", "SingleClassModel", "SharedModel", "UserError", "__version__"]
