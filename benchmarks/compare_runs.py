"""Compare two finished runs of the same grid cell by cell: how many metric rows differ (timings and memory left
out: they vary run to run), which metrics they belong to, and, for one metric, the change of its mean per dataset ×
backbone × method.

    python benchmarks/compare_runs.py OLD_RUN reports/smoke-cpu                  # records.csv or records.csv.gz
    python benchmarks/compare_runs.py OLD NEW --metric zrf --split test

Used to show what a code change moved: e.g. reports/smoke-cpu after ZRF's random model changed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from method_figures import read_records
from unlearnbench.report.tables import COST_COLUMNS

IDENTITY = ["dataset", "backbone", "method", "params", "seed", "forget_class", "split", "metric"]
MEASURED = {metric for _, metric, *_ in COST_COLUMNS} - {"serving_bytes"}  # timings and memory, not results


def compare(old: pd.DataFrame, new: pd.DataFrame, metric: str, split: str) -> tuple[str, pd.DataFrame]:
    """A summary line per finding and the per-method change of `metric`'s mean on `split` (×100)."""
    keyed = [frame.assign(forget_class=frame["forget_class"].fillna(-1)) for frame in (old, new)]  # all-class rows
    both = keyed[0].merge(keyed[1], on=IDENTITY, suffixes=("_old", "_new"), how="outer", indicator=True)
    lines = [f"rows in one run only: {int((both['_merge'] != 'both').sum())}"]
    both = both[(both["_merge"] == "both") & ~both["metric"].isin(MEASURED)]
    differ = both[~((both["value_old"] == both["value_new"]) | (both["value_old"].isna() & both["value_new"].isna()))]
    lines.append(f"rows compared (timings and memory left out): {len(both)}; differing: {len(differ)}")
    for name, count in differ.groupby("metric").size().items():
        lines.append(f"  {name}: {count} rows differ")
    chosen = both[(both["metric"] == metric) & (both["split"] == split)]
    means = chosen.groupby(["dataset", "backbone", "method"])[["value_old", "value_new"]].mean().mul(100)
    means["change"] = means["value_new"] - means["value_old"]
    return "\n".join(lines), means.round(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--metric", default="zrf")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    summary, means = compare(read_records(args.old), read_records(args.new), args.metric, args.split)
    print(summary)
    print(f"\n{args.metric} on the {args.split} split, mean over forget classes and seeds (×100):")
    print(means.to_string())


if __name__ == "__main__":
    main()
