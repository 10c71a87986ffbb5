"""index.md: what was run (command, grid, versions, hardware, commit, dates), every table inline, every figure."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .formats import LATEX_PACKAGES, LONG_TABLE_ROWS, to_markdown
from .records import UNFINISHED, RunSource
from .tables import Table


@dataclass(frozen=True)
class FigureEntry:
    """A written figure: its section, a one-line title and its PNG and PDF files."""

    section: str
    title: str
    png: Path
    pdf: Path


def _names(items) -> str:
    if isinstance(items, str):
        return items
    return ", ".join(i.get("name", str(i)) if isinstance(i, dict) else str(i) for i in items or [])


def _grid_line(grid: dict) -> str:
    if not grid:
        return "unknown"
    return (f"**{grid.get('name', '?')}** — datasets {_names(grid.get('datasets'))}; backbones "
            f"{_names(grid.get('backbones'))}; methods {_names(grid.get('methods'))}; seeds {grid.get('seeds')}; "
            f"forget classes {grid.get('forget_classes')}; metrics {grid.get('metrics')}")


def _versions(source: RunSource, records: pd.DataFrame) -> str:
    versions = source.config.get("versions") or {
        c[2:]: v for c in records.columns if c.startswith("v_") for v in pd.unique(records[c].dropna())[:1]}
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or "unknown"


def _failures(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + " (reasons in failures.csv)"


def _rel(out: Path, path: Path) -> str:
    return path.relative_to(out).as_posix()


def run_facts(source: RunSource, records: pd.DataFrame) -> list[tuple[str, str]]:
    """What a run folder says about itself, as (name, Markdown text) pairs: command, grid, dates, hardware,
    versions, commit, record and failure counts, and the failed cells whose earlier records are left out."""
    s = source
    return [("command", f"`{s.config.get('command') or 'unknown'}`"),
            ("grid", _grid_line(s.config.get("grid") or {})),
            ("date (UTC)", f"started {s.started or 'unknown'}, finished {s.finished or 'unknown'}"),
            ("hardware", f"{', '.join(s.devices) or 'unknown'} (device setting: {s.config.get('device', 'unknown')})"),
            ("versions", _versions(s, records)),
            ("git commit", s.config.get("git_commit") or "unknown"),
            ("records", _rows(s)),
            ("cells without records", _failures(s.failures))] + (
        [("latest run", s.latest if s.latest == UNFINISHED else f"{s.latest} (a cell from the cache keeps the "
                        "records of the run that computed it: its seconds and memory were measured then, see each "
                        "record's git_commit and device)")] if s.latest else []) + (
        [("oversubscribed", f"some cost rows were measured with {' / '.join(s.crowded)} (their device column says "
                            "so): their seconds run long; measure them again with fewer --workers or --threads "
                            "and a fresh --cache-dir (the cache keeps a cell's first measurement)")]
        if s.crowded else []) + (
        [("left out", f"{s.failed_with_records} cell{'s' if s.failed_with_records > 1 else ''} that failed in the "
                      "latest run into this folder; their earlier records stay in records.csv but are not reported "
                      "as current results")] if s.failed_with_records else [])


def _rows(s: RunSource) -> str:
    """The rows of the folder's records.csv, and a warning where its latest run wrote another number (a file cut
    at a line's end, or edited, reads as a shorter whole one)."""
    if s.rows_written is None or s.rows_written == s.rows:
        return str(s.rows)
    return (f"{s.rows}, **but the latest run wrote {s.rows_written}**: records.csv was cut or edited since, so "
            f"the tables may lack cells or hold values no run wrote; `run_bench.py run --retry-failed --out "
            f"{s.path}` rewrites it from the cache")


def records_note(records: pd.DataFrame) -> str:
    """What the report's records are, as records.load_runs reads them: each value once (the last folder's)."""
    return (f"{len(records)} records: each value once, the last folder's where several record it (a cell's relearn "
            "values: the largest relearn cap's it was measured under), without the cells that failed in their "
            "folder's latest run")


def render_index(tables: list[tuple[Table, dict[str, Path] | None]], figures: list[FigureEntry],
                 sources: list[RunSource], records: pd.DataFrame, out: Path, generated: str) -> str:
    """The Markdown of index.md: the runs, each table inline (with links to its CSV/LaTeX/Markdown files, or a
    note when it has no data) and each figure embedded with links to its PNG and PDF; paths relative to `out`."""
    lines = ["# unlearnbench report", "",
             f"Generated {generated} from {len(sources)} run folder{'s' if len(sources) > 1 else ''} "
             f"({records_note(records)}).", ""]
    for i, s in enumerate(sources, 1):
        lines += [f"## Run {i}: `{s.path}`", ""] + [f"- {name}: {value}" for name, value in run_facts(s, records)]
        lines += [""]
    lines += ["## Tables", "",
              "Each table is also written as CSV (its numbers: one row per cell with the mean, its 95 % confidence "
              "interval `ci_low`–`ci_high` and its `n`, the standard deviation over seeds `std`, `seeds`, `classes`, "
              "and the Wilcoxon signed-rank p-values against WF-Net and retraining, raw `p_vs_wfnet`/`p_vs_retrain` "
              "and Holm-adjusted `p_vs_wfnet_holm`/`p_vs_retrain_holm`), LaTeX (for `\\input`, fitted to the text "
              "width of an article page: a booktabs `table` shrunk to the line width where wider, or above "
              f"{LONG_TABLE_ROWS} rows or where text cells make it wider a `longtable` that breaks across pages, "
              "whose long labels, headers and notes "
              "wrap where it is too wide, in a smaller font or split into consecutive longtables of column groups "
              "where that is not enough; needs "
              f"`\\usepackage{{{LATEX_PACKAGES}}}`) and Markdown.", ""]
    for table, paths in tables:
        lines += [f"### {table.title}", "", table.caption, ""]
        if paths is None:
            lines += ["_No records for this table in this run._", ""]
            continue
        links = " · ".join(f"[{label}]({_rel(out, paths[key])})"
                           for key, label in (("csv", "CSV"), ("tex", "LaTeX"), ("md", "Markdown")))
        lines += [to_markdown(table.display), links, ""]
    lines += ["## Figures", ""]
    if not figures:
        lines += ["_No figure could be drawn from these records._", ""]
    section = None
    for fig in figures:
        if fig.section != section:
            section = fig.section
            lines += [f"### {section}", ""]
        lines += [f"![{fig.title}]({_rel(out, fig.png)})", "",
                  f"{fig.title}: [PNG]({_rel(out, fig.png)}) · [PDF]({_rel(out, fig.pdf)})", ""]
    return "\n".join(lines)
