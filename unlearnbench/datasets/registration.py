"""`register`: how a dataset module adds its loader to `data.DATASETS`."""
from __future__ import annotations

from ..data import DATASETS, DatasetInfo


def register(name: str, missing, description: str, num_classes: int | None = 10, train_images: int | None = None,
             count_classes=None):
    """Register the decorated loader as dataset `name` with its missing-data check, class count (`count_classes`,
    where given, reads it from the files present instead), and training-set size (for the plan's cost estimate)."""

    def decorate(load):
        DATASETS.register(name)(DatasetInfo(name, load, missing, description, num_classes, train_images,
                                            count_classes))
        return load

    return decorate
