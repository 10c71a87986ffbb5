"""One trainer for original and retrained models, driven by a recipe; plus batched evaluation."""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import above, at_least, check_ranges, from_mapping, one_of, read_resource_yaml
from .data import ImageData, Split
from .errors import UserError, did_you_mean
from .models import BackboneSpec, evaluating


@dataclass(frozen=True)
class Recipe:
    """How to train a model from scratch: optimiser, schedule, epochs, batch size, augmentation."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "onecycle"  # onecycle: linear warm-up, then cosine decay; cosine: the decay alone; constant
    warmup: float = 0.2  # onecycle's warm-up, a fraction of the steps (the other schedules have none)
    label_smoothing: float = 0.0
    augment: bool = True

    def __post_init__(self) -> None:
        check_ranges(asdict(self), {
            "optimizer": one_of(OPTIMIZERS), "schedule": one_of(("onecycle", "cosine", "constant")),
            "epochs": (lambda v: v >= 0, "≥ 0 (0: pretrained weights)"), "batch_size": at_least(1), "lr": above(0),
            "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"), "weight_decay": at_least(0),
            "warmup": (lambda v: 0 <= v < 1, "in [0, 1) (a fraction of the onecycle schedule's steps)"),
            "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)")}, lambda key: f"A recipe's '{key}'")


OPTIMIZERS = ("sgd", "adam", "adamw")


def resolve_recipe(dataset: str, backbone: BackboneSpec, overrides: dict | None = None) -> Recipe:
    """The recipe for `dataset` × `backbone` from configs/recipes.yaml, most specific entry last, then `overrides`.

    `overrides` (a grid's `recipe:`) holds recipe fields for every cell and/or sections named like those of
    recipes.yaml (`cifar10`, `vit`, `resnet18`, `cifar10/vit`, `mnist/resnet18`) that apply where they match."""
    table = read_resource_yaml("configs/recipes.yaml")
    overrides = overrides or {}
    fields = {k: v for k, v in overrides.items() if not isinstance(v, dict)}
    sections = {k: v for k, v in overrides.items() if isinstance(v, dict)}
    merged: dict = {}
    for section in (
        table.get("default", {}),
        table.get("datasets", {}).get(dataset, {}),
        table.get("families", {}).get(backbone.family, {}),
        table.get("backbones", {}).get(backbone.name, {}),
        table.get(f"{dataset}/{backbone.family}", {}),
        table.get(f"{dataset}/{backbone.name}", {}),
        fields,
        *(sections.get(k, {}) for k in (dataset, backbone.family, backbone.name, f"{dataset}/{backbone.family}",
                                         f"{dataset}/{backbone.name}")),
    ):
        merged.update(section)
    return from_mapping(Recipe, merged, f"the training recipe for {dataset}/{backbone.label}")


def check_recipe_sections(overrides: dict, datasets: list[str], where: str) -> None:
    """Raise UserError for a grid recipe section that names no dataset, family or backbone (e.g. a typo)."""
    from .models import BACKBONES

    known = set(datasets) | {"cnn", "vit"} | set(BACKBONES.names())
    for key, value in overrides.items():
        if isinstance(value, dict):
            for part in key.split("/"):
                if part not in known:
                    raise UserError(f"Recipe section '{key}' in {where} names '{part}', which is no dataset of the "
                                    f"grid, family (cnn, vit) or backbone{did_you_mean(part, sorted(known))}.")


def make_optimizer(params, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """Build optimiser `name` ('sgd', 'adam', 'adamw') over `params`."""
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"Unknown optimizer '{name}'; choose one of: {', '.join(OPTIMIZERS)}.")


PRECISION_VARIABLE = "UNLEARNBENCH_PRECISION"  # set by --precision, so that worker processes inherit it


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype `autocast` computes in on `device`: bfloat16 on CUDA; None (no autocast, float32) on the CPU and
    wherever `--precision float32` asked for float32 throughout."""
    if device.type != "cuda" or os.environ.get(PRECISION_VARIABLE, "auto") == "float32":
        return None
    return torch.bfloat16


def compute_setting(device: torch.device) -> dict:
    """What every cache key holds about where a result was computed: the device type ('cpu', 'cuda'; not the
    index) and the precision `autocast` uses there ('float32', or e.g. 'bfloat16-autocast')."""
    dtype = autocast_dtype(device)
    precision = "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')}-autocast"
    return {"device_type": device.type, "precision": precision}


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to `autocast_dtype(device)` (bf16 on CUDA), nothing where that is None (the CPU)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """Move `model` to `device`, channels_last on CUDA; under `--precision float32` also without TF32 kernels."""
    model = model.to(device)
    if device.type == "cuda":
        set_tf32(device)
        model = model.to(memory_format=torch.channels_last)
    return model


def set_tf32(device: torch.device) -> None:
    """TF32 kernels as the precision setting says, every time: off under `--precision float32`, else torch's
    defaults (cuDNN on, matmul off). Set once, the float32 setting outlived its run: a later run in the process
    computed without cuDNN's TF32 under the keys of runs that use it."""
    float32 = autocast_dtype(device) is None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = not float32


def train(model: nn.Module, data: ImageData, recipe: Recipe, *, seed: int, split: Split | None = None,
          progress: bool = True, desc: str = "train",
          on_epoch: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Train `model` in place on `split` (default: data.train) following `recipe`; returns the model in eval mode.
    `on_epoch(epoch, model)`, when given, is called after every epoch (1-based), e.g. to evaluate; the model is
    back in training mode afterwards."""
    split = data.train if split is None else split
    device = data.device
    model = prepare(model, device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model.parameters(), recipe.optimizer, recipe.lr, recipe.momentum,
                               recipe.weight_decay, recipe.nesterov)
    steps_per_epoch = math.ceil(len(split) / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    schedule = _schedule(recipe, total)
    step = 0
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    for epoch in range(recipe.epochs):
        for x, y in data.batches(split, recipe.batch_size, shuffle=True, augment=recipe.augment, generator=generator):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * schedule(step)
            with autocast(device):
                loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.update()
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
            model.train()
    bar.close()
    return model.eval()


def _schedule(recipe: Recipe, total: int):
    """Learning-rate multiplier as a function of the step."""
    if recipe.schedule == "constant":
        return lambda step: 1.0
    warm = max(1, int(recipe.warmup * total)) if recipe.schedule == "onecycle" else 0

    def multiplier(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def eval_batch_size(device: torch.device) -> int:
    """Batch size for inference: large on a GPU; 256 on the CPU, where batches past the cache's size run slower
    (one thread, the mini grid's backbones: 1024 gives 0.47-1.00x the images per second of 256, measured by
    benchmarks/eval_batch_size.py)."""
    return 1024 if device.type == "cuda" else 256


def gather_batches(parts: Iterable[torch.Tensor], total: int, *, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor | None:
    """The rows of per-batch outputs `parts` (`total` rows in all) in one tensor, allocated at the first part and
    filled in place (None without parts). Kept one by one for a final cat, small outputs land in the holes the
    freed input batches leave and pin them: a CPU process grew by one input batch for every batch evaluated."""
    out, start = None, 0
    for part in parts:
        if out is None:
            out = torch.empty((total, *part.shape[1:]), dtype=dtype or part.dtype, device=device or part.device)
        out[start:start + len(part)] = part
        start += len(part)
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageData, split: Split, *, batch_size: int | None = None) -> torch.Tensor:
    """Logits [N, num_classes] (float32) of `model` on `split`, computed in eval mode without bf16 autocast. On a
    GPU, convolutions use TF32 kernels (10-bit mantissa, ~1e-3 relative; matrix products do not, see set_tf32)
    unless `--precision float32` turns them off: GPU and CPU metrics agree up to that rounding (cells are keyed by
    precision)."""
    size = batch_size or eval_batch_size(data.device)
    with evaluating(model):  # every submodule's own train/eval flag is restored, not the top one's cascaded
        logits = gather_batches((model(x) for x, _ in data.batches(split, size)), len(split), dtype=torch.float32)
    return torch.empty(0, data.num_classes, device=data.device) if logits is None else logits


def finite(logits: torch.Tensor, what: str, hint: str = "") -> torch.Tensor:
    """`logits`, refused where NaN or infinite (FloatingPointError: '<what> are not finite (NaN or inf)<hint>'):
    argmax would read an all-NaN or all-inf row as class 0."""
    if not torch.isfinite(logits).all():
        raise FloatingPointError(f"{what} are not finite (NaN or inf){hint}")
    return logits


def finite_logits(model: nn.Module, data: ImageData, split: str) -> torch.Tensor:
    """`predict_logits` on the named split ('train', 'val', 'test'), refusing NaN or infinite outputs."""
    return finite(predict_logits(model, data, data.split(split)), f"the model's outputs on the {split} split")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] (NaN for an empty set) of finite logits (see `finite`)."""
    if labels.numel() == 0:
        return float("nan")
    return (logits.argmax(1) == labels).float().mean().item()

