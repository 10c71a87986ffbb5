"""How far the state-of-the-art methods' smoke results move with the seed on this host.

Runs what tests/test_sota_behaviour.py runs (the smoke grid with every method, the tuned parameters, accuracy on
the test split, 2 workers of one torch thread) for several seeds, and prints each backbone × method's mean test
Acc_r / Acc_f over the forget classes, per seed, with the worst over seeds. A seed retrains the original and redraws
every method's randomness: the kind of perturbation another CPU makes (other kernels, other rounding), which the
test's bounds must survive.

    python benchmarks/sota_spread.py --seeds 0 1 2 --out results/sota-spread
    python benchmarks/sota_spread.py --records reports/smoke-seeds/records.csv.gz   # a run already made
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from unlearnbench.grid import load_grid, with_methods
from unlearnbench.launchers import LaunchOptions
from unlearnbench.runner import RunOptions, run

# the methods tests/test_sota_behaviour.py holds to its bounds (the two state-of-the-art waves)
SOTA_METHODS = ["salun", "l1_sparse", "scrub", "bad_teacher", "ssd", "lf_ssd", "unsir", "boundary_shrink",
                "boundary_expand", "cf_k", "eu_k", "delete", "fisher", "sfron", "fcs", "msg"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("results/sota-spread"))
    parser.add_argument("--cache-dir", type=Path, default=Path("results/sota-spread-cache"))
    parser.add_argument("--records", type=Path, help="summarise this run's records.csv(.gz) instead of running")
    args = parser.parse_args()
    grid = dataclasses.replace(with_methods(load_grid("smoke"), "all"), seeds=args.seeds, metrics=["accuracy"],
                               metric_settings={"accuracy": {"splits": ["test"]}})
    if args.records:
        records = pd.read_csv(args.records)
        records = records[records.method.isin(["original", *SOTA_METHODS])]
        print(f"{args.records}: test split, mean over forget classes, Acc_r / Acc_f in %")
    else:
        started = time.perf_counter()
        records = run(grid, RunOptions(cache_dir=args.cache_dir, device="cpu", progress=False, out=args.out,
                                       only={"method": ",".join(["original", *SOTA_METHODS])}),
                      LaunchOptions(workers=2, threads=1)).records
        print(f"{len(args.seeds)} seeds in {time.perf_counter() - started:.0f} s on {platform.machine()} "
              f"({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}; test split, mean over "
              f"forget classes {grid.forget_classes}, Acc_r / Acc_f in %")
    test = records[(records.split == "test") & records.metric.isin(["acc_retain", "acc_forget"])]
    means = test.groupby(["backbone", "method", "seed", "metric"]).value.mean().unstack("metric") * 100
    for (backbone, method), rows in means.groupby(level=["backbone", "method"]):
        per_seed = "  ".join(f"s{seed}: {r.acc_retain:5.1f} / {r.acc_forget:5.1f}"
                             for (_, _, seed), r in rows.iterrows())
        print(f"{backbone:28} {method:18} {per_seed}   worst: {rows.acc_retain.min():5.1f} / "
              f"{rows.acc_forget.max():5.1f}")
    if not args.records:
        means.to_csv(args.out / "spread.csv")


if __name__ == "__main__":
    main()
