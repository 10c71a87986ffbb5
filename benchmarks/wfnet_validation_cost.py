"""What WF-Net's validation split costs it on the mini grid: one WF-Net round (the grid's tuned parameters) on a
mini group with the whole validation split, then with `--per-class` validation images a class.

    python benchmarks/wfnet_validation_cost.py --data-root ../shared/data --cache-dir results/mini-epsilon/cache

The mini grid carves its validation split (10 %) before cutting training to 400 images a class, so it holds 6,000
MNIST images against 4,000 training images; WF-Net's stopping rule scores its loss on all of it `evals_per_epoch`
times an epoch. Prints each round's wall seconds (one torch thread) and its evaluation count.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from unlearnbench.data import dataset_identity, load_dataset, per_class_subset
from unlearnbench.execution import stage_dataset_key, unlearn_cell
from unlearnbench.grid import load_grid
from unlearnbench.planning import RunOptions, plan
from unlearnbench.stages import Stages
from unlearnbench.store import Cache
from unlearnbench.training import resolve_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="mini-epsilon", help="a grid with WF-Net on the mini groups")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path("results/cache"))
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = load_grid(args.grid)
    p = plan(grid, RunOptions(cache_dir=args.cache_dir, data_root=args.data_root, progress=False))
    cell = next(c for c in p.cells if c.method == "wfnet" and c.dataset.name == args.dataset
                and c.backbone.name == args.backbone)
    dataset, backbone, seed = cell.group
    whole = {k: v for k, v in dataset.options_dict.items() if k != "val_per_class"}  # the uncapped carve
    data = load_dataset(dataset.name, root=args.data_root, cache_dir=args.cache_dir, val_fraction=grid.val_fraction,
                        options=whole)
    files = dataset_identity(dataset.name, dataset.options_dict, args.data_root, args.cache_dir, False)
    stages = Stages(data, stage_dataset_key(dataset, files, grid.val_fraction), backbone,  # the grid's own models
                    resolve_recipe(dataset.name, backbone, grid.recipe), seed, Cache(args.cache_dir), args.data_root,
                    progress=False)
    stages.original()  # trained (or loaded) before the timing
    labels = data.val.labels.numpy()
    keep = torch.from_numpy(per_class_subset(np.arange(len(labels)), labels, args.per_class, 0))
    print(f"{dataset.label} / {backbone.label}, WF-Net round on classes {list(cell.forget_classes)}, "
          f"{len(data.train)} training images")
    for name, val in (("whole validation split", data.val), (f"{args.per_class} a class", data.val.subset(keep))):
        stages.data = dataclasses.replace(data, val=val)
        start = time.perf_counter()
        model, _ = unlearn_cell(cell, p.methods["wfnet"], stages, False)
        print(f"  {name}: {len(val)} validation images, {time.perf_counter() - start:.1f} s, "
              f"{model.diagnostics().get('untrain_evals'):.0f} evaluations")


if __name__ == "__main__":
    main()
