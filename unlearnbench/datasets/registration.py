"""`register`: how a dataset module adds its loader to `data.DATASETS`."""
from __future__ import annotations

from ..data import DATASETS, DatasetInfo


def register(name: str, missing, description: str, num_classes: int | None = 10, train_images: int | None = None,
             count_classes=None, test_images: int | None = None, image_shape: tuple | None = None, count_images=None,
             decodes_to_file: bool = False, identity=None, count_per_class=None):
    """Register the decorated loader as dataset `name` with its missing-data check, class count (`count_classes`,
    where given, reads it from the files present instead), and sizes for the plan's cost and memory estimates:
    training and test images and the decoded image shape (H, W, C), or `count_images` reading them from the files;
    `decodes_to_file`: its loader returns images memory-mapped from a decoded file, which a larger-than-memory
    dataset is read from batch by batch; `identity`: which files it would read, where several differ in their
    images (a cache key's part); `count_per_class`: (classes, training and test images per class) of the files
    present, read without decoding, which planning checks the per-class subset options against."""

    def decorate(load):
        DATASETS.register(name)(DatasetInfo(name, load, missing, description, num_classes, train_images,
                                            count_classes, test_images, image_shape, count_images,
                                            decodes_to_file, identity, count_per_class))
        return load

    return decorate
