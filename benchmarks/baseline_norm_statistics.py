"""Where the fine-tuning baselines' forgetting lives: BatchNorm statistics or weights (the cause of weak baselines).

    python benchmarks/baseline_norm_statistics.py                                 # smoke CNN, mnist5k
    python benchmarks/baseline_norm_statistics.py --backbone resnet18 --width 0.0625 --set lr=0.001

For each method (default random labels, negative gradient, their retain-mixed variants and fine-tuning) and all
classes of the dataset, it unlearns with the method's parameters (defaults, or `--set KEY=VALUE`) under three
BatchNorm treatments and prints the mean validation Acc_r / Acc_f (never test) and optimiser steps:

- batch: train-mode BatchNorm (batch statistics, running statistics updated), as ordinary fine-tuning;
- batch, stats restored: the same model with the original's running statistics put back after unlearning: what
  is left is what the weights learnt, so the gap to `batch` is the part carried by the drifted statistics;
- frozen: eval-mode BatchNorm during unlearning (`norm_statistics: frozen`): one-class batches cannot move the
  statistics, so any forgetting must be in the weights.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from unlearnbench.cli import parse_pairs
from unlearnbench.data import load_dataset
from unlearnbench.discovery import discover, get_method
from unlearnbench import UserError
from unlearnbench.models import BackboneSpec
from unlearnbench.grid import Cell, DatasetEntry
from unlearnbench.execution import unlearn_cell
from unlearnbench.stages import Stages
from unlearnbench.store import Cache
from unlearnbench.training import predict_logits, resolve_recipe

METHODS = "random_labels,negative_gradient,random_labels_mixed,neggrad_plus,finetune"


def restore_statistics(net: nn.Module, original: nn.Module) -> None:
    """Copy the original model's BatchNorm running statistics into `net` (same architecture)."""
    for mine, theirs in zip(net.modules(), original.modules()):
        if isinstance(mine, nn.modules.batchnorm._BatchNorm):
            mine.running_mean.copy_(theirs.running_mean)
            mine.running_var.copy_(theirs.running_var)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--data-root")
    parser.add_argument("--cache-dir", default="results/cache")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--width", type=float, default=0.0625)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="parameter override for every method (YAML value), e.g. lr=0.001")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import yaml

    torch.set_num_threads(args.threads)
    overrides = {k: yaml.safe_load(v) for k, v in parse_pairs(args.set, "--set").items()}
    spec = BackboneSpec(args.backbone, width=args.width)
    data = load_dataset(args.dataset, root=args.data_root, cache_dir=args.cache_dir, val_fraction=0.1,
                        device=torch.device("cpu"))
    stages = Stages(data, {"name": args.dataset}, spec, resolve_recipe(args.dataset, spec), 0, Cache(args.cache_dir),
                    log=lambda _: None)
    original = stages.original()
    labels = data.val.labels
    hits = predict_logits(original, data, data.val).argmax(1) == labels
    print(f"{args.dataset} {spec.label}: original validation accuracy {hits.float().mean():.3f}; torch "
          f"{torch.__version__}, {args.threads} thread(s)")
    methods, _ = discover()
    classes = list(range(data.num_classes))
    print(f"{'method':<20} {'BatchNorm':<22} {'Acc_r':>6} {'Acc_f':>6} {'steps':>6} {'seconds':>8}")
    for name in args.methods.split(","):
        info = get_method(methods, name)
        for variant in ("batch", "batch, stats restored", "frozen"):
            params = {**info.cls().default_parameters(spec), **overrides,
                      "norm_statistics": "frozen" if variant == "frozen" else "batch"}
            retain, forget, steps, start = [], [], [], time.perf_counter()
            for c in classes:
                cell = Cell(DatasetEntry(args.dataset), spec, name, tuple(sorted(params.items())), 0, c, tuple(classes))
                model, _ = unlearn_cell(cell, info, stages, progress=False)  # seeded as the grid's cell would be
                net = model.for_class(c)
                if variant == "batch, stats restored":
                    restore_statistics(net, original)
                hit = predict_logits(net, data, data.val).argmax(1) == labels
                retain.append(float(hit[labels != c].float().mean()))
                forget.append(float(hit[labels == c].float().mean()))
                steps.append(model.diagnostics().get("steps", float("nan")))
            n = len(retain)
            print(f"{name:<20} {variant:<22} {sum(retain) / n:6.3f} {sum(forget) / n:6.3f} {sum(steps) / n:6.1f} "
                  f"{time.perf_counter() - start:8.1f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
