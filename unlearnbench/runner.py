"""Run a grid: plan its cells, share each group's stages, execute cells, keep going past failures, write records."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import datasets  # noqa: F401  (registers the datasets)
from .data import DATASETS, dataset_missing, load_dataset
from .discovery import MethodInfo, discover
from .errors import UserError, did_you_mean
from .cost import CostMeter, state_bytes
from .grid import Cell, Grid, expand, tuned_parameters
from .launchers import LaunchOptions, SlurmOptions, assign_devices, launch
from .metrics import METRICS, MetricContext
from .stages import Stages
from .store import (Cache, LogFile, RunFolder, code_hash, device_name, git_commit, read_run_config, stable_hash,
                    versions, writable_folder)
from .training import compute_setting, resolve_recipe
from .unlearner import UnlearnedModel, UnlearnTask

ONLY_KEYS = ("dataset", "backbone", "method", "seed", "forget_class")


@dataclass
class RunOptions:
    """How to run a grid (the CLI's flags)."""

    out: Path | None = None
    results_dir: Path = Path("results")
    cache_dir: Path | None = None
    device: str = "auto"
    data_root: Path | None = None
    download: bool = False
    only: dict = field(default_factory=dict)
    plugins: list = field(default_factory=list)
    progress: bool = True
    command: str = ""

    @property
    def cache(self) -> Path:
        return self.cache_dir or self.results_dir / "cache"


@dataclass
class Plan:
    """The cells to run and those skipped up front, with the reason; the device they run on."""

    cells: list[Cell]
    skipped: list[tuple[Cell, str]]
    methods: dict[str, MethodInfo]
    plugin_errors: list
    device: torch.device


@dataclass
class RunResult:
    run_dir: Path
    records: pd.DataFrame
    failures: list[dict]
    computed: int
    cached: int


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cpu', 'cuda' and 'cuda:N' as named (N must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise UserError(f"Unknown device '{name}'; use auto, cpu, cuda or cuda:N.")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device '{name}' was asked for but CUDA is not available here; use --device cpu.")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"Device '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    return device


def metric_names(grid: Grid) -> list[str]:
    names = METRICS.names() if grid.metrics == "all" else list(grid.metrics)
    for name in names:
        METRICS.get(name)
    unknown = [k for k in grid.metric_settings if k not in METRICS]
    if unknown:
        raise UserError(f"Unknown metric '{unknown[0]}' in metric_settings{did_you_mean(unknown[0], METRICS.names())}.")
    return names


def metric_settings(grid: Grid, name: str) -> dict:
    """A metric's settings: its registered defaults, overridden by the grid's metric_settings."""
    defaults = METRICS.get(name).defaults
    overrides = grid.metric_settings.get(name, {}) or {}
    from .config import check_keys

    check_keys(overrides, defaults, f"metric_settings.{name}")
    return {**defaults, **overrides}


def slurm_options(grid: Grid, overrides: dict) -> SlurmOptions:
    """Slurm settings: the grid's `slurm:` section, then --slurm KEY=VALUE overrides (strings parsed as YAML)."""
    import yaml

    from .config import from_mapping

    merged = {**grid.slurm, **{k: yaml.safe_load(v) for k, v in overrides.items()}}
    return from_mapping(SlurmOptions, merged, "the Slurm settings")


def plan(grid: Grid, options: RunOptions) -> Plan:
    """Expand `grid` into cells, apply --only filters and mark cells that cannot run (missing data, method skip)."""
    device = resolve_device(options.device)
    root = options.data_root
    if root is not None and not root.is_dir() and (root.exists() or not options.download):
        raise UserError(f"--data-root {root} is not a folder; pass the folder holding the datasets "
                        f"(or add --download to fetch them into a new one).")
    methods, plugin_errors = discover(options.plugins)
    num_classes = {d.name: DATASETS.get(d.name).num_classes for d in grid.datasets}
    cells = _select(expand(grid, methods, num_classes), options.only, grid.name)
    missing = {d: dataset_missing(d.name, options.data_root, options.cache, d.options_dict) for d in grid.datasets}
    runnable, skipped = [], []
    for cell in cells:
        skip, reason = methods[cell.method].cls().skip(cell.dataset.name, cell.backbone)
        if missing[cell.dataset]:
            skipped.append((cell, missing[cell.dataset]))
        elif skip:
            skipped.append((cell, reason or "the method does not support this setting"))
        else:
            runnable.append(cell)
    return Plan(runnable, skipped, methods, plugin_errors, device)


def _select(cells: list[Cell], only: dict, grid_name: str) -> list[Cell]:
    """The cells matching every --only filter (KEY=V1,V2: any of the values); a key, or a value no cell of the
    grid has, is a UserError with suggestions."""
    values = [{"dataset": {c.dataset.name, c.dataset.label}, "backbone": {c.backbone.name, c.backbone.label},
               "method": {c.method}, "seed": {str(c.seed)},
               "forget_class": {str(c.forget_class) if c.forget_class is not None else "all"}} for c in cells]
    wanted = {}
    for key, text in only.items():
        if key not in ONLY_KEYS:
            raise UserError(f"Unknown --only key '{key}'{did_you_mean(key, ONLY_KEYS)}; use one of: {', '.join(ONLY_KEYS)}.")
        present = sorted({v for cell_values in values for v in cell_values[key]})
        wanted[key] = {v.strip() for v in str(text).split(",")}
        unknown = sorted(wanted[key] - set(present))
        if unknown:
            raise UserError(f"--only {key}={unknown[0]} matches no cell of grid '{grid_name}'"
                            f"{did_you_mean(unknown[0], present)}; its {key} values are: {', '.join(present)}.")
    chosen = [c for c, v in zip(cells, values) if all(wanted[k] & v[k] for k in wanted)]
    if wanted and not chosen:
        raise UserError(f"The --only filters {', '.join(f'{k}={t}' for k, t in only.items())} match no cell of "
                        f"grid '{grid_name}' together; drop one of them.")
    return chosen


def grid_has_retrain(grid: Grid) -> bool:
    """Whether the grid runs the retrain method (so retrained models exist for distance metrics)."""
    return grid.methods == "all" or any(m.name == "retrain" for m in grid.methods)


def cell_key(cell: Cell, grid: Grid, info: MethodInfo, metrics: list[str], device: torch.device) -> str:
    """The cache key of a cell: its full config, the device type and precision it runs in, the plugin file's hash,
    library versions and harness code."""
    recipe = resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe)
    return stable_hash({
        "dataset": dataclasses.asdict(cell.dataset), "backbone": dataclasses.asdict(cell.backbone),
        "method": cell.method, "params": cell.params_dict, "seed": cell.seed, "forget_class": cell.forget_class,
        "forget_classes": cell.forget_classes, "recipe": dataclasses.asdict(recipe), "source": info.source_hash,
        "metrics": {m: metric_settings(grid, m) for m in metrics}, "val_fraction": grid.val_fraction,
        "has_retrain": grid_has_retrain(grid), **compute_setting(device),
        "versions": {k: versions()[k] for k in ("torch", "torchvision", "timm")}, "code": code_hash(),
    })


def describe_plan(grid: Grid, p: Plan, cache: Cache, metrics: list[str]) -> str:
    """A human-readable plan: cells per method, stages to train, what is cached, a cost estimate."""
    lines = [f"grid '{grid.name}': {len(p.cells)} cells to run, {len(p.skipped)} skipped"]
    per_method = Counter(c.method for c in p.cells)
    cached = sum(cache.load_cell(cell_key(c, grid, p.methods[c.method], metrics, p.device)) is not None
                 for c in p.cells)
    for method, n in sorted(per_method.items()):
        kind = "per class" if p.methods[method].cls.per_class else "one round for all classes"
        lines.append(f"  {method:<22} {n:4d} cells ({kind})")
    groups = {c.group for c in p.cells}
    retrains = {(c.group, c.forget_class) for c in p.cells if c.method == "retrain"}
    lines.append(f"stages: {len(groups)} original models, {len(retrains)} retrained models (shared, cached)")
    lines.append(f"cached cells: {cached} of {len(p.cells)}")
    image_epochs = 0
    for dataset, backbone, _seed in groups:
        recipe = resolve_recipe(dataset.name, backbone, grid.recipe)
        n_train = {"mnist5k": 3600, "mnist": 54000, "fashion-mnist": 54000, "cifar10": 45000}.get(dataset.name, 0)
        if dataset.options_dict.get("train_per_class"):
            n_train = min(n_train, 10 * dataset.options_dict["train_per_class"])
        image_epochs += recipe.epochs * n_train * (1 + sum(1 for g, _ in retrains if g == (dataset, backbone, _seed)))
    if image_epochs:
        lines.append(f"cost estimate: ~{image_epochs / 1e6:.2f} M training images for originals and retrains "
                     f"(about {image_epochs / 3000 / 60:.0f} CPU-minutes at 3,000 img/s for a small backbone)")
    for cell, reason in p.skipped[:20]:
        lines.append(f"  skipped {cell.describe()}: {reason}")
    if len(p.skipped) > 20:
        lines.append(f"  … and {len(p.skipped) - 20} more skipped cells")
    for err in p.plugin_errors:
        lines.append(f"plugin {err.source} failed to import: {err.message.splitlines()[0]}")
    return "\n".join(lines)


def seed_all(seed: int) -> None:
    """Seed python's `random`, numpy's global RNG and torch's on every device (torch.manual_seed seeds CUDA too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def unlearn_cell(cell: Cell, info: MethodInfo, stages: Stages, progress: bool) -> tuple[UnlearnedModel, CostMeter]:
    """The cell's unlearned model (in eval mode) and the cost of `unlearn` alone. All RNGs are seeded from the
    cell's identity right before the method runs; the tuning protocol builds its trials through this too."""
    # from the identity its records carry: cells of other groups, classes or parameters draw other streams
    cell_seed = int(stable_hash([cell.dataset.label, cell.backbone.label, cell.seed, cell.method, cell.params_json,
                                 cell.forget_class]), 16) % (2**31)
    task = UnlearnTask(
        original=stages.original(), data=stages.data, forget_class=cell.forget_class,
        forget_classes=list(cell.forget_classes), params=cell.params_dict, recipe=stages.recipe,
        backbone=cell.backbone, seed=cell_seed, retrained=stages.retrained, new_model=stages.new_model,
        progress=progress, generator=torch.Generator().manual_seed(cell_seed),
    )
    stages.reused.clear()
    seed_all(cell_seed)  # after loading the stages (which re-seed torch): draws depend on no worker or cell order
    with CostMeter(stages.data.device) as cost:
        model = info.cls().unlearn(task)
    if not isinstance(model, UnlearnedModel):
        raise TypeError(f"Method '{cell.method}' returned {type(model).__name__}; unlearn() must return an UnlearnedModel.")
    return model.eval(), cost


def run_cell(cell: Cell, info: MethodInfo, stages: Stages, grid: Grid, metrics: list[str], progress: bool,
             artifacts: Path | None = None) -> list[dict]:
    """Unlearn and evaluate one cell; returns its records (cost, diagnostics, then split × metric × class), each
    naming the device (and CPU threads) that computed it.

    A non-finite metric value fails the cell. When `artifacts` is given, the model's artifacts are saved there."""
    data = stages.data
    model, cost = unlearn_cell(cell, info, stages, progress)
    base = {"dataset": cell.dataset.label, "backbone": cell.backbone.label, "method": cell.method,
            "params": cell.params_json, "seed": cell.seed, "device": device_name(data.device)}
    # a stage model the method took ready-made (e.g. a cached retrained model) is charged at its training cost:
    # its seconds are added, and the extra memory its training needed counts towards the cell's peak
    charged = [c for c in stages.reused if c]
    whole = {"unlearn_seconds": cost.wall_seconds + sum(c["wall_seconds"] for c in charged),
             "device_seconds": cost.device_seconds + sum(c["device_seconds"] for c in charged),
             "peak_memory_bytes": max([cost.peak_memory_bytes, *(c["peak_memory_bytes"] for c in charged)]),
             "serving_bytes": state_bytes(model), **model.diagnostics()}
    records = [{**base, "forget_class": cell.forget_class, "split": "all", "metric": k, "value": float(v)}
               for k, v in whole.items()]
    logit_cache: dict = {}
    for c in ([cell.forget_class] if cell.forget_class is not None else list(cell.forget_classes)):
        ctx = MetricContext(data=data, model=model, forget_class=c, stages=stages, method=cell.method, settings={},
                            logit_cache=logit_cache, has_retrain=grid_has_retrain(grid))
        for name in metrics:
            ctx.settings = metric_settings(grid, name)
            for split, metric, value in METRICS.get(name).compute(ctx):
                if not math.isfinite(value):
                    raise FloatingPointError(f"metric {metric} on the {split} split of class {c} is {value}")
                records.append({**base, "forget_class": c, "split": split, "metric": metric, "value": float(value)})
    if artifacts is not None and model.artifacts():
        from safetensors.torch import save_file

        artifacts.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.artifacts().items()}, str(artifacts))
    return records


@dataclass(frozen=True)
class Job:
    """What a worker needs to train a group's original model ('original'), one retrained model ('retrained', for
    the cell's forget class), run one cell ('cell') or one tuning study ('tune', see unlearnbench.tuning)."""

    kind: str
    cell: Cell
    key: str
    grid: Grid
    options: RunOptions
    device: str
    log_path: Path
    threads: int | None = None


@dataclass
class Outcome:
    job: Job
    records: list[dict] | None = None
    failure: dict | None = None


_GROUPS: dict = {}


def _group_stages(job: Job) -> Stages:
    """The Stages of a job's (dataset, backbone, seed) group, kept in memory for the next job of the group."""
    dataset, backbone, seed = job.cell.group
    memo_key = (job.cell.group, job.device, job.grid.val_fraction, json.dumps(job.grid.recipe, sort_keys=True),
                str(job.options.cache), str(job.options.data_root))
    if memo_key not in _GROUPS:
        _GROUPS.clear()  # one group at a time keeps memory bounded
        device = resolve_device(job.device)
        options = job.options
        data = load_dataset(dataset.name, root=options.data_root, cache_dir=options.cache, download=options.download,
                            val_fraction=job.grid.val_fraction, device=device, options=dataset.options_dict)
        _check_classes([job.cell], data.num_classes, dataset.name)
        recipe = resolve_recipe(dataset.name, backbone, job.grid.recipe)
        _GROUPS[memo_key] = Stages(data, dataclasses.asdict(dataset), backbone, recipe, seed, Cache(options.cache),
                                   options.data_root, progress=options.progress, log=LogFile(job.log_path))
    return _GROUPS[memo_key]


def run_job(job: Job) -> Outcome:
    """Execute one job in this process; every error becomes a failure in the outcome, never an exception."""
    if job.threads:
        torch.set_num_threads(job.threads)
    log = LogFile(job.log_path)
    try:
        stages = _group_stages(job)
        if job.kind == "original":
            stages.original()
            return Outcome(job, records=[])
        if job.kind == "retrained":
            stages.retrained(job.cell.forget_class)
            return Outcome(job, records=[])
        if job.kind == "tune":
            from .tuning import run_study

            return Outcome(job, records=run_study(job, stages))
        cache = Cache(job.options.cache)
        hit = cache.load_cell(job.key)
        if hit is not None:
            return Outcome(job, records=hit)
        methods, _ = discover(job.options.plugins)
        records = run_cell(job.cell, methods[job.cell.method], stages, job.grid, metric_names(job.grid),
                           job.options.progress, cache.artifact_path(job.key))
        cache.save_cell(job.key, records)
        log(f"done {job.cell.describe()}")
        return Outcome(job, records=records)
    except Exception as exc:
        log(f"FAILED {job.kind} {job.cell.describe()}: {_reason(exc)}")
        return Outcome(job, failure=_failure(job.cell, "failed", _reason(exc), traceback.format_exc()))


def crashed(job: Job, exc: BaseException) -> Outcome:
    """The failure outcome of a job whose worker process died."""
    reason = f"the worker running it died ({_reason(exc)})"
    return Outcome(job, failure=_failure(job.cell, "failed", reason, "".join(traceback.format_exception(exc))))


def worker_threads(launch_options: LaunchOptions) -> int:
    """Torch CPU threads per worker: --threads, else the cores shared out among the workers."""
    return launch_options.threads or max(1, (os.cpu_count() or 1) // launch_options.workers)


def make_jobs(kind: str, cells: list[Cell], grid: Grid, options: RunOptions, launch_options: LaunchOptions,
              device: torch.device, log_path: Path, keys: dict[Cell, str] | None = None) -> list[Job]:
    """One Job per cell, each on its GPU of --gpus; workers show progress bars only when a single local worker
    runs (parallel bars would interleave)."""
    quiet = launch_options.workers != 1 or launch_options.launcher != "local"
    worker_options = dataclasses.replace(options, progress=options.progress and not quiet)
    made = [Job(kind, c, (keys or {}).get(c, ""), grid, worker_options, str(device), log_path,
                worker_threads(launch_options)) for c in cells]
    return assign_devices(made, launch_options.gpus, lambda j, d: dataclasses.replace(j, device=d))


def run(grid: Grid, options: RunOptions, launch_options: LaunchOptions | None = None) -> RunResult:
    """Run every cell of `grid` not already cached; write the run folder; never stop at a failing cell.

    Original models are trained first (one job per group), then the retrain cells (whose models other metrics
    reuse), then every other cell; each phase goes through the chosen launcher."""
    metrics = metric_names(grid)
    p = plan(grid, options)
    device = p.device
    cache = Cache(writable_folder(options.cache, "cache folder"))
    folder = RunFolder(options.out or RunFolder.default_path(options.results_dir, grid.name))
    launch_options = launch_options or LaunchOptions()
    if launch_options.gpus and device.type != "cuda":  # cells are keyed by the driver's device type
        raise UserError(f"--gpus needs a CUDA device, but the device is {device}; drop --gpus or use --device cuda.")
    _GROUPS.clear()  # models kept in memory by an earlier run in this process are not trusted blindly
    threads_before = torch.get_num_threads()
    with folder.lock():
        previous = read_run_config(folder.path)
        if previous is not None and previous["grid"] != _grid_dict(grid):
            raise UserError(f"{folder.path} holds a run of grid '{previous['grid'].get('name')}' with a different "
                            f"configuration; pass another --out or --retry-failed.")
        folder.write_config({"command": options.command, "grid": _grid_dict(grid), "device": str(device),
                             "data_root": str(options.data_root) if options.data_root else None,
                             "cache_dir": str(options.cache), "only": options.only, "versions": versions(),
                             "git_commit": git_commit(), "launcher": dataclasses.asdict(launch_options),
                             "metric_settings": {m: metric_settings(grid, m) for m in metrics}})
        folder.log(describe_plan(grid, p, cache, metrics))
        failures = [_failure(cell, "skipped", reason) for cell, reason in p.skipped]
        failures += [{"method": e.source, "status": "plugin-error", "reason": e.message.splitlines()[0],
                      "traceback": e.message} for e in p.plugin_errors]
        keys = {cell: cell_key(cell, grid, p.methods[cell.method], metrics, device) for cell in p.cells}
        tuning = tuning_records(p.cells, tuned_parameters(grid.tuned))
        results: dict[Cell, list[dict]] = {}
        for cell in p.cells:
            hit = cache.load_cell(keys[cell])
            if hit is not None:
                results[cell] = hit
        cached = len(results)
        pending = [c for c in p.cells if c not in results]

        def jobs(kind: str, cells: list[Cell]) -> list[Job]:
            return make_jobs(kind, cells, grid, options, launch_options, device, folder.path / "log.txt", keys)

        groups = list(dict.fromkeys(c.group for c in pending))
        firsts = [next(c for c in pending if c.group == g) for g in groups]
        retrains = [c for c in pending if c.method == "retrain"]
        # one-round methods (WF-Net: all classes in one job) are the longest jobs: started first, no worker
        # is left alone with one at the end
        others = sorted((c for c in pending if c.method != "retrain"), key=lambda c: c.forget_class is not None)
        bar = tqdm(total=len(p.cells), initial=cached, desc=f"grid {grid.name}", disable=not options.progress,
                   mininterval=1.0)
        broken_groups: dict = {}
        for phase in (jobs("original", firsts), jobs("cell", retrains), jobs("cell", others)):
            phase = [j for j in phase if j.cell.group not in broken_groups]
            for outcome in launch(run_job, phase, dataclasses.replace(launch_options, folder=folder.path), crashed):
                cell = outcome.job.cell
                if outcome.job.kind == "original":
                    if outcome.failure:
                        broken_groups[cell.group] = outcome.failure
                    continue
                if outcome.failure:
                    failures.append(outcome.failure)
                else:
                    results[cell] = outcome.records
                bar.update()
                folder.write_records(_ordered(p.cells, results, tuning), _provenance())
        for cell in pending:  # a group whose original failed: its cells fail with that reason
            if cell.group in broken_groups:
                broken = broken_groups[cell.group]
                failures.append(_failure(cell, "failed", broken["reason"], broken["traceback"]))
                bar.update()
        bar.close()
        _collect_artifacts(p.cells, keys, cache, folder.path)
        frame = folder.write_records(_ordered(p.cells, results, tuning), _provenance())
        folder.write_failures(failures)
        try:
            from .report import write_report

            write_report([folder.path])
        except Exception as exc:  # the records are safe on disk; a report problem must not lose them
            folder.log(f"report failed: {_reason(exc)}\n{traceback.format_exc()}")
        computed = len(results) - cached
        folder.log(f"finished: {computed} cells computed, {cached} from cache, "
                   f"{sum(f['status'] == 'failed' for f in failures)} failed, {len(p.skipped)} skipped")
    torch.set_num_threads(threads_before)
    return RunResult(folder.path, frame, failures, computed, cached)


def _ordered(cells: list[Cell], results: dict[Cell, list[dict]], extra: dict[Cell, list[dict]]) -> list[dict]:
    """Records in plan order, whatever order the cells finished in (so a resumed run equals a clean one), each
    cell's followed by its `extra` rows."""
    return [r for cell in cells if cell in results for r in results[cell] + extra.get(cell, [])]


def tuning_records(cells: list[Cell], tuned: dict) -> dict[Cell, list[dict]]:
    """A `tuning_seconds` cost row for every cell that runs with the parameters the tuning protocol chose for its
    dataset × backbone × method (the whole search's seconds, so every row of a method repeats them)."""
    rows = {}
    for cell in cells:
        entry = tuned.get(cell.dataset.label, {}).get(cell.backbone.label, {}).get(cell.method)
        if entry and all(cell.params_dict.get(k) == v for k, v in entry["params"].items()):
            rows[cell] = [{"dataset": cell.dataset.label, "backbone": cell.backbone.label, "method": cell.method,
                           "params": cell.params_json, "seed": cell.seed, "device": entry.get("device", ""),
                           "forget_class": cell.forget_class, "split": "all", "metric": "tuning_seconds",
                           "value": float(entry.get("tuning_seconds", math.nan))}]
    return rows


def _collect_artifacts(cells: list[Cell], keys: dict, cache: Cache, run_dir: Path) -> None:
    """Copy cached per-cell artifacts into <run>/artifacts/<method>/<dataset>__<backbone>__seed<seed>[__c<k>]."""
    for cell in cells:
        source = cache.artifact_path(keys[cell])
        if source.is_file():
            suffix = "" if cell.forget_class is None else f"__c{cell.forget_class}"
            target = run_dir / "artifacts" / cell.method / f"{cell.dataset.label}__{cell.backbone.label}__seed{cell.seed}{suffix}.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _check_classes(cells: list[Cell], num_classes: int, dataset: str) -> None:
    bad = sorted({c for cell in cells for c in cell.forget_classes if c >= num_classes})
    if bad:
        raise UserError(f"Forget class {bad[0]} is outside dataset '{dataset}', whose classes are 0…{num_classes - 1}.")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def _failure(cell: Cell, status: str, reason: str, tb: str = "") -> dict:
    return {"dataset": cell.dataset.label, "backbone": cell.backbone.label, "method": cell.method,
            "params": cell.params_json, "seed": cell.seed, "forget_class": cell.forget_class, "status": status,
            "reason": reason, "traceback": tb}


def _provenance() -> dict:
    """The run's library versions and git commit (each record names the device that computed it itself)."""
    return {**{f"v_{k}": v for k, v in versions().items()}, "git_commit": git_commit()}


def _grid_dict(grid: Grid) -> dict:
    """The grid as plain data, as written to (and read back from) a run's config.yaml."""
    raw = dataclasses.asdict(grid)
    raw["datasets"] = [{"name": d.name, **d.options_dict} for d in grid.datasets]
    return json.loads(json.dumps(raw, default=str))
