"""Trainer images/second against a plain torch DataLoader loop, same model, data, optimiser and batch size.

    python benchmarks/trainer_throughput.py --dataset mnist5k --backbone resnet18 --width 0.0625
    python benchmarks/trainer_throughput.py --dataset cifar10 --data-root ../shared/data --backbone resnet18 --device cuda

Prints both throughputs and their ratio, measured back to back in one run (best of --repeats epochs each).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from unlearnbench.data import ImageData, load_dataset
from unlearnbench.models import BackboneSpec, build_backbone
from unlearnbench.planning import resolve_device
from unlearnbench.training import autocast, make_optimizer, prepare, resolve_recipe, train


class PerSampleDataset(Dataset):
    """The usual torchvision pattern: one uint8 CPU image at a time, normalised (and augmented) per sample."""

    def __init__(self, data: ImageData) -> None:
        from torchvision.transforms import v2

        self.images = data.train.images.cpu()
        self.labels = data.train.labels.cpu()
        steps = [v2.ToDtype(torch.float32, scale=True)]
        if data.augment.startswith("crop"):
            steps.append(v2.RandomCrop(data.image_size, padding=4, padding_mode="reflect"))
        if data.augment.endswith("flip"):
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.Normalize(data.mean, data.std))
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def dataloader_epoch(model, data: ImageData, recipe, workers: int) -> float:
    """One epoch of a plain DataLoader loop; returns images/second."""
    device = data.device
    loader = DataLoader(PerSampleDataset(data), batch_size=recipe.batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    optimizer = make_optimizer(model.parameters(), recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay)
    model.train()
    sync(device)
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return len(data.train) / (time.perf_counter() - start)


def trainer_epoch(model, data: ImageData, recipe) -> float:
    """One epoch of unlearnbench's trainer; returns images/second."""
    sync(data.device)
    start = time.perf_counter()
    train(model, data, dataclasses.replace(recipe, epochs=1), seed=0, progress=False)
    sync(data.device)
    return len(data.train) / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--data-root")
    parser.add_argument("--cache-dir", default="results/cache")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=0.0625)
    parser.add_argument("--depth", type=float, default=1.0)
    parser.add_argument("--patch", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, root=args.data_root, cache_dir=args.cache_dir, device=device)
    spec = BackboneSpec(args.backbone, args.width, args.depth, args.patch)
    recipe = resolve_recipe(args.dataset, spec)
    torch.manual_seed(0)
    model = prepare(build_backbone(spec, data.num_classes, data.channels, data.image_size), device)
    ours, plain = [], []
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both alike
        ours.append(trainer_epoch(model, data, recipe))
        plain.append(dataloader_epoch(model, data, recipe, args.loader_workers))
    print(f"dataset {args.dataset} ({len(data.train)} train images), backbone {spec.label}, device {device}, "
          f"batch {recipe.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'loop':<34}{'best img/s':>12}{'all epochs':>30}")
    print(f"{'unlearnbench trainer (on-device)':<34}{max(ours):>12.0f}{'  ' + ', '.join(f'{v:.0f}' for v in ours):>30}")
    print(f"{f'DataLoader ({args.loader_workers} workers)':<34}{max(plain):>12.0f}{'  ' + ', '.join(f'{v:.0f}' for v in plain):>30}")
    print(f"ratio trainer / DataLoader: {max(ours) / max(plain):.2f}x")


if __name__ == "__main__":
    main()
