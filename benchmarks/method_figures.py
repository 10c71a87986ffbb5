"""Per-method figures of a finished run, as a Markdown table per dataset: test-split Acc_r / Acc_f / ZRF (%) averaged
over the forget classes run, the seconds to unlearn those classes, and the seconds a per-class method would need for
every class of the dataset (its mean per class × the class count) over WF-Net's one round.

    python benchmarks/method_figures.py reports/mini-all-methods            # records.csv or records.csv.gz
    python benchmarks/method_figures.py RUN --classes 10

WF-Net's round trains the filters of every class at once, so its cost does not grow with the classes asked for.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from unlearnbench.report.records import read_records as read_records_file
from unlearnbench.report.names import method_order


def read_records(folder: Path) -> pd.DataFrame:
    """The run folder's records.csv or (as reports/ keep it) records.csv.gz, read and checked as `report` reads it."""
    for name in ("records.csv", "records.csv.gz"):
        if (folder / name).is_file():
            return read_records_file(folder / name)
    raise SystemExit(f"{folder} holds no records.csv or records.csv.gz.")


def figures(records: pd.DataFrame, classes: int) -> dict[str, pd.DataFrame]:
    """Per dataset, a frame indexed by method with one text column per backbone."""
    def metric(name: str, split: str, how: str) -> pd.Series:
        rows = records[(records.metric == name) & (records.split == split)]
        return rows.groupby(["dataset", "backbone", "method"])["value"].agg(how)

    acc_r, acc_f, zrf = (100 * metric(m, "test", "mean") for m in ("acc_retain", "acc_forget", "zrf"))
    cost = records[records.metric == "unlearn_seconds"]
    group = ["dataset", "backbone", "method"]
    # seconds for the classes run: summed over a run's cells, averaged over seeds and parameter sets
    seconds = cost.groupby(group + ["seed", "params"])["value"].sum().groupby(level=group).mean()
    per_cell = cost.groupby(group)["value"].mean()  # a per-class method's seconds per class; WF-Net's round
    per_class = cost.groupby(group)["forget_class"].apply(lambda c: bool(c.notna().all()))
    tables = {}
    for dataset in pd.unique(records.dataset):
        columns = {}
        for backbone in pd.unique(records[records.dataset == dataset].backbone):
            wfnet = per_cell.get((dataset, backbone, "wfnet"), float("nan"))
            texts = {}
            for method in method_order(pd.unique(records[(records.dataset == dataset)
                                                         & (records.backbone == backbone)].method)):
                key = (dataset, backbone, method)
                if key not in acc_r:
                    continue
                s = seconds.get(key, float("nan"))
                if method == "wfnet":
                    ratio = "1.0"
                elif wfnet > 0 and per_class.get(key, False) and s > 0:  # NaN (no WF-Net) compares False
                    ratio = f"{per_cell[key] * classes / wfnet:.2f}"
                else:
                    ratio = "—"
                texts[method] = (f"{acc_r[key]:.1f} / {acc_f.get(key, float('nan')):.1f} / "
                                 f"{zrf.get(key, float('nan')):.1f} / {s:.1f} / {ratio}")
            columns[backbone] = pd.Series(texts)
        tables[dataset] = pd.DataFrame(columns).fillna("—")
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (or a report folder holding its records)")
    parser.add_argument("--classes", type=int, default=10, help="the dataset's class count (default 10)")
    args = parser.parse_args()
    for dataset, table in figures(read_records(args.run), args.classes).items():
        print(f"\n### {dataset}: Acc_r / Acc_f / ZRF (%) / seconds for the classes run / all {args.classes} classes "
              f"÷ WF-Net's round\n")
        print("| method | " + " | ".join(table.columns) + " |")
        print("|---|" + "---|" * len(table.columns))
        for method, row in table.iterrows():
            print(f"| {method} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
