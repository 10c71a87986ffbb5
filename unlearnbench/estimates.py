"""What a plan will cost before it runs: training images for its stage models, and the memory a worker holds for
each dataset × backbone group (images, models, activations, logits), from the dataset's sizes and a model built
and run on the meta device; nothing is decoded or trained."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import DATASETS, dataset_classes, dataset_sizes, images_on_disk, memory_budget_bytes
from .grid import Grid
from .models import build_backbone
from .metrics.base import CELL_LOGIT_BYTES
from .stages import STAGE_LOGIT_BYTES
from .training import eval_batch_size, resolve_recipe

MiB = 2**20
WORKING_COPIES = 3  # the unlearned model, its gradients and one optimiser state (momentum)


@dataclass(frozen=True)
class GroupMemory:
    """Bytes a worker holds for one group: `images` (on the device; or, read from disk, labels plus the batches in
    flight: the one in use, the one read ahead and its float32 copy), `resident` (what holding every image would
    take: `storage: memory`), `models` (stage models kept plus a working copy with gradients and optimiser state),
    `activations` (the larger of one training step at the recipe's batch size and one evaluation batch) and `logits`
    (the group's and the cell's logit memos, each within its budget, plus the largest split's logits in flight).
    None where the dataset's size is unknown before loading."""

    label: str
    storage: str
    resident: int | None
    images: int | None
    models: int | None
    activations: int | None
    logits: int | None

    @property
    def total(self) -> int | None:
        parts = (self.images, self.models, self.activations, self.logits)
        return None if None in parts else sum(parts)


def activation_bytes(net: torch.nn.Module, shape: tuple[int, int, int], train_batch: int, eval_batch: int) -> int:
    """A meta-device model's activation memory: the larger of a training step (every leaf module's output kept for
    the backward pass) and an evaluation batch (the largest leaf output and its input), from forward passes on
    meta tensors (no memory, no arithmetic)."""
    height, width, channels = shape
    outputs: list[int] = []

    def keep(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() * 4)  # float32

    hooks = [m.register_forward_hook(keep) for m in net.modules() if not list(m.children())]
    try:
        sizes = []
        for batch in (train_batch, eval_batch):
            outputs.clear()
            with torch.no_grad():
                net(torch.empty(batch, channels, height, width, device="meta"))
            sizes.append(list(outputs))
    finally:
        for hook in hooks:
            hook.remove()
    return max(sum(sizes[0]), 2 * max(sizes[1], default=0))


@dataclass(frozen=True)
class DatasetSizes:
    """A dataset entry's image counts after the validation carve and its subsets, its class count and shape."""

    classes: int
    train: int
    val: int
    test: int
    train_eval: int
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, dataset, val_fraction: float, data_root: str | None, cache: str | Path) -> "DatasetSizes | None":
        """Read from the dataset's files or registration (one directory scan for a tree); None where unknown."""
        options = dataset.options_dict
        n_train, n_test, shape = dataset_sizes(dataset.name, data_root, cache, options)
        classes = dataset_classes(dataset.name, data_root, cache, options)
        if n_train is None or n_test is None or shape is None or not classes:
            return None
        test = min(n_test, classes * options["test_per_class"]) if options.get("test_per_class") else n_test
        if options.get("val_from") == "test":  # the test images outside the evaluation subset; train stays whole
            val, train = n_test - test, n_train
        else:
            val = round(val_fraction * n_train)
            train = n_train - val
        if options.get("val_per_class"):
            val = min(val, classes * options["val_per_class"])
        if options.get("train_per_class"):
            train = min(train, classes * options["train_per_class"])
        train_eval = min(train, classes * options.get("train_eval_per_class", 0))
        return cls(classes, train, val, test, train_eval, tuple(shape))


def group_memory(dataset, backbone, sizes: DatasetSizes | None, retrained: int, train_batch: int,
                 device: torch.device) -> GroupMemory:
    """The memory estimate of one group whose worker keeps `retrained` retrained models besides the original and
    the random model and trains with batches of `train_batch`."""
    label = f"{dataset.label} × {backbone.label}"
    if sizes is None:
        return GroupMemory(label, "?", None, None, None, None, None)
    options, (height, width, channels) = dataset.options_dict, sizes.shape
    row = height * width * channels
    held = sizes.train + sizes.val + sizes.test
    resident = (held + sizes.train_eval) * row  # the evaluation subset is a copy when held in memory
    on_disk = images_on_disk(dataset.name, DATASETS.get(dataset.name).decodes_to_file,
                             options.get("storage", "auto"), memory_budget_bytes(options), held * row)
    # read from disk: labels, and the batch in use, the one read ahead and the float32 copy of one (4 bytes a value)
    images = 8 * (held + sizes.train_eval) + 6 * eval_batch_size(device) * row if on_disk else resident
    with torch.device("meta"):
        net = build_backbone(dataclasses.replace(backbone, pretrained=None), sizes.classes, channels, height)
    parameters = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    activations = activation_bytes(net, sizes.shape, train_batch, eval_batch_size(device))
    kept = 2 + retrained  # original, random, retrained models
    per_split = [n * sizes.classes * 4 for n in (sizes.train_eval or sizes.train, sizes.test)]
    in_flight = max(per_split + [sizes.val * sizes.classes * 4])  # the validation split: tuning, stopping rules
    stage_memo = min(kept * sum(b for b in per_split if b <= STAGE_LOGIT_BYTES), STAGE_LOGIT_BYTES)
    cell_memo = min(sizes.classes * sum(b for b in per_split if b <= CELL_LOGIT_BYTES), CELL_LOGIT_BYTES)
    return GroupMemory(label, "disk" if on_disk else "memory", resident, images,
                       (kept + WORKING_COPIES) * parameters, activations, stage_memo + cell_memo + in_flight)


def group_estimates(grid: Grid, cells: list, retrains: dict, data_root: str | None, cache: str | Path,
                    device: torch.device, to_train: tuple[dict, dict] | None = None) -> tuple[int, list[GroupMemory]]:
    """The training images of the cells' originals and retrained models (`retrains`: group → how many it keeps;
    `to_train`: group → the originals and → the retrained models not cached yet, default all of them) and the
    distinct memory estimates of their groups."""
    groups = sorted({c.group for c in cells}, key=lambda g: (g[0].label, g[1].label, g[2]))
    sizes = {d: DatasetSizes.of(d, grid.val_fraction, data_root, cache) for d in dict.fromkeys(g[0] for g in groups)}
    image_epochs, rows = 0, []
    for group in groups:
        dataset, backbone, _seed = group
        retrained = retrains.get(group, 0)
        recipe = resolve_recipe(dataset.name, backbone, grid.recipe)
        trained = 1 + retrained if to_train is None else to_train[0].get(group, 1) + to_train[1].get(group, 0)
        image_epochs += recipe.epochs * (sizes[dataset].train if sizes[dataset] else 0) * trained
        memory = group_memory(dataset, backbone, sizes[dataset], retrained, recipe.batch_size, device)
        if memory not in rows:
            rows.append(memory)
    return image_epochs, rows


def _minutes(minutes: float) -> str:
    return ("under a CPU-minute" if round(minutes) < 1 else
            f"about {minutes:.0f} CPU-minute{'s' if round(minutes) != 1 else ''}")


def plan_estimates(grid: Grid, cells: list, retrains: dict, data_root: str | None, cache: str | Path,
                   device: torch.device, to_train: tuple[dict, dict] | None = None) -> list[str]:
    """The plan's cost lines: training images of the originals and retrained models it trains (`retrains`: group →
    how many it keeps; `to_train`: those not cached yet, see `group_estimates`), then a memory table."""
    image_epochs, rows = group_estimates(grid, cells, retrains, data_root, cache, device, to_train)
    lines = []
    if image_epochs:
        lines.append(f"cost estimate: ~{image_epochs / 1e6:.2f} M training images for originals and retrains "
                     f"({_minutes(image_epochs / 3000 / 60)} at 3,000 img/s for a small backbone)")
    if rows:
        width = max(len(r.label) for r in rows) + 2
        lines.append("memory per worker, estimated (MiB; images on disk: labels and the batches in flight; resident: "
                     "every image held; activations: a training step or an evaluation batch, the larger):")
        lines.append(f"  {'':<{width}}" + " ".join(f"{c:>11}" for c in (
            "images", "storage", "resident", "models", "activations", "logits", "total")))
        for r in rows:
            cells = [_mib(r.images), r.storage, _mib(r.resident), _mib(r.models), _mib(r.activations),
                     _mib(r.logits), _mib(r.total)]
            lines.append(f"  {r.label:<{width}}" + " ".join(f"{c:>11}" for c in cells))
    return lines


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / MiB:,.0f}"
