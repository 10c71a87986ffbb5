"""Whole-grid wall time, per-method unlearning cost against WF-Net's single round, and what the metrics add.

    python benchmarks/grid_wall_time.py                       # smoke grid, --workers 1 then 2, all metrics
    python benchmarks/grid_wall_time.py --workers 1 --accuracy-only
    python benchmarks/grid_wall_time.py --grid mini --data-root ../shared/data --workers 2
    python benchmarks/grid_wall_time.py --workers 2 1 --accuracy-only --keep results/bench-smoke   # keep the runs

Each run is the user's command (`python run_bench.py --grid G --workers N`) into a fresh run folder and a fresh
cache, so nothing is reused; the runs are made back to back in this one process and their wall times compared.
From the first run's records it prints, per backbone, the seconds each method spent producing unlearned models
for all classes (`unlearn_seconds` summed over classes) and that total over WF-Net's single round.
`--accuracy-only` adds one more run of the same grid with only the accuracy metric: the difference is the time the
other metrics (ZRF, relearn time, insertion/deletion, MIA, distance to retrain) add.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent


def run_grid(grid: str, workers: int, extra: list[str], folder: Path) -> tuple[float, pd.DataFrame]:
    """(wall seconds, records) of `run_bench.py` on `grid` with `workers` local workers, cold cache."""
    command = [sys.executable, str(ROOT / "run_bench.py"), "--grid", grid, "--workers", str(workers), "--quiet",
               "--out", str(folder / "run"), "--cache-dir", str(folder / "cache"), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some cells failed; they are listed in the run's failures.csv
        sys.exit(f"run_bench.py exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return wall, pd.read_csv(folder / "run" / "records.csv")


def accuracy_only_grid(grid: str, folder: Path) -> str:
    """A copy of `grid` that computes only the accuracy metric (same cells, same training)."""
    from importlib import resources

    path = Path(grid)
    text = path.read_text() if path.exists() else \
        resources.files("unlearnbench").joinpath(f"configs/grids/{grid}.yaml").read_text()
    raw = yaml.safe_load(text)
    raw["metrics"] = ["accuracy"]
    path = folder / "accuracy-only.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def unlearn_cost(records: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and method: seconds to produce unlearned models for every class, and that over WF-Net's."""
    cost = records[records["metric"] == "unlearn_seconds"]
    total = cost.groupby(["dataset", "backbone", "method"])["value"].sum().rename("seconds").reset_index()
    wfnet = total[total["method"] == "wfnet"].set_index(["dataset", "backbone"])["seconds"]
    total["over_wfnet"] = [s / wfnet.get((d, b), float("nan")) for d, b, s in
                           zip(total["dataset"], total["backbone"], total["seconds"])]
    return total.sort_values(["dataset", "backbone", "seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="smoke")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--accuracy-only", action="store_true", help="also time the grid with accuracy alone")
    parser.add_argument("--data-root")
    parser.add_argument("--keep", type=Path, help="keep the run folders (records, reports) under this folder")
    args = parser.parse_args()
    extra = ["--data-root", args.data_root] if args.data_root else []
    print(f"grid {args.grid}; {os.cpu_count()} CPU cores; python {sys.version.split()[0]}")
    walls, first = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        for workers in args.workers:
            folder = Path(tmp) / f"workers{workers}"
            walls[f"--workers {workers}"], records = run_grid(args.grid, workers, extra, folder)
            first = records if first is None else first
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB → GiB, largest so far
            print(f"--workers {workers}: {walls[f'--workers {workers}']:.1f} s wall; largest process so far "
                  f"{peak:.2f} GiB resident", flush=True)
        if args.accuracy_only:
            grid = accuracy_only_grid(args.grid, Path(tmp))
            wall, _ = run_grid(grid, args.workers[0], extra, Path(tmp) / "accuracy-only")
            full = walls[f"--workers {args.workers[0]}"]
            print(f"accuracy metric only, --workers {args.workers[0]}: {wall:.1f} s wall; the other metrics add "
                  f"{full - wall:.1f} s ({(full - wall) / full:.0%} of the full run)", flush=True)
    if len(walls) > 1:
        base = next(iter(walls.values()))
        print("wall time over the first run: " + ", ".join(f"{k} {v / base:.2f}×" for k, v in walls.items()))
    print("\nseconds to produce unlearned models for every class (first run), and over WF-Net's single round:")
    print(unlearn_cost(first).to_string(index=False, float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
