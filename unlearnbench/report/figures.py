"""The report's figures, drawn headless on matplotlib's Agg canvas (no pyplot state) and saved as PNG and PDF.

- filter–class heatmaps from WF-Net's α (the paper's Figures 3/4),
- per-class Acc_r/Acc_f bars per method,
- relearn curves (or, when no curve is recorded, the distribution of relearn epochs),
- cumulative unlearning cost against the number of classes unlearned.
"""
from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import UserError, error_reason
from .names import display_name, method_order
from .tables import CURVE_METRIC, params_key, row_labels


LEGEND_LABEL_CHARACTERS = 34  # a legend entry's line: longer labels wrap (legend_column_inches sizes a column to its lines)


def legend_labels(records: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The tables' row label of each (method, params) of one dataset × backbone, shortened for a legend: a method
    with several settings there is named by the parameters in which they differ only, and a label wraps to lines of
    LEGEND_LABEL_CHARACTERS. (With every parameter, a sweep's labels ran to ~150 characters: the side legend took the
    whole width, the layout collapsed and the figure was drawn without it, its legend cut off.)"""
    labels = row_labels(records)
    for method, group in records[["method", "params"]].drop_duplicates().groupby("method"):
        settings = {p: json.loads(p or "{}") for p in group["params"]}
        if len(settings) < 2:
            continue
        keys = sorted({k for values in settings.values() for k in values})
        differ = [k for k in keys if len({json.dumps(v.get(k), sort_keys=True) for v in settings.values()}) > 1]
        for params, values in settings.items():  # a parameter a setting does not name is the method's default
            shown = ", ".join(f"{k}={values.get(k, 'default')}" for k in differ)
            labels[(method, params)] = f"{display_name(method)} ({shown})" if shown else labels[(method, params)]
    return {k: textwrap.fill(v, LEGEND_LABEL_CHARACTERS, subsequent_indent="  ") for k, v in labels.items()}


def new_figure(width: float, height: float) -> Figure:
    """An empty figure bound to the Agg canvas (no GUI, no global pyplot figure list)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """Save `fig` as `<stem>.png` (150 dpi) and `<stem>.pdf` in `folder`; returns both paths. The layout the PNG's
    drawing computed is kept for the PDF (a second layout pass at the PDF's 72 dpi would only move text by a point
    or two)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.set_layout_engine("none")
    fig.savefig(paths[1])
    return paths


def select_shared_filters(relevance: torch.Tensor | np.ndarray, top_k: int = 10, min_shared: int = 2) -> list[int]:
    """Indices (ascending) of the filters that are among the `top_k` most relevant of at least `min_shared`
    classes; `relevance` is [N_c, C_out] (ties broken by the lower filter index)."""
    rel = np.asarray(torch.as_tensor(relevance, dtype=torch.float64))
    k = min(top_k, rel.shape[1])
    top = np.argsort(-rel, axis=1, kind="stable")[:, :k]
    counts = np.bincount(top.ravel(), minlength=rel.shape[1])
    return [int(i) for i in np.flatnonzero(counts >= min_shared)]


def default_layers(names: list[str]) -> list[str]:
    """A first, an intermediate and a last layer of `names` (fewer when there are fewer layers)."""
    picks = [0, len(names) // 2, len(names) - 1] if names else []
    return [names[i] for i in dict.fromkeys(picks)]


def filter_class_heatmap(relevance: dict[str, torch.Tensor], class_names: list[str], layers: list[str] | None = None,
                         top_k: int = 10, min_shared: int = 2) -> Figure:
    """One class × filter heatmap per layer (default: first, intermediate, last) of the weight-gate relevance
    1 − σ(α_w) ([N_c, C_out] per layer), restricted to filters in the top `top_k` of ≥ `min_shared` classes;
    a dot marks a filter in a class's top `top_k`."""
    layers = default_layers(list(relevance)) if layers is None else layers
    fig = new_figure(4.2 * max(len(layers), 1), 0.3 * len(class_names) + 1.8)
    axes = fig.subplots(1, max(len(layers), 1), squeeze=False)[0]
    for ax, layer in zip(axes, layers):
        rel = np.asarray(torch.as_tensor(relevance[layer], dtype=torch.float64))
        keep = select_shared_filters(rel, top_k, min_shared)
        ax.set_title(layer, fontsize=9)
        if not keep:
            ax.text(0.5, 0.5, f"no filter in the top {top_k} of ≥ {min_shared} classes", ha="center", va="center",
                    fontsize=8, transform=ax.transAxes)
            ax.set_axis_off()
            continue
        k = min(top_k, rel.shape[1])
        in_top = np.zeros_like(rel, dtype=bool)
        np.put_along_axis(in_top, np.argsort(-rel, axis=1, kind="stable")[:, :k], True, axis=1)
        sns.heatmap(rel[:, keep], ax=ax, vmin=0.0, vmax=1.0, cmap="rocket_r", cbar=ax is axes[len(layers) - 1],
                    cbar_kws={"label": "relevance 1 − σ(α_w)"}, xticklabels=[f"#{i}" for i in keep],
                    yticklabels=class_names, annot=np.where(in_top[:, keep], "•", ""), fmt="",
                    annot_kws={"fontsize": 7})
        ax.tick_params(axis="x", labelsize=6, rotation=90)
        ax.tick_params(axis="y", labelsize=7, rotation=0)
        ax.set_xlabel("filter")
    return fig


def load_relevance(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weight-gate relevance 1 − σ(α_w) per layer ([classes, C_out]) from a WF-Net α file holding
    `<layer>.alpha_w` tensors, in natural layer order, and the name of each row. Only the rows of the classes the
    round unlearnt are kept: the file's 'forget_classes' metadata (a JSON list; written with every cell's
    artifacts), or in a file written before it, the rows whose α are not all one value (a class outside the round
    gets no gradient and keeps α's initial value, which would tie its top 10 at filters #0…#9 and make them
    "shared"). A row is named by its class index, or by the 'classes' metadata (a JSON list of names) when present."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = [k[: -len(".alpha_w")] for k in f.keys() if k.endswith(".alpha_w")]
            relevance = {n: 1.0 - torch.sigmoid(f.get_tensor(f"{n}.alpha_w").double()) for n in names}
            meta = f.metadata() or {}
        classes = json.loads(meta["classes"]) if "classes" in meta else None
        unlearnt = json.loads(meta["forget_classes"]) if "forget_classes" in meta else None
        if any(r.ndim != 2 for r in relevance.values()):
            raise ValueError("an alpha_w tensor is not [classes, filters]")
        rows = next(iter(relevance.values())).shape[0] if relevance else 0
        if unlearnt is not None and not all(isinstance(c, int) and 0 <= c < rows for c in unlearnt):
            raise ValueError(f"its forget_classes {unlearnt} are not rows of its {rows}-row α")
    except Exception as exc:  # safetensors' own error types (truncated, not safetensors), bad metadata or shapes
        raise UserError(f"{path} is not a readable WF-Net α file ({error_reason(exc)}); delete it to report "
                        f"without its heatmap.") from None
    if unlearnt is None and relevance:  # written before the metadata: the rows that moved from α's initial value
        flat = torch.stack([(r == r[:, :1]).all(1) for r in relevance.values()]).all(0)
        unlearnt = [c for c in range(rows) if not flat[c]] or list(range(rows))
    order = sorted(relevance, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    labels = [str(classes[c]) if classes and c < len(classes) else str(c) for c in (unlearnt or [])]
    return {n: relevance[n][unlearnt] for n in order}, labels


def per_class_bars(records: pd.DataFrame, split: str) -> Figure | None:
    """Acc_r and Acc_f (%) per forget class, one bar per method (error bar: sd over seeds), for the records of one
    dataset × backbone; None when they hold no accuracy on `split`."""
    rows = records[records["metric"].isin(["acc_retain", "acc_forget"]) & (records["split"] == split)]
    rows = rows.dropna(subset=["forget_class", "value"])
    if rows.empty:
        return None
    labels = legend_labels(records)
    rows = rows.assign(method_label=[labels[(m, p)] for m, p in zip(rows["method"], rows["params"])],
                       percent=rows["value"] * 100, forget_class=rows["forget_class"].astype(int))
    hue_order = [labels[k] for k in _label_order(records)]
    fig = new_figure(max(6.0, 0.25 * rows["forget_class"].nunique() * len(hue_order)), 5.5)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, metric, title in zip(axes, ("acc_retain", "acc_forget"), ("Acc_r (%)", "Acc_f (%)")):
        part = rows[rows["metric"] == metric]
        sns.barplot(part, x="forget_class", y="percent", hue="method_label", hue_order=hue_order, errorbar="sd",
                    ax=ax, legend=ax is axes[0])
        ax.set_ylabel(title)
        ax.set_xlabel("forget class")
        ax.set_ylim(0, 100)
    sns.move_legend(axes[0], "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="method", frameon=False)
    fig.suptitle(f"{records['dataset'].iloc[0]} / {records['backbone'].iloc[0]} ({split} split)", fontsize=10)
    return fig


def relearn_curves(records: pd.DataFrame) -> pd.DataFrame:
    """The `relearn_curve_<epoch>` rows of `records` as (method, params, seed, forget_class, split, epoch, value),
    every curve carried to the last epoch any of them reaches, or to its own relearn cap where that is smaller
    (merged runs: `relearn_max_epochs`): a curve stops at the epoch its class regained the original accuracy and
    keeps that last value from there on; one that never did ran to its cap, and no curve is drawn past that."""
    epoch = records["metric"].str.extract(CURVE_METRIC, expand=False)
    curves = records[epoch.notna()].assign(epoch=epoch[epoch.notna()].astype(int))
    keys = ["method", "params", "seed", "forget_class", "split"]
    if curves.empty:
        return curves.reindex(columns=keys + ["epoch", "value"])
    wide = curves.groupby(keys + ["epoch"])["value"].mean().unstack("epoch")
    wide = wide.reindex(columns=range(int(curves["epoch"].max()) + 1)).ffill(axis=1)
    if "relearn_max_epochs" in curves:
        cap = curves.groupby(keys)["relearn_max_epochs"].max().reindex(wide.index).fillna(np.inf).to_numpy()
        wide = wide.where(wide.columns.to_numpy()[None, :] <= cap[:, None])
    return wide.stack().dropna().rename("value").reset_index()


def relearn_figure(records: pd.DataFrame) -> Figure | None:
    """Relearn curves (forget accuracy per relearn epoch, mean over classes and seeds, a stopped curve carried at
    its last value: see relearn_curves) per method when the records of one dataset × backbone carry
    `relearn_curve_<epoch>` metrics; otherwise relearn epochs per class (dots) with their mean ± sd (diamond) per
    method (the title says which); None when neither is recorded."""
    labels = legend_labels(records)
    curves = relearn_curves(records)
    title = f"{records['dataset'].iloc[0]} / {records['backbone'].iloc[0]}"
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    if not curves.empty:
        curves = curves.assign(method_label=[labels[(m, p)] for m, p in zip(curves["method"], curves["params"])],
                               percent=curves["value"] * 100)
        order = [labels[k] for k in _label_order(records) if labels[k] in set(curves["method_label"])]
        sns.lineplot(curves, x="epoch", y="percent", hue="method_label", hue_order=order, errorbar="sd", ax=ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # a margin at either end: a curve at 0 % (a retrained model) on the bottom spine was not seen
        ax.set(xlabel="relearn epoch", ylabel="forget accuracy (%)", ylim=(-3, 103), yticks=range(0, 101, 20))
        ax.set_title(f"Relearn curves, {title}\n(a class that regained the original accuracy keeps its last value)",
                     fontsize=9)
        side_legend(ax, 3.6)
        return fig
    epochs = records[(records["metric"] == "relearn_epochs")].dropna(subset=["value"])
    if epochs.empty:
        return None
    epochs = epochs.assign(method_label=[labels[(m, p)] for m, p in zip(epochs["method"], epochs["params"])])
    order = [labels[k] for k in _label_order(records) if labels[k] in set(epochs["method_label"])]
    sns.stripplot(epochs, x="method_label", y="value", order=order, ax=ax, size=4, color="0.6", jitter=0.2)
    sns.pointplot(epochs, x="method_label", y="value", order=order, ax=ax, errorbar="sd", color="C3",
                  linestyle="none", marker="D", markersize=5)
    ax.set(xlabel="", ylabel="relearn epochs per class")
    ax.set_title(f"Relearn epochs per class, {title}\n(no relearn curves recorded)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    return fig


def cost_vs_classes(records: pd.DataFrame) -> Figure | None:
    """Cumulative unlearning wall time (s) against the number of classes unlearned, mean over seeds, for the
    records of one dataset × backbone: per-class methods add one run per class, all-class methods pay once
    (a flat line); None without `unlearn_seconds`."""
    rows = records[(records["metric"] == "unlearn_seconds") & (records["split"] == "all")].dropna(subset=["value"])
    if rows.empty:
        return None
    labels = legend_labels(records)
    n_classes = int(records["forget_class"].nunique())
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    for i, key in enumerate(_label_order(rows)):
        part = rows[(rows["method"] == key[0]) & (rows["params"] == key[1])]
        style = line_style(i)
        if part["forget_class"].isna().all():  # one run for every class: a flat line without markers
            total = part.groupby("seed")["value"].sum().mean()
            ax.plot([1, max(n_classes, 1)], [total, total], **{**style, "marker": None}, label=labels[key])
            continue
        per_class = part.dropna(subset=["forget_class"]).sort_values("forget_class")
        cumulative = per_class.groupby("seed")["value"].cumsum()
        steps = per_class.groupby("seed").cumcount() + 1
        curve = cumulative.groupby(steps).mean()
        ax.plot(curve.index, curve.to_numpy(), markersize=3, label=labels[key], **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="number of classes unlearned", ylabel="cumulative unlearning time (s)",
           title=f"Cost vs classes, {records['dataset'].iloc[0]} / {records['backbone'].iloc[0]}")
    side_legend(ax, 3.6)
    return fig


LEGEND_ROW_INCHES = 0.16  # one legend entry at fontsize 7
TITLE_AND_LABEL_INCHES = 0.8  # a figure's height the axes beside the legend do not take
LEGEND_COLUMN_INCHES = 1.7  # one more legend column of method names (at least: see legend_column_inches)
LEGEND_CHARACTER_INCHES = 0.058  # a character at fontsize 7, on average
LEGEND_HANDLE_INCHES = 0.4  # a legend entry's line or patch and the gap after it


def legend_column_inches(labels: list[str]) -> float:
    """The width of one legend column holding `labels` (its longest line) at fontsize 7."""
    longest = max((len(line) for label in labels for line in label.splitlines()), default=0)
    return max(LEGEND_COLUMN_INCHES, LEGEND_HANDLE_INCHES + LEGEND_CHARACTER_INCHES * longest)


def side_legend(ax, height: float) -> None:
    """The axes' legend beside it, in as many columns as it takes for every entry (each line of a wrapped one) to fit
    beside the axes of a figure `height` inches high (in one column, 24 methods ran off the foot of a 3.6-inch
    figure)."""
    labels = ax.get_legend_handles_labels()[1]
    lines = sum(label.count("\n") + 1 for label in labels)  # a wrapped label: several
    rows = max(1, int((height - TITLE_AND_LABEL_INCHES) / LEGEND_ROW_INCHES))
    columns = max(1, math.ceil(lines / rows))
    if columns > 1:  # widen the figure by the extra columns, or they squeeze the axes and clip its title
        width, tall = ax.figure.get_size_inches()
        ax.figure.set_size_inches(width + legend_column_inches(labels) * (columns - 1), tall)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncols=columns)


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "D", "P")  # not ▼/▲, which mark values off the profile scale


def line_style(i: int) -> dict:
    """The color, line style and marker of the i-th line of a figure: the ten tab10 colors, then each again with
    the next line style and marker, so up to 40 methods' lines differ (on the color cycle alone the eleventh
    repeated the first)."""
    return {"color": f"C{i % 10}", "linestyle": LINE_STYLES[i // 10 % 4], "marker": MARKERS[i // 10 % 4]}


def _label_order(records: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, params) pairs of `records` in the tables' method order."""
    pairs = records[["method", "params"]].drop_duplicates()
    order = {m: i for i, m in enumerate(method_order(pairs["method"]))}
    return sorted(pairs.itertuples(index=False, name=None), key=lambda k: (order[k[0]], params_key(k[1])))


PROFILE_RANGE = (-1.0, 2.0)  # a profile's drawn scale: where original and retrained nearly agree, a metric's
# rescaled values run to hundreds (Acc_r of the smoke VGG: 98.1 vs 98.5 %) and would flatten every other column

# metrics a method profile compares, each read from one split (`profile_splits`)
PROFILE_METRICS = [("acc_retain", "Acc_r"), ("acc_forget", "Acc_f"), ("zrf", "ZRF"), ("relearn_epochs", "RT"),
                   ("mia_forget", "MIA"), ("js_to_retrain_forget", "JS_f")]


def profile_splits(records: pd.DataFrame) -> dict[str, str]:
    """The split each profile metric the records hold is read from (short name → split): test where it was
    recorded there (held-out data, one split for every metric that has it), else the first split it was recorded
    on (e.g. MIA on train, RT on val)."""
    splits = {}
    for metric, short in PROFILE_METRICS:
        rows = records[(records["metric"] == metric)].dropna(subset=["value"])
        if not rows.empty:
            splits[short] = "test" if (rows["split"] == "test").any() else rows["split"].iloc[0]
    return splits


def method_profiles(records: pd.DataFrame) -> pd.DataFrame:
    """Per method label × metric (one dataset × backbone), the mean value on its split (`profile_splits`) rescaled
    so that the original model is 0 and the retrained one 1 (how far a method moved from the original towards
    retraining); metrics on which the two coincide, or that either lacks, are left out. Empty without both
    reference methods."""
    labels = legend_labels(records)
    means = {}
    splits = profile_splits(records)
    for metric, short in PROFILE_METRICS:
        if short not in splits:
            continue
        rows = records[(records["metric"] == metric) & (records["split"] == splits[short])].dropna(subset=["value"])
        for (method, params), value in rows.groupby(["method", "params"])["value"].mean().items():
            means[(labels[(method, params)], short)] = float(value)
    frame = pd.Series(means, dtype=float).unstack() if means else pd.DataFrame()
    reference = {m: labels[k] for k in labels if (m := k[0]) in ("original", "retrain")}
    if frame.empty or not {"original", "retrain"} <= set(reference) or not set(reference.values()) <= set(frame.index):
        return pd.DataFrame()  # (a reference that recorded none of the metrics: its costs alone)
    origin, target = frame.loc[reference["original"]], frame.loc[reference["retrain"]]
    span = target - origin
    usable = [c for c in frame.columns if np.isfinite(span[c]) and abs(span[c]) > 1e-9]
    scaled = (frame[usable] - origin[usable]) / span[usable]
    return scaled[[short for _, short in PROFILE_METRICS if short in usable]]


def profile_figure(records: pd.DataFrame) -> Figure | None:
    """Parallel coordinates of every method over the profile metrics (`method_profiles`: original = 0, retrained
    = 1) for the records of one dataset × backbone; None when the profile is empty."""
    profiles = method_profiles(records)
    if profiles.empty or profiles.shape[1] < 2:
        return None
    order = [legend_labels(records)[k] for k in _label_order(records)]
    fig = new_figure(1.3 * profiles.shape[1] + 3.0, 3.8)
    ax = fig.subplots()
    xs = np.arange(profiles.shape[1])
    low, high = PROFILE_RANGE
    for i, label in enumerate(o for o in order if o in profiles.index):
        values = profiles.loc[label].to_numpy()
        line, = ax.plot(xs, np.clip(values, low, high), markersize=3, label=label, **line_style(i))
        for marker, beyond in (("v", values < low), ("^", values > high)):  # off the scale: drawn at its edge
            ax.plot(xs[beyond], np.clip(values[beyond], low, high), linestyle="none", marker=marker, markersize=7,
                    color=line.get_color())
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.axhline(1, color="0.6", linewidth=0.8, linestyle="--")
    splits = profile_splits(records)
    ax.set_xticks(list(xs), [f"{short}\n({splits[short]})" for short in profiles.columns])  # the split it is read from
    ax.set_ylim(low - 0.1, high + 0.1)
    ax.set(ylabel="original = 0, retrained = 1",
           title=f"Method profiles, {records['dataset'].iloc[0]} / {records['backbone'].iloc[0]}\n"
                 f"(▼/▲: below {low:g} or above {high:g}, drawn at the edge)")
    ax.title.set_fontsize(9)
    side_legend(ax, 3.8)
    return fig
