"""Read one or more run folders: their records (merged, each value once: the last folder's; a cell's relearn values
those of its largest relearn cap) and what each run was."""
from __future__ import annotations

import csv
import dataclasses
import gzip
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..store import FAILURE_COLUMNS, RECORD_COLUMNS, config_differences, read_run_config

_LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) ")
# runner.run's counts at its end, and the rows it wrote into records.csv (logs before 2026-12-07 lack them)
_LOG_FINISHED = re.compile(r"^\S+ finished: (\d+ cells computed.*?)(?:; records\.csv: (\d+) rows)?$")
_LOG_PLANNED = re.compile(r"^\S+ grid '.*': \d+ cells to run")  # its plan, at its start (planning.describe_plan)
# the relearn metric's rows (metrics/relearn.py): their values depend on the run's relearn cap
CAPPED_METRIC = re.compile(r"^(relearn_epochs|relearned|relearn_diverged|relearn_curve_\d+)$")
CURVE_METRIC = re.compile(r"^relearn_curve_(\d+)$")  # forget accuracy after <epoch> relearn epochs: drawn, not tabled
UNFINISHED = "did not finish (its log has no counts)"
CELL_COLUMNS = ["dataset", "backbone", "method", "params", "seed"]  # a cell, with its forget class where it has one


@dataclass(frozen=True)
class RunSource:
    """One run folder: its path, its config.yaml (empty when absent), the first/last log timestamps (UTC), the
    devices named in its records, its number of records, its failures.csv counts by status, how many cells
    failed in its latest run but hold records from an earlier one (left out of the report, see load_runs), and its
    latest run's counts as its log says them ('N cells computed, M from cache, …'; UNFINISHED where its latest run
    did not finish, '' where the log says neither) with the number of rows it wrote into records.csv (None where
    the log does not say), and how its cost rows' devices were oversubscribed where they say so (`crowded`)."""

    path: Path
    config: dict
    started: str
    finished: str
    devices: tuple[str, ...]
    rows: int
    failures: dict[str, int]
    failed_with_records: int = 0
    latest: str = ""
    rows_written: int | None = None
    crowded: tuple[str, ...] = ()


def read_records(path: Path) -> pd.DataFrame:
    """records.csv as a frame with typed identity columns (forget_class Int64, empty for all-class rows) and float
    values (NaN where empty); a file that is not one (empty, binary, not CSV, missing columns, non-numeric seeds) is
    a UserError naming it, and so is a value that is not a number (naming its line and metric) and a file cut short
    in its last row (no final newline and fewer fields than the header: a run writes whole files, its provenance
    columns after the value; pandas would read the missing fields as empty and a cut value as a shorter number)."""
    try:
        frame = _read_table(path, RECORD_COLUMNS, "records", {"params": str, "dataset": str, "backbone": str,
                                                              "method": str, "split": str, "metric": str}, "int")
    except UserError:  # a cut in a row's first fields leaves a row that is no record: the cut is the news
        cut = _cut_last_line(path)
        if cut:
            raise UserError(_cut_short(path, cut)) from None
        raise
    cut = _cut_last_line(path)
    if cut:
        raise UserError(_cut_short(path, cut))
    values = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    # an empty value (NaN: the writer's float('nan')) and "inf" load; a value that is not a number (an edited file)
    # would silently become NaN and drop out of the tables
    bad = values.isna() & frame["value"].notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise UserError(f"{path} line {_line_number(path, row)}: value {str(frame['value'].iloc[row])!r} of metric "
                        f"{frame['metric'].iloc[row]} is not a number; fix or remove the row.")
    frame["value"] = values
    return frame


def _cut_short(path: Path, line: int) -> str:
    return (f"{path} ends in the middle of line {line}: the file was cut short; remove that line, then "
            f"`run_bench.py run --retry-failed --out {path.parent}` rewrites it whole from the cache.")


def _raw_bytes(path: Path) -> bytes:
    """The bytes of `path`, decompressed where it ends in .gz (as reports/ keep records)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        return file.read()


TAIL_BYTES = 1 << 16  # more than any records row


def _cut_last_line(path: Path) -> int | None:
    """The number of the last line of `path` when it is cut short (no final newline and fewer fields than the
    header; a whole row whose newline an editor dropped is kept), else None. A plain file is read at its two ends
    only; the whole file only to number the line of one that is cut."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        header = file.readline()
        if path.suffix != ".gz":
            file.seek(max(file.tell(), file.seek(0, os.SEEK_END) - TAIL_BYTES))
        tail = file.read()
    if not tail or tail.endswith(b"\n"):  # a header alone, or a whole last row
        return None
    last = list(csv.reader([tail.decode("utf-8", errors="replace").splitlines()[-1]]))
    header_fields = next(csv.reader([header.decode("utf-8", errors="replace")]))
    if last and len(last[0]) >= len(header_fields):
        return None
    return _raw_bytes(path).count(b"\n") + 1


def _line_number(path: Path, row: int) -> int:
    """The line of `path` (from 1) on which data row `row` (from 0, as pandas numbers them: blank lines skipped)
    ends."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        rows = (reader.line_num for fields in reader if fields)  # pandas skips blank lines
        next(rows)  # the header
        for number, line in enumerate(rows):
            if number == row:
                return line
    return row + 2  # not reached: pandas read this row from the file


def read_failures(path: Path) -> pd.DataFrame:
    """failures.csv as a frame (forget_class and seed Int64; seed empty only for a plugin error); an
    empty file is an empty frame; a file that is not one (binary, not CSV, missing columns, rows without a status
    or with a non-numeric seed) is a UserError naming it."""
    if not path.read_bytes().strip():
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    frame = _read_table(path, FAILURE_COLUMNS, "failures", {"params": str, "status": str, "reason": str,
                                                            "traceback": str}, "Int64")
    if frame["status"].isna().any() or (frame["seed"].isna() & (frame["status"] != "plugin-error")).any():
        raise UserError(f"{path} is not an unlearnbench failures file: a row has no status or no seed; move it "
                        f"away.")
    return frame


def _read_table(path: Path, columns: list[str], kind: str, dtypes: dict, seed_type: str) -> pd.DataFrame:
    """A CSV file holding at least `columns` (params empty → "{}", forget_class Int64, seed as `seed_type`), or a
    UserError saying why `path` is not an unlearnbench `kind` file."""
    try:
        frame = pd.read_csv(path, dtype=dtypes)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UserError(f"{path} is not an unlearnbench {kind} file: it lacks the column(s) "
                            f"{', '.join(missing)}; move it away.")
        frame["params"] = frame["params"].fillna("{}")
        frame["forget_class"] = pd.to_numeric(frame["forget_class"]).round().astype("Int64")
        frame["seed"] = pd.to_numeric(frame["seed"]).astype(seed_type)  # int: an empty seed is an error too
    except (ValueError, TypeError) as exc:  # pandas' parser, decoding and conversion errors
        reason = ("it is empty" if isinstance(exc, pd.errors.EmptyDataError) else
                  "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"its rows are not {kind}")
        raise UserError(f"{path} is not an unlearnbench {kind} file: {reason}; move it away.") from None
    return frame


def _source(folder: Path, records: pd.DataFrame, failures: pd.DataFrame, failed_with_records: int) -> RunSource:
    config = read_run_config(folder) or {}
    stamps: list[str] = []
    latest, written = "", None
    log = folder / "log.txt"
    if log.is_file():
        lines = log.read_text(errors="replace").splitlines()
        stamps = [m[1] for line in lines if (m := _LOG_STAMP.match(line))]
        for line in reversed(lines):  # the newest run's counts; a run planned after the last counts did not finish
            if (m := _LOG_FINISHED.match(line)) or _LOG_PLANNED.match(line):
                latest, written = (m[1], int(m[2]) if m[2] else None) if m else (UNFINISHED, None)
                break
    # (a cost row charged with a retrained model trained elsewhere says so after "; ")
    named = records["device"].dropna().astype(str) if "device" in records else pd.Series(dtype=str)
    devices = tuple(pd.unique(named.str.split("; ").str[0]))
    crowded = tuple(sorted({m for d in pd.unique(named) for m in re.findall(r"; measured with ([^;]+)", d)}))
    counts = failures["status"].value_counts().to_dict()
    return RunSource(folder, config, stamps[0] if stamps else "", stamps[-1] if stamps else "", devices,
                     len(records), {str(k): int(v) for k, v in counts.items()}, failed_with_records, latest,
                     written, crowded)


def failed_cells(records: pd.DataFrame, failures: pd.DataFrame) -> pd.Series:
    """Per record, the cell (dataset, backbone, method, params, seed, forget class or None) that `failures` lists as
    failed and the record belongs to, else None: a failure row with a forget class holds that class's rows, one
    without (a one-round cell) every row of its cell."""
    def cells(frame: pd.DataFrame) -> list[tuple]:
        return [(d, b, m, p, int(s), None if pd.isna(k) else int(k))
                for d, b, m, p, s, k in frame[CELL_COLUMNS + ["forget_class"]].itertuples(index=False, name=None)]

    failed = set(cells(failures[failures["status"] == "failed"]))
    return pd.Series([c if c in failed else c[:-1] + (None,) if c[:-1] + (None,) in failed else None
                      for c in cells(records)], index=records.index, dtype=object)


def relearn_cap(source: RunSource) -> float:
    """The epochs relearning stops at in a run (metric_settings.relearn.max_epochs of its config.yaml); NaN when
    the config does not record it."""
    cap = ((source.config.get("metric_settings") or {}).get("relearn") or {}).get("max_epochs")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float))):
        raise UserError(f"{source.path / 'config.yaml'} is not an unlearnbench run config: its "
                        f"metric_settings.relearn.max_epochs must be a number, got {cap!r}; fix or delete it.")
    return np.nan if cap is None else float(cap)


def distinct_folders(run_dirs: list[Path]) -> list[Path]:
    """`run_dirs` with a folder named twice (as typed, or by another path to it) kept once, where it was last named
    (the later folder's values count); before, it was reported as two runs."""
    last = {Path(folder).resolve(): k for k, folder in enumerate(run_dirs)}
    return [Path(folder) for k, folder in enumerate(run_dirs) if last[Path(folder).resolve()] == k]


def load_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, list[RunSource]]:
    """The concatenated records of `run_dirs` (records.csv, or records.csv.gz as reports/ keep them; a value several
    of them record: the last one's; a cell's relearn values: those of the largest relearn cap it was measured under,
    see at_largest_cap), each tagged with its run's relearn cap in a `relearn_max_epochs` column (see relearn_cap),
    and one RunSource per folder. A cell that its folder's failures.csv lists as failed is left out: its records
    there are an earlier run's, kept on disk when a re-run recomputed the cell and it failed."""
    if not run_dirs:
        raise UserError("Give at least one run folder to report on.")
    frames, sources = [], []
    for folder in distinct_folders(run_dirs):
        path = folder / "records.csv"
        if not path.is_file() and path.with_suffix(".csv.gz").is_file():
            path = path.with_suffix(".csv.gz")
        if not path.is_file():
            state = "No records.csv in" if folder.is_dir() else "Not a folder:" if folder.exists() else "No such folder:"
            raise UserError(f"{state} {folder}; pass a run folder made by run_bench.py.")
        records = read_records(path)
        failures_path = folder / "failures.csv"
        failures = read_failures(failures_path) if failures_path.is_file() else pd.DataFrame(columns=FAILURE_COLUMNS)
        failed = failed_cells(records, failures)
        sources.append(_source(folder, records, failures, failed.dropna().nunique()))
        frames.append(records[failed.isna()].assign(relearn_max_epochs=relearn_cap(sources[-1]), _folder=len(frames)))
    check_poolable(sources, frames)
    # a cell's value recorded by several runs (a re-run, another commit or device) counts once, the last folder's:
    # kept twice, sums (seconds, RT's count of classes never relearned) would double
    records = pd.concat(frames, ignore_index=True)
    cap = records["relearn_max_epochs"].where(records["metric"].str.match(CAPPED_METRIC))  # NaN equals NaN here
    duplicate = records.assign(relearn_max_epochs=cap).duplicated(RECORD_COLUMNS[:-1] + ["relearn_max_epochs"],
                                                                  keep="last")
    # a relearn curve is one measurement, ending where its class relearned: the last folder's replaces an earlier
    # one whole (value by value, a longer earlier curve's epochs would trail on after the later one's end)
    curve = records["metric"].str.match(CURVE_METRIC)
    latest = records["_folder"].where(curve).groupby([records[k] for k in RECORD_COLUMNS[:-2] + ["relearn_max_epochs"]],
                                                    dropna=False).transform("max")
    superseded = curve & (records["_folder"] < latest)
    return at_largest_cap(records[~duplicate & ~superseded].drop(columns="_folder")).reset_index(drop=True), sources


def check_poolable(sources: list[RunSource], frames: list[pd.DataFrame]) -> None:
    """Refuse to merge run folders whose records of one dataset × backbone were computed on another device type
    or precision, from other files, under other metric settings or with other values of one tuned result: a table
    would pool them in one column (the runner refuses to pool such results into one folder too)."""
    setups = [training_setups(s.config) for s in sources]  # each grid read once
    for (i, a), (j, b) in itertools.combinations(enumerate(sources), 2):
        shared = set(frames[i][["dataset", "backbone"]].itertuples(index=False, name=None)) & set(
            frames[j][["dataset", "backbone"]].itertuples(index=False, name=None))
        for dataset, backbone in sorted(shared):
            differences = config_differences(a.config, b.config, dataset) + training_differences(
                setups[i].get((dataset, backbone)), setups[j].get((dataset, backbone)))
            if differences:
                raise UserError(f"{a.path} and {b.path} hold results of {dataset} / {backbone} computed under other "
                                f"{'; '.join(differences)}, which a merged report would pool in one table; report "
                                f"them separately.")


def training_differences(sa: dict | None, sb: dict | None) -> list[str]:
    """How two runs trained one dataset × backbone's models differently (their `training_setups` entries; None
    where a grid does not read back): the recipe resolved for them, the validation carve, the input normalisation
    (a run folder refuses another grid, so only a merge can meet them: an original of one recipe would be tabled
    beside methods unlearnt from the other's)."""
    if sa is None or sb is None:
        return []
    said = []
    recipe = [f"{k} {sa['recipe'][k]!r} against {sb['recipe'][k]!r}" for k in sa["recipe"]
              if sa["recipe"][k] != sb["recipe"].get(k)]
    if recipe:
        said.append(f"training recipes ({', '.join(recipe)})")
    if sa["val_fraction"] != sb["val_fraction"]:
        said.append(f"validation carves (val_fraction {sa['val_fraction']} against {sb['val_fraction']})")
    if sa["normalisation"] != sb["normalisation"]:  # (the backbone's label does not name it)
        said.append(f"input normalisations (mean, std {sa['normalisation']} against {sb['normalisation']})")
    return said


def training_setups(config: dict) -> dict[tuple[str, str], dict]:
    """{(dataset label, backbone label), as records name them: the recipe, validation fraction (where the
    validation split is carved from the training images) and the backbone's input normalisation} of a run config's
    grid; empty where the grid does not read back."""
    from ..grid import parse_grid
    from ..training import resolve_recipe

    try:
        grid = parse_grid(config["grid"])
    except (UserError, KeyError, TypeError, ValueError):
        return {}
    setups = {}
    for entry in grid.datasets:
        carved = entry.options_dict.get("val_from", "train") == "train"  # `val_from: test` carves nothing
        for spec in grid.backbones:
            setups[entry.label, spec.label] = {
                "recipe": dataclasses.asdict(resolve_recipe(entry.name, spec, grid.recipe)),
                "val_fraction": grid.val_fraction if carved else None, "normalisation": (spec.mean, spec.std)}
    return setups


def at_largest_cap(records: pd.DataFrame) -> pd.DataFrame:
    """`records` without the relearn values a cell (dataset × backbone × method × params) also has on the same split
    under a larger relearn cap: relearning under the larger cap runs the same epochs and then goes on, so the
    smaller cap's values are a truncation of its, and a mean of both would mix two measures. A cap not recorded
    (NaN) counts as smaller than any recorded one."""
    capped = records["metric"].str.match(CAPPED_METRIC)
    cap = records["relearn_max_epochs"].where(capped)
    largest = cap.groupby([records[k] for k in CELL_COLUMNS[:-1] + ["split"]]).transform("max")
    smaller = capped & largest.notna() & (cap.isna() | (cap < largest))
    return records[~smaller]
