"""How optimistic a tuned method's validation forget accuracy is against the test split (docs/protocol.md, "validation
is read inside some methods too"): each study's best trial in a tuning result against the same cells' test Acc_f
in a run of the grid that applied it.

    python benchmarks/validation_optimism.py                      # reports/tuning/mini against reports/mini-cpu
    python benchmarks/validation_optimism.py --tuning DIR --run DIR --classes 1,4,7 --seed 0
    python benchmarks/validation_optimism.py --seeds-run reports/smoke-seeds  # the tuned seed against the others

Per method: test Acc_f minus validation Acc_f in points (mean over its studies, each a mean over the tuning classes),
and the cell-weighted means of the methods with a `stop_acc` rule (they stop on the validation split's class) and
of those without. With --seeds-run: whether the seed the studies tuned on (0, whose cells are the chosen trials'
models, their random streams selected with their parameters) is closer to retraining on test than the run's other
seeds (the objective's distance on the test split, per backbone × method). Reads files only; prints what it
measured.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from unlearnbench.discovery import discover
from unlearnbench.report.records import read_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuning", type=Path, default=Path("reports/tuning/mini"))
    parser.add_argument("--run", type=Path, default=Path("reports/mini-cpu"))
    parser.add_argument("--classes", default="1,4,7")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds-run", type=Path, help="a run of several seeds with the tuned parameters")
    args = parser.parse_args()
    if args.seeds_run:
        return tuned_seed_on_test(args.seeds_run, args.seed)
    classes = [int(c) for c in args.classes.split(",")]
    methods, _ = discover()
    trials = pd.read_csv(args.tuning / "trials.csv", keep_default_na=False)
    trials = trials[trials.error == ""]
    best = trials.loc[trials.groupby(["dataset", "backbone", "method"]).objective.idxmin()]
    path = next(p for p in (args.run / "records.csv", args.run / "records.csv.gz") if p.is_file())
    records = read_records(path)
    records = records[(records.split == "test") & (records.metric == "acc_forget") & (records.seed == args.seed)
                      & records.forget_class.isin(classes)]
    rows = []
    for study in best.itertuples():
        params = json.loads(study.params)
        cells = records[(records.dataset == study.dataset) & (records.backbone == study.backbone)
                        & (records.method == study.method)]
        cells = cells[cells.params.map(lambda p: json.loads(p) == params).astype(bool)] if len(cells) else cells
        if len(cells):
            rows.append({"method": study.method, "stop_acc": "stop_acc" in methods[study.method].cls().parameters,
                         "cells": len(cells), "points": 100 * (cells.value.mean() - study.val_acc_forget)})
    frame = pd.DataFrame(rows)
    print(f"test minus validation Acc_f, points ({args.tuning} against {args.run}, classes {classes}, "
          f"seed {args.seed}):")
    print(frame.groupby("method").agg(stop_acc=("stop_acc", "first"), cells=("cells", "sum"),
                                      points=("points", "mean")).round(2).to_string())
    for stop, group in frame.groupby("stop_acc"):
        mean = (group.points * group.cells).sum() / group.cells.sum()
        by_method = group.groupby("method").points.mean()
        print(f"{'with' if stop else 'without'} a stop_acc rule: {mean:+.2f} points over {group.cells.sum()} cells "
              f"({by_method.min():+.2f} to {by_method.max():+.2f} by method)")


def tuned_seed_on_test(run: Path, tuned_seed: int) -> None:
    path = next(p for p in (run / "records.csv", run / "records.csv.gz") if p.is_file())
    records = read_records(path)
    test = records[records.metric.isin(["acc_retain", "acc_forget"]) & (records.split == "test")]
    wide = test.pivot_table(index=["backbone", "method", "seed", "forget_class"], columns="metric",
                            values="value").reset_index()
    retrained = wide[wide.method == "retrain"].set_index(["backbone", "seed", "forget_class"])
    wide = wide[~wide.method.isin(["retrain", "original"])]
    reference = retrained.loc[list(zip(wide.backbone, wide.seed, wide.forget_class))]
    wide["distance"] = (abs(wide.acc_retain.to_numpy() - reference.acc_retain.to_numpy())
                        + abs(wide.acc_forget.to_numpy() - reference.acc_forget.to_numpy()))
    by_seed = wide.groupby(["backbone", "method", "seed"]).distance.mean().unstack("seed")
    others = by_seed.drop(columns=tuned_seed).mean(axis=1)
    gap = by_seed[tuned_seed] - others
    print(f"{run}: test distance to retraining, seed {tuned_seed} minus the mean of seeds "
          f"{', '.join(map(str, by_seed.columns.drop(tuned_seed)))}, per backbone × method:")
    print(gap.round(3).to_string())
    print(f"seed {tuned_seed} closer than the others' mean in {(gap < 0).sum()} of {len(gap)}; mean gap "
          f"{gap.mean():+.4f} (negative: the tuned seed is luckier on test)")


if __name__ == "__main__":
    main()
