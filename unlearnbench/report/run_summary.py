"""The table printed at the end of a run: Acc_r, Acc_f, ZRF and unlearning seconds per method."""
from __future__ import annotations

import json

import pandas as pd

from ..store import FAILURE_COLUMNS
from .names import method_order
from .records import failed_cells, read_failures

SUMMARY_KEYS = ["dataset", "backbone", "method", "params"]
# column, metric, split, aggregate over a seed's forget classes, scale
SUMMARY_COLUMNS = [("Acc_r %", "acc_retain", "test", "mean", 100.0), ("Acc_f %", "acc_forget", "test", "mean", 100.0),
                   ("ZRF ×100", "zrf", "test", "mean", 100.0), ("unlearn s", "unlearn_seconds", "all", "sum", 1.0)]


def current_records(result) -> pd.DataFrame:
    """A RunResult's records as its report shows them: without the cells its folder's failures.csv (else the run's
    own failures) lists as failed, whose rows in records.csv are an earlier run's, kept when this one failed."""
    path = result.run_dir / "failures.csv"
    failures = read_failures(path) if path.is_file() else pd.DataFrame(result.failures, columns=FAILURE_COLUMNS)
    if result.records is None or result.records.empty:
        return result.records
    return result.records[failed_cells(result.records, failures).isna()]


def format_summary(records: pd.DataFrame) -> str:
    """The end-of-run table: per dataset × backbone × method, the test-split Acc_r and Acc_f (%) and ZRF (×100)
    averaged over forget classes, and the seconds to unlearn the classes the records hold (unlearn_seconds summed
    over a method's cells: one class under --only forget_class=1), each then averaged over seeds; aligned columns,
    '—' where not measured, '' for no records."""
    if records is None or records.empty:
        return ""
    records = records.assign(params=records["params"].fillna("{}").astype(str))
    values: dict[tuple, float] = {}
    for column, metric, split, how, scale in SUMMARY_COLUMNS:
        rows = records[(records["metric"] == metric) & (records["split"] == split)].dropna(subset=["value"])
        if rows.empty:
            continue
        per_seed = rows.groupby(SUMMARY_KEYS + ["seed"])["value"].agg(how)
        for key, value in per_seed.groupby(level=SUMMARY_KEYS).mean().items():
            values[(*key, column)] = float(value) * scale
    measured = {key[:-1] for key in values}
    order = {k: {v: i for i, v in enumerate(pd.unique(records[k]))} for k in ("dataset", "backbone")}
    order["method"] = {m: i for i, m in enumerate(method_order(pd.unique(records["method"])))}
    keys = [k for k in records[SUMMARY_KEYS].drop_duplicates().itertuples(index=False, name=None) if k in measured]
    keys.sort(key=lambda k: (order["dataset"][k[0]], order["backbone"][k[1]], order["method"][k[2]]))
    if not keys:
        return ""
    settings = records[SUMMARY_KEYS].drop_duplicates().groupby(SUMMARY_KEYS[:3])["params"].nunique()
    header = ["dataset", "backbone", "method"] + [c[0] for c in SUMMARY_COLUMNS]
    lines = []
    for dataset, backbone, method, params in keys:
        label = method
        if settings[(dataset, backbone, method)] > 1:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(json.loads(params or "{}").items()))
            label = f"{method} ({shown or 'defaults'})"
        numbers = [values.get((dataset, backbone, method, params, c[0])) for c in SUMMARY_COLUMNS]
        lines.append([dataset, backbone, label] + ["—" if v is None else f"{v:.1f}" for v in numbers])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]

    def render(row: list[str]) -> str:
        cells = [text.ljust(w) if i < 3 else text.rjust(w) for i, (text, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    note = ("Test split, means over forget classes and seeds; Acc_r/Acc_f: accuracy (%) on the retain/forget set; "
            "unlearn s: seconds to unlearn the classes these records hold (a per-class method's cells summed); "
            "— not measured.")
    return "\n".join([render(header)] + [render(row) for row in lines] + [note])
