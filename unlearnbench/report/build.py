"""Assemble a run's report/: every table in three formats, every figure as PNG and PDF, and index.md."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pandas as pd

from .. import __version__
from ..errors import UserError
from ..store import RunFolder, atomic_write, writable_folder
from .figures import (cost_vs_classes, filter_class_heatmap, load_relevance, per_class_bars, profile_figure,
                      relearn_figure, save_figure)
from .formats import write_table
from .html import render_html
from .index import FigureEntry, render_index
from .paper import paper_comparison
from .records import distinct_folders, load_runs
from .names import discovered_cards, params_tag, run_labels
from .tables import (Table, cost_table, methods_table, metrics_summary, parameters_table, table1,
                     table2)


def paper_split(records: pd.DataFrame) -> str:
    """The split of the main Table 1: 'train' (the paper's choice) when accuracies were recorded on it, else
    'test'."""
    acc = records[records["metric"].isin(["acc_retain", "acc_forget"])]
    return "train" if (acc["split"] == "train").any() else "test"


def build_tables(records: pd.DataFrame, cards: dict[str, dict] | None = None) -> list[Table]:
    """The methods table (`cards`: name → `Unlearner.card`, default the discovered methods'), Table 1 (train
    split when present), Table 1 on the test split (when that differs), Table 2, the paper comparison, the cost
    table, the parameters of every row and the all-metrics summary, in that order."""
    split = paper_split(records)
    main, second = table1(records, split), table2(records)
    has_test = (records["split"] == "test").any()
    extra = [table1(records, "test", "table1_test")] if split == "train" and has_test else []
    cards = {**discovered_cards(), **(cards or {})}
    return [methods_table(records, cards), main, *extra, second, paper_comparison(main, second, records),
            cost_table(records), parameters_table(records), metrics_summary(records)]


def _stem(*parts: str) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


def write_figures(records: pd.DataFrame, run_dirs: list[Path], folder: Path) -> list[FigureEntry]:
    """Draw every figure the records (and WF-Net α files under <run>/artifacts/wfnet/) allow; returns them."""
    entries: list[FigureEntry] = []

    def keep(fig, section: str, title: str, stem: str) -> None:
        if fig is not None:
            png, pdf = save_figure(fig, folder, stem)
            entries.append(FigureEntry(section, title, png, pdf))

    settings = {params_tag(p): p for p in pd.unique(records.loc[records["method"] == "wfnet", "params"])}
    for i, run_dir in enumerate(run_dirs, 1):
        run = [f"run{i}"] if len(run_dirs) > 1 else []  # one folder's files may have another's names
        for path in sorted((Path(run_dir) / "artifacts" / "wfnet").glob("*.safetensors")):
            relevance, classes = load_relevance(path)
            if not relevance:
                continue
            tag = re.search(r"__p[0-9a-f]{8}(?=__|$)", path.stem)
            name = path.stem.replace(tag[0], "") if tag else path.stem
            if tag:
                params = json.loads(settings.get(tag[0], "{}"))
                name += f" ({', '.join(f'{k}={v}' for k, v in sorted(params.items())) or f'parameters {tag[0][2:]}'})"
            keep(filter_class_heatmap(relevance, classes),
                 "Filter–class relevance of WF-Net (paper Figures 3/4)",
                 f"WF-Net α, {f'run {i}, ' if run else ''}{name}: per layer, the filters among the 10 most relevant "
                 f"of at least 2 classes (the paper's Figure 3 rule; a dot marks a class's top 10)",
                 _stem("heatmap", *run, path.stem))
    split = paper_split(records)
    kinds = [("per_class", f"Per-class accuracy ({split} split)", partial(per_class_bars, split=split)),
             ("relearn", "Relearning", relearn_figure), ("cost", "Cost against the number of classes", cost_vs_classes),
             ("profile", "Method profiles (original = 0, retrained = 1)", profile_figure)]
    groups = list(records[["dataset", "backbone"]].drop_duplicates().itertuples(index=False, name=None))
    for stem, section, draw in kinds:
        for dataset, backbone in groups:
            part = records[(records["dataset"] == dataset) & (records["backbone"] == backbone)]
            keep(draw(part), section, f"{dataset} / {backbone}", _stem(stem, dataset, backbone))
    return entries


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write the report of one or more run folders (records merged by records.load_runs: each value once, the last
    folder's) into `out` (default: <run_dir>/report for a single run) and return that folder: index.md, index.html
    (self-contained), each table as <name>.csv/.tex/.md, figures/ as PNG and PDF."""
    run_dirs = distinct_folders(run_dirs)
    if out is None:
        if len(run_dirs) != 1:
            raise UserError("A report merging several run folders needs an output folder (--out DIR).")
        out = run_dirs[0] / "report"
    records, sources = load_runs(run_dirs)
    out = writable_folder(out, "report folder")
    with RunFolder(out).lock("report"):  # two reports into one folder (a run's own and `report`) removed each other's
        _write_into(out, records, sources, run_dirs)
    return out


def _write_into(out: Path, records: pd.DataFrame, sources: list, run_dirs: list[Path]) -> None:
    """write_report's tables, figures and indexes into the (locked) folder `out`, and the files of an earlier report
    there that this one does not write removed."""
    cards = {name: card for s in sources for name, card in (s.config.get("methods") or {}).items()}
    # a method is named as its run's config recorded it: a plugin's label, though this process has not found it
    with run_labels({name: card["label"] for name, card in cards.items() if card.get("label")}):
        written = [(t, write_table(t, out) if not t.display.empty else None) for t in build_tables(records, cards)]
        figures = write_figures(records, run_dirs, out / "figures") if not records.empty else []
    generated = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by unlearnbench {__version__}"
    atomic_write(out / "index.md", render_index(written, figures, sources, records, out, generated))
    atomic_write(out / "index.html", render_html(written, figures, sources, records, out, generated))
    files = [p for _, paths in written if paths for p in paths.values()]
    _remove_stale(out, [*files, *(p for f in figures for p in (f.png, f.pdf)), out / "index.md", out / "index.html"])


MANIFEST = ".report-files"  # the files the last report written into a folder holds, one relative path a line


def _remove_stale(out: Path, written: list[Path]) -> None:
    """Delete the files an earlier report wrote into `out` that this one did not (a table or figure with no data
    now kept the earlier numbers beside an index saying there were none), then record this report's files. Only
    files a manifest lists are removed: a folder of the user's own keeps what else it holds."""
    names = sorted({p.relative_to(out).as_posix() for p in written})
    manifest, root = out / MANIFEST, out.resolve()
    earlier = manifest.read_text().splitlines() if manifest.is_file() else []
    kept = {n.casefold() for n in names}  # (on a case-insensitive disk, another spelling is this report's file)
    for name in set(earlier) - set(names):
        path = out / name
        if name and name.casefold() not in kept and path.resolve().is_relative_to(root) and path.is_file():
            path.unlink()  # (a hand-edited manifest reaches nothing outside the folder, nor a folder)
    atomic_write(manifest, "".join(f"{n}\n" for n in names))
