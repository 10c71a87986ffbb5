"""Does capping the validation monitor's 1/CE change where WF-Net stops, and its results?

    python benchmarks/wfnet_stopping_rule.py --grid smoke --cache-dir results/cache-tune-smoke --caps 0,1.4427

For every dataset × backbone of the grid (first seed) it runs WF-Net's round with the grid's (tuned) parameters
over the grid's tuning classes once per `val_reciprocal_cap` value (0: uncapped) and prints, per cap: the
validation evaluations made, the step of the best one (the α kept) and the last, and mean Acc_r / Acc_f over the
classes on the validation split, their distance to the retrained models (the tuning objective, which chooses) and
on the test split (reported only). Uncapped, one forget sample still classified with certainty adds up to 10⁶ to the
monitored loss; a cap of 1/ln 2 ≈ 1.44 counts such a sample as one whose class keeps probability 1/2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from unlearnbench import UserError
from unlearnbench.execution import GroupKey, load_group, unlearn_cell
from unlearnbench.grid import load_grid
from unlearnbench.planning import RunOptions, plan
from unlearnbench.training import predict_logits
from unlearnbench.tuning import retrain_distance, trial_cell_classes, tuning_classes, tuning_settings, val_accuracies


def split_accuracies(net: torch.nn.Module, stages, split: str, c: int) -> dict[str, float]:
    data = stages.data
    labels = data.split(split).labels
    hit = predict_logits(net, data, data.split(split)).argmax(1) == labels
    return {"acc_retain": float(hit[labels != c].float().mean()), "acc_forget": float(hit[labels == c].float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="smoke")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=Path("results/cache"))
    parser.add_argument("--caps", default="0,1.4427", help="comma-separated val_reciprocal_cap values")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.grid)
    options = RunOptions(cache_dir=args.cache_dir, data_root=args.data_root, progress=False,
                         only={"method": "wfnet", "seed": str(grid.seeds[0])})
    p = plan(grid, options)
    info = p.methods["wfnet"]
    settings = tuning_settings(grid)
    caps = [float(v) for v in args.caps.split(",")]
    print(f"grid {grid.name}; torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'group':<42} {'cap':>7} {'evals':>5} {'best':>5} {'last':>5} {'val Acc_r':>9} {'val Acc_f':>9} "
          f"{'distance':>8} {'test Acc_r':>10} {'test Acc_f':>10}")
    groups = {}
    for cell in p.cells:
        groups.setdefault(cell.group, cell)
    for cell in groups.values():
        classes = tuning_classes(settings, cell)
        cell = trial_cell_classes(cell, classes)
        job = type("Job", (), {"cell": cell, "device": "cpu", "grid": grid, "options": options,
                               "log_path": args.cache_dir / "wfnet_stopping_rule.log"})
        stages = load_group(GroupKey.of(job))
        reference = {c: val_accuracies(stages.stage("retrained", c)[0], stages, c) for c in classes}
        for cap in caps:
            params = {**cell.params_dict, "val_reciprocal_cap": cap}
            capped = dataclasses.replace(cell, params=tuple(sorted(params.items())))
            model, _ = unlearn_cell(capped, info, stages, progress=False)
            history = model.history
            best = min(history, key=lambda h: h["val_loss"])
            val = [val_accuracies(model.for_class(c), stages, c) for c in classes]
            test = [split_accuracies(model.for_class(c), stages, "test", c) for c in classes]
            distance = sum(retrain_distance(v, reference[c]) for v, c in zip(val, classes)) / len(classes)

            def mean(rows, key):
                return 100 * sum(r[key] for r in rows) / len(rows)

            print(f"{cell.dataset.label + ' ' + cell.backbone.label:<42} {cap:7.4g} {len(history):5d} "
                  f"{best['step']:5d} {history[-1]['step']:5d} {mean(val, 'acc_retain'):9.1f} "
                  f"{mean(val, 'acc_forget'):9.1f} {distance:8.4f} {mean(test, 'acc_retain'):10.1f} "
                  f"{mean(test, 'acc_forget'):10.1f}", flush=True)
    print(json.dumps({"classes": classes}))


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
