"""The report's tables computed from records: Table 1, Table 2, cost, and an all-metrics summary.

Each table keeps its numbers in a long frame (`values`: one row per table cell with the mean, its 95 % confidence
interval and n, the standard deviation over seeds, the numbers of seeds and classes, and the paired tests' p-values
against WF-Net and retraining) and its layout as strings (`display`, absent cells shown as "—"). A per-class
metric's cell pools its n = seeds × forget classes values; see `seed_stats` and docs/protocol.md.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .names import display_name, method_order
from .records import CURVE_METRIC
from .stats import ALPHA, LEVEL, holm, signed_rank_p, t_half_width

MISSING = "—"
CELL_KEYS = ["dataset", "backbone", "method", "params"]
TABLE1_COLUMNS = ["Acc_r", "Acc_f", "ZRF", "RT (n)"]
SPLIT_ORDER = ("test", "train", "val", "all")
# each cell is tested against these methods' cells (same dataset, backbone, column); its mark where it differs
REFERENCES = {"wfnet": "†", "retrain": "‡"}
STAT_COLUMNS = (["mean", "ci_low", "ci_high", "n", "std", "seeds", "classes", "classes_min"]
                + [f"p_vs_{m}{adjusted}" for m in REFERENCES for adjusted in ("", "_holm")])
UNITS = "(seed, forget class) values"  # what n counts in a per-class metric's cell


@dataclass(frozen=True)
class Table:
    """A report table: file stem, title, caption (plain text), numbers (long) and layout (wide strings)."""

    name: str
    title: str
    caption: str
    values: pd.DataFrame
    display: pd.DataFrame


def row_labels(records: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Display name of each (method, params): the paper's name or the method's own, plus the parameters
    when the records hold several parameter settings of that method for one dataset × backbone (a sweep;
    family defaults that differ between backbones are not one)."""
    pairs = records[["method", "params"]].drop_duplicates()
    per_cell = records[["dataset", "backbone", "method", "params"]].drop_duplicates()
    settings = per_cell.groupby(["dataset", "backbone", "method"])["params"].nunique().groupby("method").max()
    labels = {}
    for method, params in pairs.itertuples(index=False):
        name = display_name(method)
        if settings[method] > 1:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(json.loads(params or "{}").items()))
            name = f"{name} ({shown or 'defaults'})"
        labels[(method, params)] = name
    return labels


NUMBER = re.compile(r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def params_key(params: str) -> tuple:
    """Sort key of a params JSON: its text, each number in it compared as a number (lambda_1=2 before 10)."""
    parts = NUMBER.split(str(params))
    return tuple(float(part) if i % 2 else part for i, part in enumerate(parts)), str(params)


def _ordered_rows(records: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """Distinct `keys` tuples in run order for datasets/backbones, paper order for methods, then params
    (`params_key`)."""
    order = {"method": {m: i for i, m in enumerate(method_order(records["method"].unique()))}}
    for key in ("dataset", "backbone"):
        order[key] = {v: i for i, v in enumerate(pd.unique(records[key]))}
    rows = records[keys].drop_duplicates().itertuples(index=False, name=None)
    return sorted(rows, key=lambda r: tuple(order[k][v] if k in order else params_key(v) if k == "params" else str(v)
                                            for k, v in zip(keys, r)))


def method_rows(records: pd.DataFrame, labels: dict) -> list[tuple[str, str, str, dict]]:
    """Table rows as (backbone, method, label, dataset → params): one row per backbone × method where each dataset
    has one parameter setting of it (tuned parameters differ between datasets, but are no sweep), else one row per
    setting (`labels`: row_labels, which name the settings of a sweep)."""
    rows: dict[tuple, tuple] = {}
    settings = records[["backbone", "method", "dataset", "params"]].drop_duplicates()
    per_method = {key: group[["dataset", "params"]] for key, group in settings.groupby(["backbone", "method"])}
    for backbone, method, params in _ordered_rows(records, ["backbone", "method", "params"]):
        per_dataset = per_method[(backbone, method)]
        if per_dataset["dataset"].is_unique:  # one setting a dataset: one row
            rows.setdefault((backbone, method), (backbone, method, display_name(method),
                                                 dict(per_dataset.itertuples(index=False, name=None))))
        else:
            datasets = per_dataset[per_dataset["params"] == params]["dataset"]
            rows[(backbone, method, params)] = (backbone, method, labels[(method, params)],
                                                dict.fromkeys(datasets, params))
    return list(rows.values())


def pick_split(records: pd.DataFrame, metric: str, prefer: tuple[str, ...]) -> tuple[pd.DataFrame, str | None]:
    """The rows of `metric` on the first split of `prefer` (then any other split) that has some; (rows, split)."""
    rows = records[records["metric"] == metric]
    present = list(pd.unique(rows["split"]))
    for split in list(prefer) + [s for s in SPLIT_ORDER if s not in prefer] + present:
        if split in present:
            return rows[rows["split"] == split], split
    return rows, None


def sample_units(rows: pd.DataFrame, keys: list[str], over_classes: str | Callable = "mean") -> pd.DataFrame:
    """The values a cell's interval and paired tests use, one per sampling unit. With `over_classes` 'mean': one
    per (seed, forget class) (rows without a class, e.g. an all-class method's cost, give one per seed); with any
    other aggregate (a sum or max over a seed's classes): that aggregate, one per seed. Columns: keys, seed,
    unit_class (the forget class, −1 for a per-seed unit) and value."""
    if over_classes == "mean":
        units = rows.assign(unit_class=pd.to_numeric(rows["forget_class"]).astype(float).fillna(-1.0))
        units = units.groupby(keys + ["seed", "unit_class"], dropna=False)["value"].mean().reset_index()
    else:
        units = rows.groupby(keys + ["seed"], dropna=False)["value"].agg(over_classes).reset_index()
        units = units.assign(unit_class=-1.0)
    return units[keys + ["seed", "unit_class", "value"]]


def paired_tests(units: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell (`keys`): for each reference method m of REFERENCES, `p_vs_m`, the two-sided Wilcoxon signed-rank
    p-value (stats.signed_rank_p) of the cell's units against m's cell with the same other keys, paired on (seed,
    unit_class), and `p_vs_m_holm`, Holm-adjusted over every distinct pair of cells tested within those other keys
    (one column of one dataset × backbone; the test of m against m' counts once). NaN where m's cell is absent or
    is the cell itself, where m has several parameter settings there, or where no unit pairs."""
    columns = [f"p_vs_{m}{adjusted}" for m in REFERENCES for adjusted in ("", "_holm")]
    method_at = keys.index("method")
    group_at = [i for i, k in enumerate(keys) if k not in ("method", "params")]
    unit = list(zip(units["seed"], units["unit_class"]))
    value = units["value"].to_numpy(float)
    cells = {key: {unit[i]: value[i] for i in rows} for key, rows in units.groupby(keys, dropna=False).indices.items()}
    groups: dict[tuple, list[tuple]] = {}
    for key in cells:
        groups.setdefault(tuple(key[i] for i in group_at), []).append(key)
    results = {}
    for members in groups.values():
        tested, pairs = {}, {}
        for reference in REFERENCES:
            found = [key for key in members if key[method_at] == reference]
            if len(found) != 1:
                continue
            for key in members:
                pair = frozenset((key, found[0]))
                if key != found[0] and pair not in tested:
                    shared = [u for u in cells[key] if u in cells[found[0]]]
                    tested[pair] = signed_rank_p([cells[key][u] for u in shared], [cells[found[0]][u] for u in shared])
                pairs[(key, reference)] = pair if key != found[0] else None
        adjusted = dict(zip(tested, holm(list(tested.values()))))
        for key in members:
            row = []
            for reference in REFERENCES:
                pair = pairs.get((key, reference))
                row += [tested[pair], adjusted[pair]] if pair is not None else [np.nan, np.nan]
            results[key] = row
    index = pd.MultiIndex.from_tuples(list(results), names=keys) if results else None
    return pd.DataFrame(list(results.values()), index=index, columns=columns)


def seed_stats(rows: pd.DataFrame, keys: list[str], over_classes: str | Callable = "mean") -> pd.DataFrame:
    """Per `keys` (a cell), from its sampling units (`sample_units`: the (seed, forget class) values, or one
    `over_classes` aggregate per seed): `mean` and n of the units, `ci_low`/`ci_high` their 95 % Student-t interval
    (NaN for n = 1), the paired tests against the reference methods (`paired_tests`); and, as before intervals
    existed, `std` the standard deviation (ddof 1, NaN for one seed) over seeds of each seed's `over_classes` of
    its values, `seeds` their count and `classes`/`classes_min` the largest/smallest number of distinct forget
    classes in a seed. With the same classes in every seed the mean equals the mean over seeds of the seeds' means.
    A class with several values in a seed (records not read through records.load_runs) counts once in a seed's
    aggregate: their mean."""
    rows = rows.dropna(subset=["value"])
    if rows.empty:
        return pd.DataFrame(columns=keys + STAT_COLUMNS)
    rows = rows.groupby(keys + ["seed", "forget_class"], dropna=False, as_index=False)["value"].mean()
    per_seed = rows.groupby(keys + ["seed"], dropna=False).agg(
        value=("value", over_classes), classes=("forget_class", "nunique"))
    spread = per_seed.groupby(keys, dropna=False).agg(
        std=("value", "std"), seeds=("value", "count"), classes=("classes", "max"), classes_min=("classes", "min"))
    units = sample_units(rows, keys, over_classes)
    stats = units.groupby(keys, dropna=False)["value"].agg(mean="mean", sd="std", n="count")
    half = t_half_width(stats["sd"], stats["n"])
    stats = stats.assign(ci_low=stats["mean"] - half, ci_high=stats["mean"] + half).join(spread)
    return stats.join(paired_tests(units, keys)).reset_index()[keys + STAT_COLUMNS]


def format_stat(mean: float, half_width: float, digits: int) -> str:
    """'m' or 'm ± h' (h, an interval's half-width, shown unless NaN) with `digits` decimals; '—' when absent."""
    if mean is None or pd.isna(mean):
        return MISSING
    text = f"{mean:.{digits}f}"
    return text if pd.isna(half_width) else f"{text} ± {half_width:.{digits}f}"


def marks(cell: pd.Series) -> str:
    """The marks of the reference methods (REFERENCES) whose cell this one differs from: Holm-adjusted p < ALPHA."""
    return "".join(mark for m, mark in REFERENCES.items() if cell.get(f"p_vs_{m}_holm", np.nan) < ALPHA)


def cell_text(cell: pd.Series | None, digits: int, usual_n: int | None = None) -> str:
    """A table cell: mean ± the half-width of its confidence interval (none for n = 1), its marks (`marks`), and
    ' [n=k]' when its n is not the table's `usual_n`; '—' when absent."""
    if cell is None or pd.isna(cell["mean"]):
        return MISSING
    text = format_stat(cell["mean"], (cell["ci_high"] - cell["ci_low"]) / 2, digits) + marks(cell)
    return text if usual_n is None or cell["n"] == usual_n else f"{text} [n={cell['n']:.0f}]"


def classes_flag(cell: pd.Series | None, most: dict[tuple, float] | None = None) -> str:
    """' [k of N classes]' for a cell of totals over each seed's forget classes (a sum) where some seed's total is
    over only k of the N classes another seed has, or (`most`: `most_classes`) another cell of its dataset ×
    backbone (a failed cell), so it is smaller; '' otherwise (a one-round method's cost, over no class, too)."""
    if cell is None:
        return ""
    n = max(cell["classes"], (most or {}).get((cell["dataset"], cell["backbone"]), 0))
    if not 0 < cell.get("classes_min", np.nan) < n:
        return ""
    return f" [{cell['classes_min']:.0f} of {n:.0f} classes]"


def most_classes(values: pd.DataFrame) -> dict[tuple, float]:
    """Per (dataset, backbone), the most forget classes a seed of any cell of `values` covers."""
    return values.groupby(["dataset", "backbone"])["classes"].max().dropna().to_dict() if len(values) else {}


FLAG_LEGEND = ("; [k of N classes]: a seed's total covers only k of the N forget classes another seed or method of "
               "its dataset × backbone has (a failed cell), so it is smaller")


def usual_n(values: pd.DataFrame) -> int | None:
    """The most common n of the cells in `values` (the smallest of equally common ones); None when there is none."""
    counts = values["n"].dropna()
    counts = counts[counts > 0]
    return None if counts.empty else int(counts.value_counts().sort_index().idxmax())


def interval_legend(values: pd.DataFrame, units: str) -> str:
    """Caption sentences saying what ± and the marks mean in a table whose interval cells are `values`, each
    holding n `units` (e.g. '(seed, forget class) values', 'seeds'); the marks are explained for the reference
    methods some cell was tested against."""
    if not (values["n"] > 1).any():
        return "no ± here: no cell has more than one value (n = 1)"
    n = usual_n(values)
    text = (f"± is the half-width of the {LEVEL:.0%} Student-t confidence interval of the mean over a cell's n "
            f"{units} (n = {n} unless the cell shows [n=k]; no ± where n = 1; the standard deviation over seeds is "
            "in the CSV)")
    tested = [m for m in REFERENCES if values[f"p_vs_{m}"].notna().any()]
    if tested:
        text += (f". {' / '.join(REFERENCES[m] for m in tested)}: differs from "
                 f"{' / '.join(display_name(m) for m in tested)} (two-sided Wilcoxon signed-rank test over the "
                 f"paired {units}, p < {ALPHA:g} after Holm's adjustment within each column)")
        # the smallest Holm-adjusted p of a column of k tests is k · 2 / 2ⁿ: said only where no column reaches it
        families = [(k, math.ceil(math.log2(2 * k / ALPHA)), n) for k, n in holm_families(values) if k]
        if families and all(n < needed for _, needed, n in families):
            tests, needed = sorted({k for k, _, _ in families}), sorted({m for _, m, _ in families})
            if len(tests) == 1:
                text += (f"; with {tests[0]} test{'s' * (tests[0] > 1)} in a column a mark needs at least {needed[0]} pairs, which no "
                         "cell here has, so none can be marked")
            else:
                text += (f"; a mark in a column of k tests needs at least log2(2k / {ALPHA:g}) pairs (k = "
                         f"{tests[0]} to {tests[-1]} here: {needed[0]} to {needed[-1]} pairs), which no column's "
                         "cells have, so none can be marked")
    return text


def holm_families(values: pd.DataFrame) -> list[tuple[int, float]]:
    """(tests, largest n) of each Holm family of `values` (one column of one dataset × backbone, as `paired_tests`
    adjusts): its distinct pairs of cells with a p-value (a reference against another counted once)."""
    group = [k for k in ("dataset", "backbone", "column") if k in values]
    families = []
    for _, family in values.groupby(group, dropna=False) if group else [(None, values)]:
        cells = list(zip(family["method"], family["params"]))
        pairs = set()
        for m in REFERENCES:  # a p-value against m: m has one cell in the family
            reference = next((c for c in cells if c[0] == m), None)
            pairs |= {frozenset((c, reference)) for c, p in zip(cells, family[f"p_vs_{m}"]) if pd.notna(p)}
        families.append((len(pairs), family["n"].max()))
    return families


def format_count(value: float) -> str:
    """A class count: an integer, or one decimal when it is a mean over seeds that is not whole."""
    if pd.isna(value):
        return MISSING
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def relearn_caps(records: pd.DataFrame) -> dict[tuple, tuple[float, ...]]:
    """Per dataset × backbone × method × params with relearn times: the distinct relearn caps (epochs, ascending)
    of the runs that measured them, from the records' `relearn_max_epochs` column (see records.load_runs); NaN
    for a run that did not record its cap."""
    rows = records[records["metric"] == "relearn_epochs"]
    caps = rows["relearn_max_epochs"] if "relearn_max_epochs" in rows else pd.Series(np.nan, index=rows.index)
    return {key: tuple(np.unique(group.to_numpy(float))) for key, group in caps.groupby([rows[k] for k in CELL_KEYS])}


def caps_text(caps: tuple[float, ...]) -> str:
    """Relearn caps as text: '6', '5, 100', 'not recorded' (NaN)."""
    return ", ".join("not recorded" if pd.isna(c) else format_count(c) for c in caps)


def _flagged(values: pd.DataFrame) -> bool:
    """Whether some cell of `values` gets a classes_flag."""
    most = most_classes(values)
    return any(classes_flag(row, most) for _, row in values.iterrows())


def _lookup(values: pd.DataFrame, keys: list[str]) -> dict[tuple, pd.Series]:
    return {tuple(row[k] for k in keys): row for _, row in values.iterrows()}


def _frame(body: list[list[str]], index: list[tuple], names: list[str], columns) -> pd.DataFrame:
    """A layout frame: one row of strings per `index` tuple (levels named `names`)."""
    return pd.DataFrame(body, index=pd.MultiIndex.from_tuples(index, names=names) if index else None, columns=columns)


def _product(datasets: list[str], columns: list[str]) -> pd.MultiIndex | None:
    return pd.MultiIndex.from_product([datasets, columns]) if datasets else None


def table1(records: pd.DataFrame, split: str = "train", name: str = "table1") -> Table:
    """Table 1: rows backbone × method, columns dataset × {Acc_r, Acc_f, ZRF, RT (n)}.

    Acc_r/Acc_f come from `split` (in %), ZRF (×100) and relearn time (epochs; n = classes not relearned, a mean
    over seeds) from `split` when recorded there, else from the first split that has them. `name` is the file stem.
    Every cell but the count of classes not relearned shows its confidence interval and marks (`cell_text`).
    """
    prefer = (split,) + tuple(s for s in SPLIT_ORDER if s != split)
    columns = {"Acc_r": ("acc_retain", lambda v: v * 100), "Acc_f": ("acc_forget", lambda v: v * 100),
               "ZRF": ("zrf", lambda v: v * 100), "RT": ("relearn_epochs", lambda v: v),
               "RT n": ("relearned", lambda v: 1.0 - v)}  # RT n: classes not relearned, summed within a seed
    parts, used = [], {}
    for column, (metric, transform) in columns.items():
        if column.startswith("Acc"):
            rows = records[(records["metric"] == metric) & (records["split"] == split)]
            used[column] = split if not rows.empty else None
        else:
            rows, used[column] = pick_split(records, metric, prefer)
        how = "sum" if column == "RT n" else "mean"
        stats = seed_stats(rows.assign(value=transform(rows["value"])), CELL_KEYS, how)
        parts.append(stats.assign(column=column, split=used[column]))
    values = pd.concat(parts, ignore_index=True)[CELL_KEYS + ["column", "split"] + STAT_COLUMNS]

    labels = row_labels(records)
    datasets = list(pd.unique(records["dataset"]))
    cells = _lookup(values, CELL_KEYS + ["column"])
    shown = values[values["column"] != "RT n"]
    n = usual_n(shown)
    most = most_classes(values[values["column"] == "RT n"])
    index, body = [], []
    for backbone, method, label, params_of in method_rows(records, labels):
        index.append((backbone, label))
        line = []
        for dataset in datasets:
            key = (dataset, backbone, method, params_of.get(dataset))
            rt = cell_text(cells.get(key + ("RT",)), 1, n)
            not_relearned = cells.get(key + ("RT n",))
            if rt != MISSING and not_relearned is not None:
                rt += f" ({format_count(not_relearned['mean'])}{classes_flag(not_relearned, most)})"
            line += [cell_text(cells.get(key + (c,)), 1, n) for c in ("Acc_r", "Acc_f", "ZRF")] + [rt]
        body.append(line)
    display = _frame(body, index, ["Backbone", "Method"], _product(datasets, TABLE1_COLUMNS))
    elsewhere = [f"{c} on the {used[c]} split" for c in ("ZRF", "RT") if used[c] and used[c] != split]
    where = [f"Unlearning results on the {split} split"] + (
        ["as in the paper, which reports training sets"] if split == "train" else []) + elsewhere
    caps = tuple(np.unique([c for cell_caps in relearn_caps(records).values() for c in cell_caps]))
    cap = f"cap: {caps_text(caps)}; " if len(caps) == 1 else f"caps: {caps_text(caps)} by cell; " if caps else ""
    caption = ("; ".join(where) + ". Acc_r/Acc_f: accuracy (%) on the retain/forget set; ZRF ×100; "
               f"RT: relearn epochs ({cap}a class that never relearns counts the cap), in parentheses the number of "
               "classes not relearned (summed over a seed's classes, then the mean over seeds). Each other cell is "
               f"the mean over its seeds × forget classes; {interval_legend(shown, UNITS)}; — not measured"
               f"{FLAG_LEGEND if _flagged(values[values['column'] == 'RT n']) else ''}.")
    return Table(name, f"Table 1 ({split} split)", caption, values, display)


TABLE2_COLUMNS = [("Ins", "insertion"), ("Del", "deletion"), ("Ins global", "insertion_global"),
                  ("Del global", "deletion_global")]


def table2(records: pd.DataFrame) -> Table:
    """Table 2: insertion and deletion AUC (fractions) per backbone × method × dataset, for every method that
    records them (WF-Net in the paper), ranked per α matrix as the paper does; the global ranking's columns are
    added where the run recorded them (metric setting `ranking: both`)."""
    prefer = SPLIT_ORDER
    shown = [(column, metric) for column, metric in TABLE2_COLUMNS
             if metric in ("insertion", "deletion") or (records["metric"] == metric).any()]
    parts = []
    for column, metric in shown:
        rows, split = pick_split(records, metric, prefer)
        parts.append(seed_stats(rows, CELL_KEYS).assign(column=column, split=split))
    values = pd.concat(parts, ignore_index=True)[CELL_KEYS + ["column", "split"] + STAT_COLUMNS]
    n = usual_n(values)
    labels = row_labels(records)
    measured = records[records["metric"].isin([metric for _, metric in shown])]
    datasets = list(pd.unique(records["dataset"]))
    cells = _lookup(values, CELL_KEYS + ["column"])
    columns = [column for column, _ in shown]
    index, body = [], []
    if not measured.empty:
        for backbone, method, label, params_of in method_rows(measured, labels):
            index.append((backbone, label))
            body.append([cell_text(cells.get((d, backbone, method, params_of.get(d), c)), 2, n) for d in datasets
                         for c in columns])
    display = _frame(body, index, ["Backbone", "Method"], _product(datasets, columns))
    splits = " and ".join(f"the {split} split" for split in pd.unique(values["split"].dropna()))
    caption = ("Insertion (Ins, higher is better) and deletion (Del, lower is better) AUC of the α relevance order"
               f"{' on ' + splits if splits else ''}, ranked within each α matrix (the paper's rule; \"global\": all α elements ranked together), each "
               "sample's confidence normalised by the original model's. Each cell is the mean over its seeds × forget "
               f"classes; {interval_legend(values, UNITS)}; — not measured.")
    return Table("table2", "Table 2: insertion / deletion", caption, values, display)


COST_COLUMNS = [("Wall s", "unlearn_seconds", "sum", 1.0, 1), ("Device s", "device_seconds", "sum", 1.0, 1),
                ("Peak extra memory MiB", "peak_memory_bytes", "max", 1.0 / 2**20, 1),
                ("Serving MiB", "serving_bytes", "sum", 1.0 / 2**20, 2),
                ("Tuning s", "tuning_seconds", "max", 1.0, 0)]  # every cell repeats its whole search's seconds


def cost_table(records: pd.DataFrame) -> Table:
    """Cost of unlearning all N_c classes per dataset × backbone × method: wall and device seconds and serving
    bytes summed over a method's rows (one per class for per-class methods, one for all-class methods), peak
    memory the largest over them; each cell the mean over seeds with its interval and marks (`cell_text`), its
    units and pairs being seeds."""
    cost = records[records["split"] == "all"]
    parts = []
    for column, metric, how, scale, _ in COST_COLUMNS:
        rows = cost[cost["metric"] == metric]
        parts.append(seed_stats(rows.assign(value=rows["value"] * scale), CELL_KEYS, how).assign(column=column))
    classes = (records.dropna(subset=["forget_class"]).groupby(CELL_KEYS + ["seed"])["forget_class"].nunique()
               .groupby(CELL_KEYS).mean().rename("mean").reset_index().assign(column="N_c"))  # a seed's classes
    values = pd.concat([classes] + parts, ignore_index=True).reindex(columns=CELL_KEYS + ["column"] + STAT_COLUMNS)
    shown = values[values["column"] != "N_c"]
    summed = [c[0] for c in COST_COLUMNS if c[2] == "sum"]
    common_n = usual_n(shown)
    most = most_classes(values[values["column"].isin(summed)])
    labels = row_labels(records)
    cells = _lookup(values, CELL_KEYS + ["column"])
    index, body = [], []
    for dataset, backbone, method, params in _ordered_rows(records, CELL_KEYS):
        index.append((dataset, backbone, labels[(method, params)]))
        n = cells.get((dataset, backbone, method, params, "N_c"))
        line = [MISSING if n is None else format_count(n["mean"])]
        line += [cell_text(cells.get((dataset, backbone, method, params, c[0])), c[4], common_n)
                 + (classes_flag(cells.get((dataset, backbone, method, params, c[0])), most)
                    if c[2] == "sum" else "")
                 for c in COST_COLUMNS]
        body.append(line)
    display = _frame(body, index, ["Dataset", "Backbone", "Method"], ["N_c"] + [c[0] for c in COST_COLUMNS])
    caption = ("Cost of unlearning all N_c forget classes: wall-clock and device seconds and the bytes of checkpoints "
               "needed to serve every class are summed over a per-class method's N_c runs (one run for all-class "
               "methods); peak extra memory (MiB) is the largest of those runs, each the peak memory it used beyond "
               "what was already held when it started (data, models): CUDA allocations on a GPU, heap allocations on "
               "the CPU. Tuning s: the seconds the tuning protocol spent choosing the parameters the row ran with "
               "(all its trials; — where the row ran with defaults). Each cell is the mean over seeds of these "
               f"per-seed totals; {interval_legend(shown, 'seeds')}; — not measured"
               f"{FLAG_LEGEND if _flagged(values[values['column'].isin(summed)]) else ''}.")
    return Table("cost", "Cost of unlearning all classes", caption, values, display)


def parameters_table(records: pd.DataFrame) -> Table:
    """The parameters every dataset × backbone × method row ran with, and whether the tuning protocol chose them
    (the row has a tuning_seconds cost record) or they are the method's defaults or the grid's values."""
    tuned = set(map(tuple, records[records["metric"] == "tuning_seconds"][CELL_KEYS].drop_duplicates().to_numpy()))
    labels = row_labels(records)
    rows = _ordered_rows(records, CELL_KEYS)
    values = pd.DataFrame(rows, columns=CELL_KEYS).assign(tuned=[r in tuned for r in rows])
    index = [(d, b, labels[(m, p)]) for d, b, m, p in rows]
    display = pd.DataFrame({"Source": ["tuned" if t else "defaults / grid" for t in values["tuned"]],
                            "Parameters": [", ".join(f"{k}={v}" for k, v in json.loads(p).items()) or MISSING
                                           for p in values["params"]]},
                           index=pd.MultiIndex.from_tuples(index, names=["Dataset", "Backbone", "Method"])
                           if index else None)
    caption = ("The parameters each row ran with. tuned: chosen on the validation split by the tuning protocol "
               "(docs/protocol.md; its trials are in the tuning folder the grid's `tuned:` names); defaults / grid: "
               "the method's defaults with the grid's overrides.")
    return Table("parameters", "Parameters of every row", caption, values, display)


def methods_table(records: pd.DataFrame, cards: dict[str, dict]) -> Table:
    """One row per method in the records: its paper, venue and year, whether it reads retained data, whether one
    run unlearns one class or all, and whether the tuning protocol chose its parameters (`cards`: name → the
    `Unlearner.card` recorded by the run)."""
    tuned = records[records["metric"] == "tuning_seconds"][["dataset", "backbone", "method"]].drop_duplicates()
    groups = records[["dataset", "backbone", "method"]].drop_duplicates()
    methods = method_order(records["method"].unique())
    rows = []
    for m in methods:
        card = cards.get(m, {})
        rows.append({"method": m, "paper": card.get("paper", ""), "venue": card.get("venue", ""),
                     "uses_retain": card.get("uses_retain"), "per_class": card.get("per_class"),
                     "tuned_groups": int((tuned["method"] == m).sum()), "groups": int((groups["method"] == m).sum())})
    values = pd.DataFrame(rows, columns=["method", "paper", "venue", "uses_retain", "per_class", "tuned_groups",
                                         "groups"])

    def yes_no(flag, yes: str, no: str) -> str:
        return MISSING if flag is None or pd.isna(flag) else (yes if flag else no)

    display = pd.DataFrame(
        {"Paper": [r.paper or ("the reference row" if r.method in ("original", "retrain") else MISSING)
                   for r in values.itertuples()],
         "Venue": [r.venue or MISSING for r in values.itertuples()],
         "Retained data": [yes_no(r.uses_retain, "yes", "no") for r in values.itertuples()],
         "One run unlearns": [yes_no(r.per_class, "one class", "all classes") for r in values.itertuples()],
         "Parameters": [f"tuned ({r.tuned_groups} of {r.groups} dataset × backbone)" if r.tuned_groups
                        else "defaults / grid" for r in values.itertuples()]},
        index=pd.Index([display_name(m) for m in methods], name="Method") if methods else None)
    caption = ("The methods of this report. Retained data: whether the method reads any training or validation "
               "image outside the forget class (declared by the method; the conformance tests check it for every "
               "per-class method); one run unlearns one class "
               "(once per forget class) or all classes (one round serves every class); parameters: tuned on the "
               "validation split by the tuning protocol in that many of the method's dataset × backbone groups, "
               "else the method's defaults with the grid's overrides (the values are in the parameters table).")
    return Table("methods", "Methods", caption, values, display)


def metrics_summary(records: pd.DataFrame) -> Table:
    """Every recorded metric but the relearn curves (a figure draws them) per dataset × backbone × method × split:
    the mean over its (seed, forget class) values (per seed for all-class rows), its 95 % interval and n, the
    standard deviation over seeds of the seeds' means, and the Holm-adjusted p-values against WF-Net and retraining,
    in the metric's own units."""
    keys = CELL_KEYS + ["split", "metric"]
    values = seed_stats(records[~records["metric"].str.match(CURVE_METRIC)], keys)
    labels = row_labels(records)
    order = {r: i for i, r in enumerate(_ordered_rows(records, CELL_KEYS))}
    values = values.assign(_o=[order[tuple(r)] for r in values[CELL_KEYS].itertuples(index=False, name=None)])
    values = values.sort_values(["_o", "split", "metric"], kind="stable").drop(columns="_o").reset_index(drop=True)
    index = [(r.dataset, r.backbone, labels[(r.method, r.params)], r.split, r.metric) for r in values.itertuples()]
    display = pd.DataFrame(
        {"Mean": [f"{m:.4g}" for m in values["mean"]],
         f"{LEVEL:.0%} CI": [MISSING if pd.isna(lo) else f"[{lo:.4g}, {hi:.4g}]"
                            for lo, hi in zip(values["ci_low"], values["ci_high"])],
         "n": [format_count(n) for n in values["n"]],
         "SD over seeds": [MISSING if pd.isna(s) else f"{s:.2g}" for s in values["std"]],
         "Seeds": [format_count(s) for s in values["seeds"]],
         "Classes": [format_count(c) if c else MISSING for c in values["classes"]],
         **{f"p vs {display_name(m)}": [MISSING if pd.isna(p) else f"{p:.2g}" for p in values[f"p_vs_{m}_holm"]]
            for m in REFERENCES}},
        index=pd.MultiIndex.from_tuples(index, names=["Dataset", "Backbone", "Method", "Split", "Metric"])
        if index else None)
    caption = ("Every recorded metric in its own units (accuracies, ZRF, MIA efficacies and ToW as fractions, "
               f"seconds, bytes): the mean over a row's n (seed, forget class) values (one per seed for rows without a forget class, such as an "
               f"all-class method's cost), its {LEVEL:.0%} Student-t confidence interval (— where n = 1), the "
               "standard deviation over seeds of each seed's mean over classes, and the p-values of two-sided "
               "Wilcoxon signed-rank tests against the WF-Net and the Retrained row over the paired values (Holm-"
               "adjusted within each dataset × backbone × split × metric; — where there is no such row or no pair). "
               "Relearn curves (relearn_curve_<epoch>) are drawn in the relearning figures instead.")
    return Table("all_metrics", "All metrics", caption, values, display)
