"""Time to accuracy: an original model trained with the suite's recipe, test accuracy after every epoch.

    python benchmarks/time_to_accuracy.py --dataset cifar10 --data-root ../shared/data --backbone resnet18 \\
        --device cuda --target 0.92            # the paper grid's ResNet-18 on the CIFAR-10 JPEG copy
    python benchmarks/time_to_accuracy.py --dataset mnist5k --backbone resnet18 --width 0.0625 --target 0.9

Trains exactly what the grid's original stage trains (recipes.yaml, or `--recipe KEY=VALUE` overrides) and
prints, per epoch, the training seconds so far (evaluation excluded; the device is synchronised before every
reading), the test accuracy and the training images per second; then the first epoch that reached `--target`
and the seconds it took.
"""
from __future__ import annotations

import argparse
import time

import torch
import yaml

from unlearnbench import UserError
from unlearnbench.cli import parse_pairs
from unlearnbench.data import load_dataset
from unlearnbench.models import BackboneSpec, build_backbone
from unlearnbench.planning import resolve_device
from unlearnbench.training import accuracy, predict_logits, resolve_recipe, train

from trainer_throughput import sync  # this folder is on sys.path when a benchmark runs as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-root")
    parser.add_argument("--cache-dir", default="results/cache")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--depth", type=float, default=1.0)
    parser.add_argument("--patch", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.92, help="test accuracy to reach, in [0, 1]")
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe field override, e.g. epochs=20 (YAML values)")
    args = parser.parse_args()
    if not 0 < args.target <= 1:
        parser.error(f"--target is a test accuracy in (0, 1], got {args.target}")
    try:
        overrides = {k: yaml.safe_load(v) for k, v in parse_pairs(args.recipe, "--recipe").items()}
    except UserError as err:
        parser.error(str(err))

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, root=args.data_root, cache_dir=args.cache_dir, device=device)
    spec = BackboneSpec(args.backbone, args.width, args.depth, args.patch)
    recipe = resolve_recipe(args.dataset, spec, overrides)
    torch.manual_seed(args.seed)
    model = build_backbone(spec, data.num_classes, data.channels, data.image_size)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"dataset {args.dataset} ({len(data.train)} train / {len(data.test)} test), backbone {spec.label}, "
          f"device {name}, torch {torch.__version__}")
    print(f"recipe {recipe}")
    print(f"{'epoch':>5} {'train s':>9} {'test acc':>9} {'img/s':>9}", flush=True)
    rows: list[tuple[int, float, float]] = []
    clock = {"train": 0.0, "since": 0.0}

    def on_epoch(epoch: int, net: torch.nn.Module) -> None:
        sync(device)
        clock["train"] += time.perf_counter() - clock["since"]
        acc = accuracy(predict_logits(net, data, data.test), data.test.labels)
        rows.append((epoch, clock["train"], acc))
        print(f"{epoch:>5} {clock['train']:>9.1f} {acc:>9.4f} {epoch * len(data.train) / clock['train']:>9.0f}",
              flush=True)
        sync(device)
        clock["since"] = time.perf_counter()

    sync(device)
    clock["since"] = time.perf_counter()
    train(model, data, recipe, seed=args.seed, progress=False, on_epoch=on_epoch)
    if not rows:
        print("the recipe trains 0 epochs (pretrained weights): nothing to time")
        return
    reached = next((r for r in rows if r[2] >= args.target), None)
    epoch, seconds, acc = rows[-1]
    print(f"final: test accuracy {acc:.4f} after {epoch} epochs, {seconds:.1f} s of training, "
          f"{epoch * len(data.train) / seconds:.0f} img/s")
    if reached:
        print(f"target {args.target:.2%} reached at epoch {reached[0]} after {reached[1]:.1f} s of training")
    else:
        print(f"target {args.target:.2%} not reached (best {max(r[2] for r in rows):.4f})")


if __name__ == "__main__":
    main()
