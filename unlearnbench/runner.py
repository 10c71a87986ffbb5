"""Run a grid: plan it, train each group's stage models first, run the cells through a launcher, keep going past
failures, and write the run folder (config, log, records, failures, artifacts, report)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import scans_files_afresh
from .errors import UserError, error_reason
from .execution import Job, KeptGroup, crashed, failure_row, make_jobs, run_job
from .grid import Cell, Grid, tuned_parameters
from .launchers import LaunchOptions, WorkerSlots, check_launcher, launch
from .planning import (Plan, RunOptions, cached_originals, cell_key, describe_plan, metric_key, metric_names,
                       metric_settings, on_launcher, plan, retrained_models, stage_key_bases, stage_retrained_counts)
from .store import (Cache, RunFolder, config_differences, git_commit, read_run_config, remove_dead_partials,
                    versions, writable_folder)
from .training import compute_setting

__all__ = ["RunOptions", "RunResult", "run"]


@dataclass
class RunResult:
    run_dir: Path
    records: pd.DataFrame
    failures: list[dict]
    computed: int
    cached: int
    report_error: str | None = None  # why <run>/report could not be written this time (the rest is on disk)
    partial: int = 0  # computed cells that computed only the metrics the cache lacked (their other records cached)

    def counts(self) -> str:
        """'N cells computed[ (K of them only …)], M from cache'."""
        some = f" ({self.partial} of them only metrics the cache lacked)" if self.partial else ""
        return f"{self.computed} cells computed{some}, {self.cached} from cache"


@scans_files_afresh
def run(grid: Grid, options: RunOptions, launch_options: LaunchOptions | None = None,
        planned: Plan | None = None) -> RunResult:
    """Run every cell of `grid` not already cached; write the run folder; never stop at a failing cell.

    Original models are trained first (one job per group whose original the cache lacks), then the retrain cells
    and any other retrained model the cells' metrics need (`retrained_models`), then every other cell; each phase
    goes through the chosen launcher. `planned`: the plan of this grid and these options, where the caller made it already in this scan of
    the files (the CLI, for its warnings): an ImageNet-size plan costs seconds."""
    metrics = metric_names(grid)
    launch_options = launch_options or LaunchOptions()
    options = on_launcher(options, launch_options.slurm if launch_options.launcher == "slurm" else None)
    p = planned or plan(grid, options)
    device = p.device
    check_launch(launch_options, device)  # before any folder is made
    cache = Cache(writable_folder(options.cache, "cache folder"))
    folder = RunFolder(options.out or RunFolder.default_path(options.results_dir, grid.name))
    crowded = check_workers(grid, p.cells, stage_retrained_counts(p.cells, grid, metrics), launch_options, device,
                            options.data_root, Path(options.cache))
    KeptGroup.forget()  # models kept in memory by an earlier run in this process are not trusted blindly
    threads_before = torch.get_num_threads()
    with folder.lock(), WorkerSlots() as slots:  # one set of worker processes for every phase
        previous, earlier = check_run_folder(folder.path, grid, p)
        # folders as absolute paths: --retry-failed reads them back from wherever it is started
        folder.write_config({"command": options.command, "grid": grid_dict(grid), "device": str(device),
                             "data_root": str(Path(options.data_root).resolve()) if options.data_root else None,
                             "cache_dir": str(Path(options.cache).resolve()), "precision": options.precision,
                             "files": _files_read(p.files), "compute": compute_setting(device),
                             "plugins": [str(Path(p).resolve()) for p in options.plugins or []],
                             "only": merged_only(previous.get("only") if previous else None, options.only),
                             "versions": versions(),
                             "git_commit": git_commit(), "launcher": dataclasses.asdict(launch_options),
                             "metric_settings": {m: metric_settings(grid, m) for m in metrics},
                             "tuned_values": {**((previous or {}).get("tuned_values") or {}),
                                              **tuned_values(grid, p.cells)},
                             "methods": {m: p.methods[m].cls.card() for m in dict.fromkeys(c.method for c in p.cells)}})
        keys = {cell: cell_key(cell, grid, p.methods[cell.method], device, p.files.get(cell.dataset))
                for cell in p.cells}
        results: dict[Cell, list[dict]] = {}
        for cell in p.cells:
            hit = cache.cell_records(keys[cell], cell, {m: metric_key(keys[cell], grid, m) for m in metrics})
            if hit is not None:
                results[cell] = hit
        cached = len(results)
        folder.log(describe_plan(grid, p, cache, metrics, options.data_root, cached))  # keys and hits: once
        for leftover in remove_dead_partials(cache.root) + remove_dead_partials(folder.path):
            folder.log(f"removed {leftover}, left half-written by a process that no longer runs")
        for cell in (c for c in p.cells if keys[c] in cache.damaged_artifacts):
            folder.log(f"cell {cell.describe()}: its cached artifacts file is damaged, so it is computed again")
        if crowded:
            folder.log(f"warning: {crowded}")
            print(f"warning: {crowded}.", file=sys.stderr)
        failures = [failure_row(cell, "skipped", reason) for cell, reason in p.skipped]
        failures += [{"method": e.source, "status": "plugin-error", "reason": e.message.splitlines()[0],
                      "traceback": e.message} for e in p.plugin_errors]
        tuning = tuning_records(p.cells, tuned_parameters(grid.tuned))
        pending = [c for c in p.cells if c not in results]

        def jobs(kind: str, cells: list[Cell], together: int | None = None) -> list[Job]:
            return make_jobs(kind, cells, grid, options, launch_options, device, folder.path / "log.txt", keys,
                             together)

        # an original job per group whose original the cache lacks (before: one for every group, a Slurm task
        # and its wait in the queue on every resume); a group's cells build a cached one themselves
        trained = cached_originals(stage_key_bases(p, grid), cache)
        groups = [g for g in dict.fromkeys(c.group for c in pending) if g not in trained]
        firsts = [next(c for c in pending if c.group == g) for g in groups]
        retrains = [c for c in pending if c.method == "retrain"]
        # retrained models the other cells' metrics need whose retrain cell the plan does not hold (a --only run
        # without retrain): one job each, before the cells, so that the cells' workers find them cached rather
        # than wait on one another's training (Stages trains a model under its cache lock); a planned retrain
        # cell, run or cached, has trained its model already
        planned = {(c.group, c.forget_class) for c in p.cells if c.method == "retrain"}
        stand_ins = [c for k, c in retrained_models(pending, grid, metrics).items() if k not in planned]
        # one-round methods (WF-Net: all classes in one job) are the longest jobs: started first, no worker
        # is left alone with one at the end
        others = sorted((c for c in pending if c.method != "retrain"), key=lambda c: c.forget_class is not None)
        bar = tqdm(total=len(p.cells), initial=cached, desc=f"grid {grid.name}", disable=not options.progress,
                   mininterval=1.0)
        broken_groups: dict = {}
        partial = 0
        ended = [cell for cell, _ in p.skipped]  # with `results`: the cells this run has an outcome for
        together = len(retrains) + len(stand_ins)  # one phase: as crowded as all its jobs make it
        for phase in (jobs("original", firsts),
                      jobs("cell", retrains, together) + jobs("retrained", stand_ins, together), jobs("cell", others)):
            phase = [j for j in phase if j.cell.group not in broken_groups]
            for outcome in launch(run_job, phase, dataclasses.replace(launch_options, folder=folder.path), crashed,
                                  slots):
                cell = outcome.job.cell
                if outcome.job.kind == "original":
                    if outcome.failure:
                        broken_groups[cell.group] = outcome.failure
                    continue
                if outcome.job.kind == "retrained":  # its cells then try to train it themselves (and fail alike)
                    if outcome.failure:
                        folder.log(f"retrained model of class {cell.forget_class} for {cell.dataset.label}/"
                                   f"{cell.backbone.label} seed {cell.seed} failed: {outcome.failure['reason']}")
                    continue
                if outcome.failure:
                    failures.append(outcome.failure)
                    ended.append(cell)
                else:
                    results[cell] = outcome.records
                    partial += outcome.partial
                bar.update()
                folder.write_records(_ordered(p.cells, results, tuning), _provenance(),
                                     kept=_kept(earlier, results, "records"))
                # as each cell ends: a run cut short leaves no earlier failure of a cell it has now computed (the
                # report leaves out a failed cell's records) and lists each cell it has seen fail
                folder.write_failures(failures, kept=_kept(earlier, [*results, *ended], "failures"))
        for cell in pending:  # a group whose original failed: its cells fail with that reason
            if cell.group in broken_groups:
                broken = broken_groups[cell.group]
                failures.append(failure_row(cell, "failed", broken["reason"], broken["traceback"]))
                bar.update()
        bar.close()
        _collect_artifacts(p.cells, keys, cache, folder.path, p.methods)
        frame = folder.write_records(_ordered(p.cells, results, tuning), _provenance(),
                                     kept=_kept(earlier, results, "records"))
        planned_cells = p.cells + [cell for cell, _ in p.skipped]
        folder.write_failures(failures, kept=_kept(earlier, planned_cells, "failures"))
        result = RunResult(folder.path, frame, failures, len(results) - cached, cached, None, partial)
        # logged before the report is written, whose index quotes it as this run's counts
        folder.log(f"finished: {result.counts()}, {sum(f['status'] == 'failed' for f in failures)} failed, "
                   f"{len(p.skipped)} skipped; records.csv: {len(frame)} rows")  # the report checks the file holds them
        if not options.report:
            folder.log("report not written (--no-report)")
        else:
            try:
                from .report import write_report

                write_report([folder.path])
            except Exception as exc:  # the records are safe on disk; a report problem must not lose them
                result.report_error = str(exc) if isinstance(exc, UserError) else error_reason(exc)
                folder.log(f"report failed: {result.report_error}\n{traceback.format_exc()}")
    torch.set_num_threads(threads_before)
    return result


def _ordered(cells: list[Cell], results: dict[Cell, list[dict]], extra: dict[Cell, list[dict]]) -> list[dict]:
    """Records in plan order, whatever order the cells finished in (so a resumed run equals a clean one), each
    cell's followed by its `extra` rows."""
    return [r for cell in cells if cell in results for r in results[cell] + extra.get(cell, [])]


def merged_only(earlier: dict | list | None, now: dict | list) -> dict | list:
    """The --only filters of every run written into one folder: {} (the whole grid) if any run had none, else the
    distinct filter sets in the order they ran (a list, which --retry-failed plans as their union)."""
    if earlier is None:
        return now
    sets = (earlier if isinstance(earlier, list) else [earlier]) + (now if isinstance(now, list) else [now])
    if any(not f for f in sets):
        return {}
    distinct = [f for i, f in enumerate(sets) if f not in sets[:i]]
    return distinct[0] if len(distinct) == 1 else distinct


def check_run_folder(folder: Path, grid: Grid, p: Plan) -> tuple[dict | None, dict | None]:
    """Refuse a run folder this run cannot add to, before any work (the run and its dry run): files in the way
    (check_run_files), another grid's run, results computed under other settings, results without a config. Return
    the folder's config and its earlier results (None, None for a new folder)."""
    check_run_files(folder, p.methods)
    previous = read_run_config(folder)
    differing = grid_differences(grid, previous["grid"]) if previous is not None else ""
    if differing:
        raise UserError(f"{folder} holds a run of grid '{previous['grid'].get('name')}' with a different "
                        f"configuration (its {differing}); pass another --out or --retry-failed.")
    earlier = _earlier_results(folder) if previous is not None else None
    recorded = set(earlier["records"]["dataset"].astype(str)) if earlier and "records" in earlier else set()
    clash = _setting_clash(previous, p.files, p.device, recorded, tuned_values(grid, p.cells)) if previous else ""
    if clash:
        raise UserError(f"{folder} holds results {clash}, which this run's would be pooled with; pass another --out.")
    if previous is None and any((folder / f).is_file() for f in ("records.csv", "failures.csv")):
        raise UserError(f"{folder} holds results but no config.yaml, so they cannot be told apart from this run's; "
                        f"pass another --out.")
    return previous, earlier


def check_run_files(folder: Path, methods=()) -> None:
    """Refuse a folder or file where the run writes its own (records.csv after the work; artifacts/<method> of the
    planned `methods` at the end): before any work."""
    for name in ("config.yaml", "log.txt", "records.csv", "failures.csv", "report", "artifacts",
                 *(f"artifacts/{method}" for method in methods)):
        path, folders = folder / name, name.startswith(("report", "artifacts"))
        if path.exists() and path.is_dir() != folders:
            raise UserError(f"{path} is a {'file' if folders else 'folder'} where the run writes its {name}; move "
                            f"it away, or pass another --out.")
    if any((folder / name).is_file() for name in ("tuned.yaml", "trials.csv")):
        raise UserError(f"{folder} holds a tuning (tuned.yaml, trials.csv), not a run; pass another --out.")


def _earlier_results(folder: Path) -> dict[str, pd.DataFrame] | None:
    """The records and failures an earlier run of the same grid left in `folder` (a run with another --only, or
    one cut short), so that this run adds to them rather than erasing them."""
    from .report.records import read_failures, read_records

    earlier = {}
    if (folder / "records.csv").is_file():
        earlier["records"] = read_records(folder / "records.csv")
    if (folder / "failures.csv").is_file():
        failures = read_failures(folder / "failures.csv")
        earlier["failures"] = failures[failures["status"] != "plugin-error"]  # this run reports its own
    return earlier


def check_workers(grid: Grid, cells: list[Cell], retrains: dict, launch_options: LaunchOptions, device: torch.device,
                  data_root: str | None, cache_root: Path) -> str | None:
    """Refuse more local workers than this machine's memory holds: each is a process holding torch and the harness
    (about this process's resident size) and, on a CPU, its group's data and models (the largest estimate of the
    plan's memory table, built only once the processes alone would fill half the memory: a guard against worker
    counts far beyond the machine, not a memory planner); no more start than there are cells. Return a warning
    where CPU workers × torch threads exceed the cores: the cells then share cores, so their seconds run long."""
    from .estimates import group_estimates
    from .execution import worker_threads

    workers = min(launch_options.workers, len(cells))
    if launch_options.launcher != "local" or workers < 1:
        return None
    physical, base = host_memory_bytes(), process_bytes()
    if physical and base and workers * base > physical / 2:  # only then is the group estimate worth building
        rows = group_estimates(grid, cells, retrains, data_root, cache_root, device)[1] if device.type == "cpu" else []
        each = base + max((r.total or 0 for r in rows), default=0)
        if workers * each > physical:
            raise UserError(f"--workers {launch_options.workers} would start {workers} worker processes of about "
                            f"{each / 2**30:.1f} GiB each (torch and the harness, plus on a CPU the largest group's "
                            f"data and models), {workers * each / 2**30:.0f} GiB in all, more than this machine's "
                            f"{physical / 2**30:.0f} GiB; use --workers {max(1, physical // each)} or fewer.")
    threads, cores = worker_threads(launch_options), os.cpu_count() or 1
    if device.type == "cpu" and workers * threads > cores:
        fix = (f"--workers {cores // threads}" if 1 <= cores // threads < workers
               else f"--threads {max(1, cores // workers)}")
        return (f"{workers} worker{'s' * (workers > 1)} × {threads} torch thread{'s' * (threads > 1)} on {cores} CPU "
                f"cores: the cells share cores, so their recorded seconds run long (use {fix} for timings to "
                f"compare)")

    return None


def host_memory_bytes() -> int:
    """This machine's physical memory (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def process_bytes() -> int:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def check_launch(launch_options: LaunchOptions, device: torch.device) -> None:
    """What the launch needs of this machine, refused before a run or tune starts: the slurm launcher's commands
    (`check_launcher`); --gpus the run on CUDA (cells are keyed by the driver's device type), no GPU index of
    --device beside it, and GPUs this machine has (before: every cell failed on the missing one)."""
    check_launcher(launch_options)
    gpus = launch_options.gpus
    if not gpus:
        return
    if device.type != "cuda":
        raise UserError(f"--gpus needs a CUDA device, but the device is {device}; drop --gpus or use --device cuda.")
    if device.index is not None:  # (before: jobs went to the --gpus ones while config.yaml named the --device one)
        raise UserError(f"--device {device} and --gpus both pick GPUs; drop one (--gpus gives each worker one GPU "
                        f"of its list).")
    count = torch.cuda.device_count()
    missing = [g for g in gpus if g >= count]
    if missing:
        raise UserError(f"--gpus names GPU {missing[0]}, but this machine has {count} CUDA device(s), "
                        f"{'0' if count == 1 else f'0 to {count - 1}'}.")


def _kept(earlier: dict | None, done, kind: str) -> pd.DataFrame | None:
    """The earlier run's `kind` rows ("records" or "failures") that this run does not replace: those of cells it
    has no outcome for yet (`done` holds the ones it has). A cell's rows are its dataset, backbone, method,
    params and seed, and its forget class where it has one (a one-round cell's rows name every class)."""
    frame = (earlier or {}).get(kind)
    if frame is None or frame.empty:
        return None
    per_class = {(c.dataset.label, c.backbone.label, c.method, c.params_json, c.seed, c.forget_class)
                 for c in done if c.forget_class is not None}
    one_round = {(c.dataset.label, c.backbone.label, c.method, c.params_json, c.seed)
                 for c in done if c.forget_class is None}
    seed = pd.to_numeric(frame["seed"], errors="coerce")
    identity = list(zip(frame["dataset"], frame["backbone"], frame["method"], frame["params"].fillna("{}"), seed))
    classes = [None if pd.isna(k) else int(k) for k in frame["forget_class"]]
    replaced = [ident in one_round or (*ident, k) in per_class for ident, k in zip(identity, classes)]
    return frame[[not r for r in replaced]]


def tuning_records(cells: list[Cell], tuned: dict) -> dict[Cell, list[dict]]:
    """A `tuning_seconds` cost row for every cell that runs with the parameters the tuning protocol chose for its
    dataset × backbone × method (the whole search's seconds, so every row of a method repeats them)."""
    rows = {}
    for cell in cells:
        entry = tuned.get(cell.dataset.label, {}).get(cell.backbone.label, {}).get(cell.method)
        if entry and all(cell.params_dict.get(k) == v for k, v in entry["params"].items()):
            rows[cell] = [{"dataset": cell.dataset.label, "backbone": cell.backbone.label, "method": cell.method,
                           "params": cell.params_json, "seed": cell.seed, "device": entry.get("device", ""),
                           "git_commit": entry.get("git") or "unknown",  # the tuning's, as its device
                           "forget_class": cell.forget_class, "split": "all", "metric": "tuning_seconds",
                           "value": float(entry.get("tuning_seconds", math.nan))}]
    return rows


def _collect_artifacts(cells: list[Cell], keys: dict, cache: Cache, run_dir: Path, methods: dict) -> None:
    """Copy cached per-cell artifacts into <run>/artifacts/<method>/<dataset>__<backbone>__seed<seed>[__p<hash>]
    [__c<k>]; where the grid sweeps the method's parameters, the hash (report.names.params_tag) names each setting
    other than its defaults (`methods`: name → MethodInfo), so that a sweep's settings do not overwrite one another
    (a single setting, tuned or not, keeps the plain name)."""
    from .report.names import params_tag

    settings: dict = {}
    for cell in cells:
        settings.setdefault((cell.method, cell.dataset, cell.backbone, cell.seed), set()).add(cell.params)
    for cell in cells:
        source = cache.artifact_path(keys[cell])
        if source.is_file():
            swept = len(settings[cell.method, cell.dataset, cell.backbone, cell.seed]) > 1
            defaults = methods[cell.method].cls().default_parameters(cell.backbone) if swept else cell.params_dict
            suffix = ("" if cell.params_dict == defaults else params_tag(cell.params_json)) + (
                "" if cell.forget_class is None else f"__c{cell.forget_class}")
            target = run_dir / "artifacts" / cell.method / f"{cell.dataset.label}__{cell.backbone.label}__seed{cell.seed}{suffix}.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _provenance() -> dict:
    """The run's library versions and git commit (each record names the device that computed it itself)."""
    return {**{f"v_{k}": v for k, v in versions().items()}, "git_commit": git_commit()}


def _files_read(files: dict) -> dict:
    """{dataset label: which files it reads (`dataset_identity`)} as plain data, as config.yaml records it."""
    return json.loads(json.dumps({d.label: identity or {} for d, identity in files.items()}, default=str))


def _setting_clash(previous: dict, files: dict, device: torch.device, recorded: set[str], tuned: dict) -> str:
    """Why this run's records cannot be pooled with the folder's earlier records (--only slices): of a dataset it
    holds records of, other files (another tree's, or files changed since; a dataset missing then or now has none
    to compare), another device type or precision, or other values of its tuned result (`tuned`: this run's
    `tuned_values`) (`store.config_differences`); '' where none (or where the earlier config.yaml did not record
    them)."""
    now = {"files": _files_read(files), "compute": compute_setting(device), "tuned_values": tuned}
    clashes = [f"of dataset {label} computed under other {'; '.join(said)}" for label in sorted(recorded)
               if (said := config_differences(previous, now, label))]
    return clashes[0] if clashes else ""


def tuned_values(grid: Grid, cells: list[Cell]) -> dict:
    """'dataset/backbone/method' → the values those cells run of the parameters the grid's `tuned:` result sets
    (written to config.yaml: a result tuned again since changes them, and a run folder never pools both)."""
    tuned = tuned_parameters(grid.tuned) if grid.tuned else {}
    values = {}
    for c in cells:
        entry = tuned.get(c.dataset.label, {}).get(c.backbone.label, {}).get(c.method)
        if entry is not None:
            values[f"{c.dataset.label}/{c.backbone.label}/{c.method}"] = {
                k: v for k, v in c.params_dict.items() if k in entry["params"]}
    return values


def grid_differences(grid: Grid, recorded: dict) -> str:
    """The fields in which `grid` differs from a grid as a run's config.yaml recorded it ('' where none), e.g.
    'metrics, seeds'."""
    full = grid_dict(grid)
    return ", ".join(sorted(k for k in full.keys() | recorded.keys() if full.get(k) != recorded.get(k)))


def grid_dict(grid: Grid) -> dict:
    """The grid as plain data, as written to (and read back from) a run's config.yaml."""
    raw = dataclasses.asdict(grid)
    lists = raw.pop("dataset_methods")  # written back where the YAML has them: under their dataset
    raw["backbones"] = [b.as_dict() for b in grid.backbones]
    raw["datasets"] = [{"name": d.name, **d.options_dict,
                        **({"methods": list(lists[d.label])} if d.label in lists else {})} for d in grid.datasets]
    return json.loads(json.dumps(raw, default=str))
