"""Inference images/second per batch size, for each backbone family, and the ratio to the suite's choice.

    python benchmarks/eval_batch_size.py                      # the mini grid's backbones, one thread
    python benchmarks/eval_batch_size.py --grid paper --device cuda   # the paper grid's full-size ones on a GPU

`predict_logits` (every metric's evaluation) uses `training.eval_batch_size(device)`; this prints, for MNIST-shaped
(1×28×28) and CIFAR-shaped (3×32×32) random inputs, the images per second of a forward pass in eval mode at each
batch size, best of `--repeats` passes over the same images, and each over the chosen size's.
"""
from __future__ import annotations

import argparse
import time

import torch

from unlearnbench.grid import load_grid
from unlearnbench.models import build_backbone
from unlearnbench.planning import resolve_device
from unlearnbench.training import eval_batch_size, prepare

from trainer_throughput import sync  # this folder is on sys.path when a benchmark runs as a script


def images_per_second(model: torch.nn.Module, x: torch.Tensor, batch: int, repeats: int) -> float:
    best = float("inf")
    with torch.no_grad():
        model(x[:batch])  # warm-up
        for _ in range(repeats):
            sync(x.device)
            start = time.perf_counter()
            for s in range(0, len(x), batch):
                model(x[s:s + batch])
            sync(x.device)
            best = min(best, time.perf_counter() - start)
    return len(x) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the grid's workers use one)")
    parser.add_argument("--grid", default="mini", help="the shipped grid (or YAML file) whose backbones to time")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    chosen = eval_batch_size(device)
    batches = sorted(set(args.batches) | {chosen})
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; the suite's batch: {chosen}")
    print(f"{'input':<8}{'backbone':<28}" + "".join(f"{f'bs {b}':>10}" for b in batches) + "   img/s, and / chosen")
    for channels, size in ((1, 28), (3, 32)):
        x = torch.randn(args.images, channels, size, size, device=device)
        for spec in load_grid(args.grid).backbones:
            model = prepare(build_backbone(spec, 10, channels, size), device).eval()
            rates = {b: images_per_second(model, x, b, args.repeats) for b in batches}
            print(f"{f'{channels}x{size}':<8}{spec.label:<28}" + "".join(f"{rates[b]:>10.0f}" for b in batches))
            print(f"{'':<36}" + "".join(f"{rates[b] / rates[chosen]:>9.2f}x" for b in batches), flush=True)


if __name__ == "__main__":
    main()
