"""The paper's published Table 1/2 values (configs/paper_results.yaml) and the comparison with a run's tables."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .names import PAPER_METHODS, method_order
from .stats import LEVEL
from .tables import MISSING, Table, caps_text, format_stat, params_key, relearn_caps, row_labels

# a Table 1/2 value column → (the paper's key, decimals shown)
COLUMN_KEYS = {"Acc_r": ("acc_r", 1), "Acc_f": ("acc_f", 1), "ZRF": ("zrf", 1), "RT": ("rt", 1),
               "RT n": ("rt_not_relearned", 0), "Ins": ("insertion", 2), "Del": ("deletion", 2)}
_SIZE_SUFFIX = re.compile(r"(-[wdp][0-9.]+)+$")
# the split of the paper's Table 1 accuracies and ZRF (training sets); RT is compared whatever split relearning
# stopped on (it trains on training samples either way), Table 2 names no split
PAPER_SPLITS = {"Acc_r": "train", "Acc_f": "train", "ZRF": "train"}
SPLIT_NAMES = {"train": "training sets", "test": "test split", "val": "validation split", "all": "all splits"}


def load_paper_results(path: Path | None = None) -> dict:
    """The transcribed paper values: {'source', 'datasets', 'relearn_max_epochs', 'units', 'table1', 'table2'} as
    printed."""
    if path is None:
        return yaml.safe_load(resources.files("unlearnbench").joinpath("configs/paper_results.yaml").read_text())
    return yaml.safe_load(Path(path).read_text())


def backbone_family(label: str) -> str:
    """The backbone family of a table label: 'resnet18-w0.0625' → 'resnet18' (size suffixes -w/-d/-p removed)."""
    return _SIZE_SUFFIX.sub("", label)


def paper_value(paper: dict, table: str, dataset: str, backbone: str, method: str, column: str) -> float:
    """The paper's value of one cell in the report's units (ZRF ×100 everywhere); NaN where it prints none.
    `dataset` and `backbone` are the paper's names (e.g. 'mnist', 'resnet18')."""
    key = COLUMN_KEYS[column][0]
    entry = paper.get(table, {}).get(dataset, {}).get(backbone, {})
    entry = entry.get(method, {}) if table == "table1" else (entry if method == "wfnet" else {})
    if key not in entry:
        return np.nan
    unit = paper["units"].get(key)
    unit = unit.get(dataset) if isinstance(unit, dict) else unit
    return float(entry[key]) * (100.0 if key == "zrf" and unit == "fraction" else 1.0)


def paper_comparison(t1: Table, t2: Table, records: pd.DataFrame, paper: dict | None = None) -> Table:
    """Every Table 1/2 value of the run beside the paper's value and the difference (ours − paper), plus the
    paper's cells for the run's dataset × backbone pairs that the run lacks (noted "not run", or "not measured" for a
    method the run ran without that metric). RT and RT n get no
    difference where the run's relearn cap (see tables.relearn_caps) is not the paper's: the cap is shown instead."""
    paper = load_paper_results() if paper is None else paper
    caps = relearn_caps(records)
    to_paper = {ours: theirs for theirs, names in paper["datasets"].items() for ours in names}
    labels = row_labels(records)
    pairs = list(records[["dataset", "backbone"]].drop_duplicates().itertuples(index=False, name=None))
    order = {k: {v: i for i, v in enumerate(pd.unique(records[k]))} for k in ("dataset", "backbone")}
    methods = {m: i for i, m in enumerate(method_order(set(records["method"]) | set(PAPER_METHODS)))}
    relearn = records[records["metric"] == "relearn_epochs"]
    relearned = relearn.groupby(["dataset", "backbone", "method", "params"])["forget_class"].nunique().to_dict()
    rows = []
    for key, name, table, columns in (("table1", "Table 1", t1, ("Acc_r", "Acc_f", "ZRF", "RT", "RT n")),
                                      ("table2", "Table 2", t2, ("Ins", "Del"))):
        ours = table.values.dropna(subset=["mean"])
        ours = ours[ours["column"].isin(columns)]
        for r in ours.itertuples(index=False):
            ds, family = to_paper.get(full_dataset_name(r.dataset)), backbone_family(r.backbone)
            theirs = paper_value(paper, key, ds, family, r.method, r.column)
            cap = "" if np.isnan(theirs) else _cap_mismatch(
                caps.get((r.dataset, r.backbone, r.method, r.params), (np.nan,)), paper["relearn_max_epochs"], r.column)
            note = _note(r.dataset, ds, r.backbone, family, theirs, cap, paper["relearn_max_epochs"])
            split = PAPER_SPLITS.get(r.column)
            other_split = split is not None and r.split != split  # values of other samples: no difference
            if other_split and not np.isnan(theirs):
                note = "; ".join(n for n in (note, f"ours: {SPLIT_NAMES.get(r.split, r.split)}; the paper: "
                                                   f"{SPLIT_NAMES[split]}") if n)
            counted, published = relearned.get((r.dataset, r.backbone, r.method, r.params), 0), paper.get(
                "classes", {}).get(ds)
            if r.column == "RT n" and not cap and not np.isnan(theirs) and published and counted != published:
                cap = f"{counted} of {published} classes"  # a count over other classes than the paper's
                note = "; ".join(n for n in (note, f"counted over {cap}: not comparable") if n)
            rows.append((name, r.dataset, r.backbone, labels[(r.method, r.params)], r.column, r.mean, r.ci_low,
                         r.ci_high, r.n, r.std, theirs, note, methods[r.method], cap, other_split,
                         params_key(r.params)))
        done = set(ours[["dataset", "backbone", "method", "column"]].itertuples(index=False, name=None))
        ran = records.groupby(["dataset", "backbone", "method"])["params"].first().to_dict()
        for dataset, backbone in pairs:
            for method in PAPER_METHODS:
                for column in columns:
                    paper_dataset = to_paper.get(full_dataset_name(dataset))
                    theirs = paper_value(paper, key, paper_dataset, backbone_family(backbone), method, column)
                    if not np.isnan(theirs) and (dataset, backbone, method, column) not in done:
                        params = ran.get((dataset, backbone, method))  # a method that ran sorts with its rows
                        rows.append((name, dataset, backbone, PAPER_METHODS[method], column, np.nan, np.nan, np.nan,
                                     np.nan, np.nan, theirs, "not run" if params is None else "not measured",
                                     methods[method], "", False, params_key(params or "")))
    columns = list(COLUMN_KEYS)
    rows.sort(key=lambda r: (r[0], order["dataset"][r[1]], order["backbone"][r[2]], r[12], r[15], r[3],
                             columns.index(r[4])))  # a sweep's settings: numbers as numbers (lambda_1=2 before 10)
    values = pd.DataFrame([r[:12] for r in rows], columns=["table", "dataset", "backbone", "method", "column", "ours",
                                                           "ours_ci_low", "ours_ci_high", "n", "ours_std", "paper",
                                                           "note"])
    capped = pd.Series([r[13] for r in rows], dtype=str)
    elsewhere = pd.Series([r[14] for r in rows], dtype=bool)
    values.insert(11, "difference", (values["ours"] - values["paper"]).where((capped == "") & ~elsewhere))
    digits = [COLUMN_KEYS[c][1] for c in values["column"]]
    # a class count averaged over seeds need not be whole: one decimal then, as Table 1 shows it
    shown = [d + (not np.isnan(m) and not float(m).is_integer()) if c == "RT n" else d
             for c, m, d in zip(values["column"], values["ours"], digits)]
    display = pd.DataFrame({
        "Ours": [format_stat(m, (hi - lo) / 2, d)
                 for m, lo, hi, d in zip(values["ours"], values["ours_ci_low"], values["ours_ci_high"], shown)],
        "n": [MISSING if np.isnan(n) else f"{n:.0f}" for n in values["n"]],
        "Paper": [_paper_text(p, d) for p, d in zip(values["paper"], digits)],
        "Difference": [(c if c.endswith("classes") else f"cap {c}") if c else MISSING if np.isnan(x) else f"{x:+.{d}f}"
                       for x, c, d in zip(values["difference"], capped, shown)],
        "Note": values["note"].tolist()},
        index=pd.MultiIndex.from_frame(values[["table", "dataset", "backbone", "method", "column"]],
                                       names=["Table", "Dataset", "Backbone", "Method", "Value"]))
    caption = (f"Each Table 1/2 value of this run (± the half-width of its {LEVEL:.0%} Student-t confidence interval "
               "over n values, as in those tables; the paper gives no interval) beside the published one "
               f"({paper['source'].strip()}) and the difference (ours − paper), in the report's units: accuracy %, "
               "ZRF ×100 (the paper prints ImageNet "
               "ZRF as a fraction; converted), RT epochs, RT n classes not relearned, Ins/Del AUC. RT and RT n are "
               f"compared only where this run stopped relearning at the paper's {paper['relearn_max_epochs']} epochs; "
               "elsewhere the difference shows the run's cap. Acc_r, Acc_f and ZRF are compared only where this run "
               "measured them on the training split, as the paper did; the note names the split otherwise. "
               "Reduced-size backbones are compared with their "
               "full-size family and marked; the paper's cells for this run's datasets and backbones that the run "
               "lacks say 'not run' (a method run without that metric: 'not measured').")
    return Table("paper_comparison", "Comparison with the paper", caption, values, display)


def _paper_text(value: float, digits: int) -> str:
    """The paper's value with the report's decimals, or as printed when it has more (e.g. 9.68)."""
    if np.isnan(value):
        return MISSING
    text = f"{value:.{digits}f}"
    return text if round(float(text), 6) == round(value, 6) else f"{round(value, 6):g}"


def full_dataset_name(label: str) -> str:
    """The dataset a label names, without its subset suffixes (`mnist-1000perclass`,
    `mnist-400perclass-val100perclass`, `imagenet-valfromtest-test5perclass` → `mnist`, `imagenet`)."""
    return re.sub(r"(-\d+perclass)?(-val\d+perclass)?(-valfromtest)?(-test\d+perclass)?(-traineval\d+perclass)?$", "",
                  label)


def _cap_mismatch(caps: tuple[float, ...], paper_cap: int, column: str) -> str:
    """The run's relearn caps as text (see tables.caps_text) when `column` is RT or RT n and they are not the
    paper's `paper_cap`; '' otherwise."""
    if column not in ("RT", "RT n") or caps == (float(paper_cap),):
        return ""
    return caps_text(caps)


def _note(dataset: str, paper_dataset: str | None, backbone: str, family: str, theirs: float, cap: str,
          paper_cap: int) -> str:
    if np.isnan(theirs):
        return "no published value"
    notes = []
    if paper_dataset != dataset:
        notes.append(f"paper: {paper_dataset}")
    if family != backbone:
        notes.append("reduced size")
    if cap:
        notes.append(f"relearn cap {cap} epochs, the paper's {paper_cap}: not comparable")
    return "; ".join(notes)
