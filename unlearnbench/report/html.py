"""index.html: the report as one self-contained page (figures inline as data URIs, no network needed), with
tables sortable by a click on a column header and a filter on the method names, both also set by the address
(`index.html#filter=WF-Net|SalUn&sort=0:2`)."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from .index import FigureEntry, records_note, run_facts
from .records import RunSource
from .tables import Table

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 12.5px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; position: sticky; top: 0; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
td.key, th.key, td.text, th.text { text-align: left; } td.text { white-space: normal; min-width: 12em; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-size: 12.5px; color: #555; }
#filter { position: sticky; top: 0; background: #fff; padding: 0.4em 0; z-index: 1; }
.caption { color: #444; max-width: 75em; } .links { font-size: 12.5px; }
"""

# Sorting: numbers by the first number in a cell (so "95.3 ± 1.2" sorts as 95.3; "—" last), text otherwise.
# Filtering: a row stays when its method's name contains the filter's text, or one of its "|"-separated parts
# (case-insensitive, taken literally: "Random Labels (mixed)" matches itself).
# Self-check: once every image has loaded, <body data-images="loaded N"> (or "broken K of N"), for tests.
SCRIPT = """
function cellValue(row, i) {
  const text = row.cells[i].textContent.trim();
  const m = text.match(/^[-+]?\\d*\\.?\\d+(e[-+]?\\d+)?/i);
  return m ? parseFloat(m[0]) : text;
}
document.querySelectorAll("table.sortable th").forEach((th) => {
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
    const ascending = !th.classList.contains("sorted-asc");
    table.querySelectorAll("th").forEach((h) => h.classList.remove("sorted-asc", "sorted-desc"));
    th.classList.add(ascending ? "sorted-asc" : "sorted-desc");
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = cellValue(a, i), y = cellValue(b, i);
      if (typeof x === typeof y) return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      return typeof x === "number" ? -1 : 1;
    });
    rows.forEach((r) => body.appendChild(r));
  });
});
const filter = document.getElementById("method-filter");
filter.addEventListener("input", () => {
  const parts = filter.value.toLowerCase().split("|").map((p) => p.trim()).filter((p) => p);
  document.querySelectorAll("tr[data-method]").forEach((row) => {
    const method = row.dataset.method.toLowerCase();
    row.hidden = parts.length > 0 && !parts.some((p) => method.includes(p));
  });
});
// A view can be linked: index.html#filter=WF-Net|SalUn&sort=0:2 filters the methods and sorts table 0 by column 2.
function applyHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("filter")) { filter.value = params.get("filter"); filter.dispatchEvent(new Event("input")); }
  if (params.has("sort")) {
    const [t, c] = params.get("sort").split(":").map(Number);
    const table = document.querySelectorAll("table.sortable")[t];
    if (table && table.tHead.rows[0].cells[c]) table.tHead.rows[0].cells[c].click();
  }
}
window.addEventListener("load", applyHash);
function checkImages() {
  const images = Array.from(document.images);
  if (!images.every((img) => img.complete)) { setTimeout(checkImages, 50); return; }
  const broken = images.filter((img) => img.naturalWidth === 0).length;
  document.body.dataset.images = broken ? `broken ${broken} of ${images.length}` : `loaded ${images.length}`;
}
window.addEventListener("load", checkImages);
"""


def _inline(text: str) -> str:
    """Escaped HTML of a line of the Markdown the index uses: `code` and **bold** only."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _flat(value) -> str:
    return " · ".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def table_html(frame: pd.DataFrame) -> str:
    """A sortable table of a display frame: its index levels as leading key columns (repeated on every row so that
    any sort keeps each row whole), its column levels joined by "·"; a row carries its method in `data-method`."""
    names = [n or "" for n in frame.index.names]
    method_level = next((i for i, n in enumerate(names) if n.lower() == "method"), None)
    # words (a paper's title) left-aligned and wrapped; numbers stay right-aligned
    kinds = [' class="text"' if _is_text(frame.iloc[:, i]) else "" for i in range(frame.shape[1])]
    head = "".join(f'<th class="key">{html.escape(n)}</th>' for n in names)
    head += "".join(f"<th{kind}>{html.escape(_flat(c))}</th>" for c, kind in zip(frame.columns, kinds))
    rows = []
    for key, values in zip(frame.index, frame.itertuples(index=False, name=None)):
        keys = key if isinstance(key, tuple) else (key,)
        method = f' data-method="{html.escape(str(keys[method_level]))}"' if method_level is not None else ""
        cells = "".join(f'<td class="key">{html.escape(str(k))}</td>' for k in keys)
        cells += "".join(f"<td{kind}>{html.escape(str(v))}</td>" for v, kind in zip(values, kinds))
        rows.append(f"<tr{method}>{cells}</tr>")
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


NUMERIC_CELL = re.compile(r"\s*([−+-]?\d|—$|nan$|$)")  # a number, possibly with ± and marks, or nothing


def _is_text(column: pd.Series) -> bool:
    """Whether a column holds words (a paper's title, a reason) rather than numbers."""
    return not all(NUMERIC_CELL.match(str(v)) for v in column)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def render_html(tables: list[tuple[Table, dict[str, Path] | None]], figures: list[FigureEntry],
                sources: list[RunSource], records: pd.DataFrame, out: Path, generated: str) -> str:
    """The whole index.html: the runs, each table (sortable, filterable by method, linked to its files) and each
    figure embedded as a PNG data URI linked to its PDF; links relative to `out`."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>unlearnbench report</title><style>{STYLE}</style></head><body>",
             "<h1>unlearnbench report</h1>",
             f"<p>Generated {html.escape(generated)} from {len(sources)} run folder{'s' * (len(sources) > 1)} "
             f"({html.escape(records_note(records))}). Click a column header to sort; "
             "<a href=\"index.md\">index.md</a> holds the same report as Markdown.</p>"]
    for i, source in enumerate(sources, 1):
        facts = "".join(f"<li>{html.escape(name)}: {_inline(value)}</li>" for name, value in run_facts(source, records))
        parts.append(f"<h2>Run {i}: <code>{html.escape(str(source.path))}</code></h2><ul>{facts}</ul>")
    parts.append('<h2>Tables</h2><div id="filter"><label>Show methods matching '
                 '<input id="method-filter" type="search" placeholder="e.g. WF-Net|SalUn"></label></div>')
    for table, paths in tables:
        parts.append(f"<h3>{html.escape(table.title)}</h3><p class=\"caption\">{_inline(table.caption)}</p>")
        if paths is None:
            parts.append("<p><em>No records for this table in this run.</em></p>")
            continue
        links = " · ".join(f'<a href="{paths[key].relative_to(out).as_posix()}">{label}</a>'
                           for key, label in (("csv", "CSV"), ("tex", "LaTeX"), ("md", "Markdown")))
        parts.append(table_html(table.display) + f'<p class="links">{links}</p>')
    parts.append("<h2>Figures</h2>")
    if not figures:
        parts.append("<p><em>No figure could be drawn from these records.</em></p>")
    section = None
    for fig in figures:
        if fig.section != section:
            section = fig.section
            parts.append(f"<h3>{html.escape(section)}</h3>")
        parts.append(f'<figure><img src="{_data_uri(fig.png)}" alt="{html.escape(fig.title)}">'
                     f'<figcaption>{html.escape(fig.title)} · '
                     f'<a href="{fig.pdf.relative_to(out).as_posix()}">PDF</a></figcaption></figure>')
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)
