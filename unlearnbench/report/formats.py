"""Write a report table as CSV (its numbers), LaTeX (booktabs, via pandas' Styler) and Markdown (its layout)."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..store import atomic_write
from .tables import Table

# plain-text captions → LaTeX; the cells and headers are escaped by the Styler itself
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}  # OT1 text would print < and > as ¡ and ¿
_LATEX_SYMBOLS = {r"Acc\_r": r"Acc\textsubscript{r}", r"Acc\_f": r"Acc\textsubscript{f}"}
# non-ASCII characters → what plain pdflatex (no inputenc beyond its utf8 default) typesets; Greek letters by name
_LATEX_CHARACTERS = {"±": r"$\pm$", "—": "--", "–": "--", "−": "$-$", "×": r"$\times$", "≥": r"$\geq$",
                     "≤": r"$\leq$", "≈": r"$\approx$", "→": r"$\rightarrow$", "·": r"$\cdot$", "…": r"\ldots{}",
                     "ℓ": r"$\ell$", "‖": r"$\|$", "²": r"\textsuperscript{2}", "•": r"$\bullet$", "’": "'",
                     "‘": "`", "“": "``", "”": "''", "\u00a0": "~",
                     "†": r"\dag{}", "‡": r"\ddag{}"}


# Greek capitals (and small omicron) drawn like Latin letters, for which LaTeX has no command
_GREEK_AS_LATIN = {"alpha": "a", "beta": "b", "epsilon": "e", "zeta": "z", "eta": "h", "iota": "i", "kappa": "k",
                   "mu": "m", "nu": "n", "omicron": "o", "rho": "p", "tau": "t", "chi": "x"}


def latex_character(ch: str) -> str:
    """`ch` as pdflatex typesets it: ASCII as is, the symbols above and Greek letters (σ → $\\sigma$, Δ →
    $\\Delta$) in math mode, accented Latin letters as they are (pdflatex's utf8 default reads them); any other
    non-ASCII character is an error naming it, since pdflatex would stop on it."""
    if ch.isascii():
        return ch
    if ch in _LATEX_CHARACTERS:
        return _LATEX_CHARACTERS[ch]
    name = unicodedata.name(ch, "")
    if name.startswith("LATIN ") and ord(ch) < 0x180:
        return ch
    if name.startswith("GREEK ") and " LETTER " in name and len(name.split()) == 4:  # no accented letters
        letter = name.rsplit(" ", 1)[1].lower()
        if letter in _GREEK_AS_LATIN and ("CAPITAL" in name or letter == "omicron"):
            return _GREEK_AS_LATIN[letter].upper() if "CAPITAL" in name else "o"  # LaTeX has no command for these
        return f"$\\{letter.capitalize() if 'CAPITAL' in name else letter}$"
    raise UserError(f"No LaTeX form for the character {ch!r} ({name or 'unnamed'}); add it to _LATEX_CHARACTERS.")


def latex_text(latex: str) -> str:
    """`latex` with every non-ASCII character replaced by its pdflatex form (`latex_character`)."""
    return "".join(latex_character(ch) for ch in latex)


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (for captions; table cells go through the Styler)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


LONG_TABLE_ROWS = 40  # more rows than this: a longtable, which breaks across pages (a float cannot)
LATEX_PACKAGES = "booktabs,multirow,longtable,adjustbox"


def to_latex(table: Table) -> str:
    """`table.display` as booktabs LaTeX with caption and label `tab:<name>`: a `table` float whose tabular is
    shrunk to the line width where wider (adjustbox), or, above LONG_TABLE_ROWS rows, a `longtable` in
    \\footnotesize that breaks across pages and repeats its header; needs the LATEX_PACKAGES."""
    frame = table.display
    styler = (frame.style.format(escape="latex").format_index(escape="latex", axis=0)
              .format_index(escape="latex", axis=1))
    nested = isinstance(frame.index, pd.MultiIndex) and len(frame) > 1
    long = len(frame) > LONG_TABLE_ROWS
    label = f"tab:{table.name.replace('_', '-')}"
    latex = styler.to_latex(  # a long table's group label on its first row only: a \\multirow cannot break pages
        column_format="l" * frame.index.nlevels + "c" * len(frame.columns), hrules=True,
        multirow_align="naive" if long else "t",
        multicol_align="c", clines="skip-last;data" if nested else None,
        **({"environment": "longtable", "caption": latex_escape(table.caption), "label": label} if long else
           {"environment": "table", "position_float": "centering", "label": label}))
    latex = latex.replace("<", _LATEX_SPECIAL["<"]).replace(">", _LATEX_SPECIAL[">"])  # the Styler keeps them
    latex = _group_rules(latex, frame.index.nlevels)
    if long:
        latex = ("\\begingroup\\footnotesize\n" + re.sub(r"(?:\\midrule\n)+(\\end\{longtable\})", r"\1", latex)
                 + "\\endgroup\n")
    else:
        latex = latex.replace("\\centering\n", f"\\centering\n\\caption{{{latex_escape(table.caption)}}}\n"
                              "\\begin{adjustbox}{max width=\\linewidth}\n", 1)
        latex = latex.replace("\\end{tabular}\n", "\\end{tabular}\n\\end{adjustbox}\n", 1)
    for symbol, replacement in _LATEX_SYMBOLS.items():
        latex = latex.replace(symbol, replacement)
    return latex_text(latex)


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
