"""Forward+backward time of each backbone wrapped in Weight-Filtering layers over the plain backbone, in one run.

For every family (vgg16, resnet18, vit_tiny, vit_small) the plain model and a FilteredModel over an identical copy
are timed interleaved on the same batch: one step = forward, cross-entropy, backward (every backbone weight
trainable in both, the wrapped one also trains α; eval mode, as during untraining). The wrapped model is timed
with one random forget class per sample (the untraining case) and with no class (pass-through). Prints the median
milliseconds per step and the ratios to the plain model.

    python benchmarks/wf_overhead.py                 # CPU-size variants on 1×28×28 (MNIST) inputs
    python benchmarks/wf_overhead.py --full --device cuda   # full-size backbones on 3×32×32 (CIFAR) inputs

On the CPU, glibc's malloc hands freed activation buffers back to the kernel and page-faults them in again on
the next step; which variant pays for that depends on the order of the steps, so small-model ratios swing by
±0.3 between runs (the pass-through column, identical work to plain, shows the noise). For stable numbers keep
freed memory in the process:

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 python benchmarks/wf_overhead.py
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench.models import BackboneSpec, build_backbone
from unlearnbench.training import autocast, prepare
from unlearnbench.methods._weight_filtering import FilteredModel

CPU_SIZE = {
    "vgg16": BackboneSpec("vgg16", 0.125),
    "resnet18": BackboneSpec("resnet18", 0.0625),
    "vit_tiny": BackboneSpec("vit_tiny", 0.333, 0.333, 7),
    "vit_small": BackboneSpec("vit_small", 0.333, 0.333, 7),
}
FULL_SIZE = {name: BackboneSpec(name) for name in CPU_SIZE}
NUM_CLASSES = 10


def step_time(step: Callable[[], None], device: torch.device) -> float:
    """Seconds taken by one call of `step`, synchronising the device around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> Callable[[], None]:
    """A closure running forward, cross-entropy and backward of `model` on (x, y), clearing gradients first."""
    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(x.device):
            logits = model(x, **kwargs)
        F.cross_entropy(logits.float(), y).backward()

    return step


def measure(spec: BackboneSpec, shape: tuple[int, int, int], batch_size: int, repeats: int, warmup: int,
            device: torch.device) -> dict[str, float]:
    """Median milliseconds per step of the plain, per-sample-class and pass-through variants of `spec`."""
    channels, size, _ = shape
    torch.manual_seed(0)
    plain = prepare(build_backbone(spec, NUM_CLASSES, channels, size), device).eval()
    wrapped = prepare(FilteredModel(copy.deepcopy(plain), NUM_CLASSES), device).eval()
    x = torch.randn(batch_size, *shape, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    classes = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    steps = {
        "plain": training_step(plain, x, y),
        "per-sample": training_step(wrapped, x, y, forget_class=classes),
        "pass-through": training_step(wrapped, x, y),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        order = list(steps) if i % 2 == 0 else list(reversed(steps))
        for name in order:
            seconds = step_time(steps[name], device)
            if i >= warmup:
                times[name].append(seconds)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full-size backbones on 3×32×32 inputs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--families", nargs="+", default=list(CPU_SIZE), choices=list(CPU_SIZE))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    specs = FULL_SIZE if args.full else CPU_SIZE
    shape = (3, 32, 32) if args.full else (1, 28, 28)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, input {shape}, "
          f"median of {args.repeats} steps after {args.warmup} warm-up steps, "
          f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}")
    print(f"{'backbone':<26} {'plain ms':>9} {'per-sample ms':>14} {'ratio':>6} {'pass-through ms':>16} {'ratio':>6}")
    for name in args.families:
        spec = specs[name]
        ms = measure(spec, shape, args.batch_size, args.repeats, args.warmup, device)
        print(f"{spec.label:<26} {ms['plain']:9.2f} {ms['per-sample']:14.2f} {ms['per-sample'] / ms['plain']:6.3f} "
              f"{ms['pass-through']:16.2f} {ms['pass-through'] / ms['plain']:6.3f}")


if __name__ == "__main__":
    main()
