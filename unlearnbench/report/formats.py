"""Write a report table as CSV (its numbers), LaTeX (booktabs, via pandas' Styler) and Markdown (its layout)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..store import atomic_write
from .tables import Table

# plain-text captions → LaTeX; the cells and headers are escaped by the Styler itself
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "—": "--", "−": "$-$", "×": r"$\times$", "≥": r"$\geq$",
                  r"Acc\_r": r"Acc\textsubscript{r}", r"Acc\_f": r"Acc\textsubscript{f}"}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (for captions; table cells go through the Styler)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A `table` float holding a booktabs tabular of `table.display`, with caption and label `tab:<name>`;
    needs \\usepackage{booktabs,multirow}."""
    frame = table.display
    styler = (frame.style.format(escape="latex").format_index(escape="latex", axis=0)
              .format_index(escape="latex", axis=1))
    nested = isinstance(frame.index, pd.MultiIndex) and len(frame) > 1
    latex = styler.to_latex(
        column_format="l" * frame.index.nlevels + "c" * len(frame.columns), hrules=True, multirow_align="t",
        multicol_align="c", clines="skip-last;data" if nested else None, environment="table",
        position_float="centering", label=f"tab:{table.name.replace('_', '-')}")
    latex = _group_rules(latex, frame.index.nlevels)
    latex = latex.replace("\\centering\n", f"\\centering\n\\caption{{{latex_escape(table.caption)}}}\n", 1)
    for symbol, replacement in _LATEX_SYMBOLS.items():
        latex = latex.replace(symbol, replacement)
    return latex


def _group_rules(latex: str, levels: int) -> str:
    """Booktabs rules between row groups instead of the Styler's \\cline: a \\midrule where one of the outer
    index levels changes (all but the last, or the last two for deep indexes), none before \\bottomrule."""
    deepest = levels - 1 if levels <= 3 else levels - 2

    def rule(match: re.Match) -> str:
        starts = [int(s) for s in re.findall(r"\\cline\{(\d+)-", match[0])]
        return "\\midrule\n" if min(starts) <= deepest else ""

    latex = re.sub(r"(?:\\cline\{\d+-\d+\}\s*)+", rule, latex)
    return latex.replace("\\midrule\n\\bottomrule", "\\bottomrule")


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub pipe table of `frame`: index levels as leading columns (repeats left blank), column levels joined
    by a space, '|' escaped."""
    headers = [str(n or "") for n in frame.index.names] + [
        " ".join(str(level) for level in c) if isinstance(c, tuple) else str(c) for c in frame.columns]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    previous: tuple = ()
    for key, row in zip(frame.index, frame.itertuples(index=False, name=None)):
        key = key if isinstance(key, tuple) else (key,)
        shown = [("" if previous[:i + 1] == key[:i + 1] else str(k)) for i, k in enumerate(key)]
        previous = key
        lines.append("| " + " | ".join(_md(v) for v in shown + list(map(str, row))) + " |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_table(table: Table, folder: Path) -> dict[str, Path]:
    """Write `<name>.csv` (the long numeric values), `<name>.tex` and `<name>.md` into `folder`; returns the paths
    by format."""
    paths = {"csv": folder / f"{table.name}.csv", "tex": folder / f"{table.name}.tex",
             "md": folder / f"{table.name}.md"}
    atomic_write(paths["csv"], table.values.to_csv(index=False))
    atomic_write(paths["tex"], to_latex(table))
    atomic_write(paths["md"], f"**{table.title}.** {table.caption}\n\n{to_markdown(table.display)}")
    return paths
