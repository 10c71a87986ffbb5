"""Write a report table as CSV (its numbers), LaTeX (booktabs, via pandas' Styler) and Markdown (its layout)."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
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
LINE_WIDTH_PT = 345.0  # \textwidth of a standard 10pt article page: the width the tables are fitted to
# a long table's fonts → (size in pt, width of a text in it relative to \footnotesize, \tabcolsep in pt), the
# widths measured with pdflatex's Computer Modern
_FONTS = {"footnotesize": (8, 1.0, 4.0), "scriptsize": (7, 0.94, 3.5), "tiny": (5, 0.8, 2.5)}
# \footnotesize character widths in em (8 pt); any other character 0.53 em
_CHAR_EM = {ch: em for em, chars in ((0.78, "ABCDEFGHJKLNOPQRSTUVXYZ+<=>@&×"), (0.31, "il!',.:;[]`fj"),
                                     (0.4, "-_Irt() s"), (0.47, "cez"), (0.58, "bdhnpukqvxy"), (0.92, "mwMW%#±"))
            for ch in chars}
_TEXT = re.compile(r"[A-Za-z]{2}")  # a cell with a word in it may wrap; a number may not
# where a word wider than its line may wrap: after - _ / with two characters on either side (mnist-/400perclass,
# js_/to; not N_c)
_BREAK = re.compile(r"(?<=[^\s/_-]{2}[/_-])(?=\S\S)")
_LINE = "\x1f"  # joins the lines of a long table's wrapped row label until _spread places them


@lru_cache(maxsize=1 << 16)
def _width(text: str) -> float:
    """Estimated width in pt of `text` in \\footnotesize."""
    return 8 * sum(_CHAR_EM.get(ch, 0.53) for ch in text)


@lru_cache(maxsize=1 << 16)
def _lines(text: str, width: float) -> tuple[str, ...]:
    """`text` wrapped greedily into lines no wider than `width` (\\footnotesize pt) where it can be: at spaces,
    a word wider than the line also after - _ /."""
    lines: list[str] = []
    for word in re.findall(r"\S+\s*", text) or [text]:
        for piece in _BREAK.split(word) if _width(word.rstrip()) > width else [word]:
            if lines and _width((lines[-1] + piece).rstrip()) <= width:
                lines[-1] += piece
            else:
                lines.append(piece)
    return tuple(line.rstrip() for line in lines)


def _columns(frame: pd.DataFrame) -> list[tuple[float, float, bool]]:
    """(natural width, narrowest width, has text) of each column, row labels first: the widest cell, and the widest
    piece a cell keeps when wrapped (row labels, headers and text cells wrap; index names and numbers do not)."""
    def narrowest(text: str) -> float:  # its widest piece when wrapped at every space and _BREAK
        return max(map(_width, _lines(text, 0.0)), default=0.0)

    columns = []
    for i, name in enumerate(frame.index.names):
        labels, name = [str(v) for v in frame.index.get_level_values(i).unique()], str(name or "")
        columns.append((max(map(_width, [name, *labels])), max([_width(name), *map(narrowest, labels)]), True))
    for j, column in enumerate(frame.columns):
        head, cells = str(column[-1] if isinstance(column, tuple) else column), frame.iloc[:, j].map(str).unique()
        text = [bool(_TEXT.search(c)) for c in cells]
        least = [narrowest(head)] + [narrowest(c) if t else _width(c) for c, t in zip(cells, text)]
        natural = [_width(head), *map(_width, cells)]
        if frame.columns.nlevels > 1:  # a share of the group header above it
            group, size = str(column[0]), (frame.columns.get_level_values(0) == column[0]).sum()
            least, natural = least + [narrowest(group) / size], natural + [_width(group) / size]
        columns.append((max(natural), max(least), any(text)))
    return columns


def _fill(columns: list[tuple[float, float, bool]], room: float) -> list[float] | None:
    """Widths of `columns` that add up to at most `room`: the natural ones, else all cut by a common factor (never
    below their narrowest), so that their widest cells wrap to about as many lines; None where even the narrowest
    are too wide."""
    if sum(w for w, _, _ in columns) <= room:
        return [w for w, _, _ in columns]
    if sum(n for _, n, _ in columns) > room:
        return None
    low, high = 0.0, 1.0
    for _ in range(30):  # the largest factor that fits, by bisection
        factor = (low + high) / 2
        low, high = (factor, high) if sum(max(n, factor * w) for w, n, _ in columns) <= room else (low, factor)
    return [max(n, low * w) for w, n, _ in columns]


def _fit(columns: list[tuple[float, float, bool]], font: str, free: int) -> list[float] | None:
    """\\footnotesize widths of `columns` that fill at most the line in `font`; the first `free` (a long table's
    outer row labels, which wrap down the blank cells below them) are narrowed first."""
    _, scale, sep = _FONTS[font]
    room = (0.98 * LINE_WIDTH_PT - 2 * sep * len(columns)) / scale  # 2 % for the estimates' error
    head, rest = columns[:free], columns[free:]
    if (widths := _fill(head, room - sum(w for w, _, _ in rest))) is not None:
        return widths + [w for w, _, _ in rest]
    rest_widths = _fill(rest, room - sum(n for _, n, _ in head))
    return None if rest_widths is None else [n for _, n, _ in head] + rest_widths


def _height(frame: pd.DataFrame, widths: list[float], spread: int) -> int:
    """Estimated lines of `frame`'s rows with its columns (row labels first) wrapped to `widths`, but for the first
    `spread` (outer row labels, which wrap down the blank cells below them)."""
    cells = [frame.index.get_level_values(i) for i in range(frame.index.nlevels)] + [
        frame.iloc[:, j] for j in range(frame.shape[1])]
    return sum(max(len(_lines(str(c), w)) for c, w in zip(row, widths[spread:])) for row in zip(*cells[spread:]))


def _long_layout(frame: pd.DataFrame, columns: list) -> tuple[str, list[list[int]]]:
    """The font of a long table and its data columns in consecutive longtables that each fit the line, each with
    the row labels: the fewest such tables of whole column groups (top header level), then the fewest lines, in
    \\footnotesize or \\scriptsize, else in \\tiny, else of single columns."""
    levels, groups = frame.index.nlevels, {}
    for j, column in enumerate(frame.columns):
        groups.setdefault(column[0] if isinstance(column, tuple) else j, []).append(j)

    def widths(chunk: list[int], font: str) -> list[float] | None:
        return _fit(columns[:levels] + [columns[levels + j] for j in chunk], font, levels - 1)

    singles = [[j] for j in range(len(frame.columns))]
    for units in (list(groups.values()), singles):
        for fonts in (("footnotesize", "scriptsize"), ("tiny",)):
            options = []
            for rank, font in enumerate(fonts):
                chunks: list[list[int]] = []
                for unit in units:  # greedy: each longtable takes as many whole units as fit
                    if chunks and widths(chunks[-1] + unit, font):
                        chunks[-1] = chunks[-1] + unit
                    elif widths(unit, font):
                        chunks.append(unit)
                    else:
                        break
                else:
                    lines = sum(_height(frame.iloc[:, c], widths(c, font), levels - 1) for c in chunks)
                    options.append((len(chunks), lines / _FONTS[font][0], rank, font, chunks))
            if options:  # a smaller font where it saves more lines than it is smaller
                return min(options)[3:]
    return "tiny", singles  # the row labels alone are too wide: as narrow as it gets


def _stack(lines: list[str], align: str) -> str:
    """`lines` one under the other, the first on the row's baseline."""
    stacked = "\\\\{}".join(lines)  # {}: a line starting with [ is no \\ option
    return lines[0] if len(lines) == 1 else f"\\begin{{tabular}}[t]{{@{{}}{align}@{{}}}}{stacked}\\end{{tabular}}"


def _wrap(width: float, align: str, spread: bool = False):
    """A Styler formatter: the value LaTeX-escaped, wrapped to `width` (\\footnotesize pt) in a top-aligned stack
    of lines, or with `spread` its lines joined by _LINE."""
    def formatter(value) -> str:
        lines = [latex_escape(line) for line in _lines(str(value), width)]
        return _LINE.join(lines) if spread else _stack(lines, align)
    return formatter


def _spread(latex: str) -> str:
    """A longtable's wrapped row labels (lines joined by _LINE) one line a row down the blank cells below them in
    their group, or stacked in their cell where the group has too few rows."""
    head, body = latex.split("\\endlastfoot\n", 1)
    lines = body.split("\n")
    rows = [re.split(r"(?<!\\)&", line) if line.endswith("\\\\") else None for line in lines]
    body_rows = [cells for cells in rows if cells]
    blank = [[not c.strip() for c in cells] for cells in body_rows]  # before any label moves
    for i, cells in enumerate(body_rows):
        for k, cell in enumerate(cells):
            if _LINE in cell:
                parts, below = cell.strip().split(_LINE), []
                for other, empty in zip(body_rows[i + 1:], blank[i + 1:]):  # the group's other rows
                    if not all(empty[:k + 1]) or len(below) + 1 == len(parts):
                        break
                    below.append(other)
                if len(below) + 1 < len(parts):
                    cells[k] = f" {_stack(parts, 'l')} "
                else:
                    for part, target in zip(parts, [cells, *below]):
                        target[k] = f" {part} "
    return head + "\\endlastfoot\n" + "\n".join("&".join(c) if c else line for c, line in zip(rows, lines))


def _tabular(frame: pd.DataFrame, columns: list, widths: list[float], caption: str, label: str | None,
             long: bool) -> str:
    """`frame` through pandas' Styler: a booktabs tabular, or for a long `frame` (which has its caption) a
    longtable; a column narrower in `widths` than its natural width wraps its longer cells."""
    levels = frame.index.nlevels
    styler = (frame.style.format(escape="latex").format_index(escape="latex", axis=0)
              .format_index(escape="latex", axis=1))
    for i, ((natural, _, _), width) in enumerate(zip(columns[:levels], widths)):
        if width < natural:  # a long table's outer labels wrap down the rows below them
            styler.format_index(_wrap(width, "l", long and i < levels - 1), axis=0, level=i)
    heads: dict[str, float] = {}  # a header wraps to the narrowest column it heads
    spec = "l" * levels
    for column, (natural, _, text), width in zip(frame.columns, columns[levels:], widths[levels:]):
        head = str(column[-1] if isinstance(column, tuple) else column)
        heads[head] = min(width, heads.get(head, width))
        spec += "l" if width < natural and text else "c"  # wrapped text is left-aligned
        if width < natural and text:
            styler.format({column: _wrap(width, "l")}, subset=[column])
    if any(width < _width(head) for head, width in heads.items()):
        styler.format_index(lambda head: _wrap(heads[str(head)], "c")(head), axis=1, level=frame.columns.nlevels - 1)
    spans: dict[str, float] = {}  # a group header wraps to the columns below it
    for column, width in zip(frame.columns, widths[levels:]) if frame.columns.nlevels > 1 else ():
        spans[str(column[0])] = spans.get(str(column[0]), 0.0) + width
    if any(width < _width(group) for group, width in spans.items()):
        styler.format_index(lambda group: _wrap(spans[str(group)], "c")(group), axis=1, level=0)
    nested = isinstance(frame.index, pd.MultiIndex) and len(frame) > 1
    latex = styler.to_latex(  # a long table's group label on its first row only: a \\multirow cannot break pages
        column_format=spec, hrules=True, multirow_align="naive" if long else "t",
        multicol_align="c", clines="skip-last;data" if nested else None,
        **({"environment": "longtable", "caption": latex_escape(caption), "label": label} if long else
           {"environment": "table", "position_float": "centering", "label": label}))
    latex = latex.replace("<", _LATEX_SPECIAL["<"]).replace(">", _LATEX_SPECIAL[">"])  # the Styler keeps them
    latex = _group_rules(latex, levels)
    return _spread(re.sub(r"(?:\\midrule\n)+(\\end\{longtable\})", r"\1", latex)) if long else latex


def to_latex(table: Table) -> str:
    """`table.display` as booktabs LaTeX with caption and label `tab:<name>` that fits the line of a standard
    article page (LINE_WIDTH_PT): a `table` float whose tabular is shrunk to the line width where wider (adjustbox),
    or, above LONG_TABLE_ROWS rows or where text cells make it wider, a `longtable` that breaks across pages and
    repeats its header. A longtable
    cannot be shrunk: where too wide in \\footnotesize it wraps long row labels, headers and text cells, takes
    \\scriptsize or \\tiny, or splits its column groups into consecutive longtables that each repeat the row labels
    (_long_layout). Needs the LATEX_PACKAGES."""
    frame, columns = table.display, _columns(table.display)
    label, levels = f"tab:{table.name.replace('_', '-')}", table.display.index.nlevels
    # a short table too wide for the line whose data hold text (the methods table's papers) would shrink to an
    # unreadable size: it wraps as a long one does
    natural = [w for w, _, _ in columns]
    wide_text = any(t for _, _, t in columns[levels:]) and _fit(columns, "footnotesize", 0) != natural
    if len(frame) > LONG_TABLE_ROWS or wide_text:
        font, chunks = _long_layout(frame, columns)
        latex = f"\\begingroup\\{font}\\setlength{{\\tabcolsep}}{{{_FONTS[font][2]}pt}}\n"
        for k, chunk in enumerate(chunks):
            own = columns[:levels] + [columns[levels + j] for j in chunk]
            widths = _fit(own, font, levels - 1) or [n for _, n, _ in own]  # too wide at its narrowest: overflows
            part = _tabular(frame.iloc[:, chunk], own, widths, table.caption, None if k else label, True)
            # a continuation keeps the table's number and stays out of the list of tables
            latex += part if not k else "\\addtocounter{table}{-1}\n" + part.replace("\\caption{", "\\caption[]{", 1)
        latex += "\\endgroup\n"
    else:
        latex = _tabular(frame, columns, natural, table.caption, label, False)
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
