"""Run a grid: plan its cells, share each group's stages, execute cells, keep going past failures, write records."""
from __future__ import annotations

import dataclasses
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import datasets  # noqa: F401  (registers the datasets)
from .data import DATASETS, dataset_missing, load_dataset
from .discovery import MethodInfo, discover
from .errors import UserError, did_you_mean
from .grid import Cell, Grid, expand
from .metrics import METRICS, MetricContext
from .stages import Stages
from .store import Cache, RunFolder, code_hash, device_name, git_commit, stable_hash, versions
from .training import resolve_recipe
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
    """The cells to run and those skipped up front, with the reason."""

    cells: list[Cell]
    skipped: list[tuple[Cell, str]]
    methods: dict[str, MethodInfo]
    plugin_errors: list


@dataclass
class RunResult:
    run_dir: Path
    records: pd.DataFrame
    failures: list[dict]
    computed: int
    cached: int


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"Unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device '{name}' was asked for but CUDA is not available here; use --device cpu.")
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


def plan(grid: Grid, options: RunOptions) -> Plan:
    """Expand `grid` into cells, apply --only filters and mark cells that cannot run (missing data, method skip)."""
    methods, plugin_errors = discover(options.plugins)
    num_classes = {d.name: DATASETS.get(d.name).num_classes for d in grid.datasets}
    cells = [c for c in expand(grid, methods, num_classes) if _matches(c, options.only)]
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
    return Plan(runnable, skipped, methods, plugin_errors)


def _matches(cell: Cell, only: dict) -> bool:
    values = {"dataset": [cell.dataset.name], "backbone": [cell.backbone.name, cell.backbone.label],
              "method": [cell.method], "seed": [str(cell.seed)],
              "forget_class": [str(cell.forget_class) if cell.forget_class is not None else "all"]}
    for key, wanted in only.items():
        if key not in ONLY_KEYS:
            raise UserError(f"Unknown --only key '{key}'{did_you_mean(key, ONLY_KEYS)}; use one of: {', '.join(ONLY_KEYS)}.")
        if not set(str(wanted).split(",")) & set(values[key]):
            return False
    return True


def cell_key(cell: Cell, grid: Grid, info: MethodInfo, metrics: list[str]) -> str:
    """The cache key of a cell: its full config, the plugin file's hash, library versions and harness code."""
    recipe = resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe)
    return stable_hash({
        "dataset": dataclasses.asdict(cell.dataset), "backbone": dataclasses.asdict(cell.backbone),
        "method": cell.method, "params": cell.params_dict, "seed": cell.seed, "forget_class": cell.forget_class,
        "forget_classes": cell.forget_classes, "recipe": dataclasses.asdict(recipe), "source": info.source_hash,
        "metrics": {m: metric_settings(grid, m) for m in metrics}, "val_fraction": grid.val_fraction,
        "versions": {k: versions()[k] for k in ("torch", "torchvision", "timm")}, "code": code_hash(),
    })


def describe_plan(grid: Grid, p: Plan, cache: Cache, metrics: list[str]) -> str:
    """A human-readable plan: cells per method, stages to train, what is cached, a cost estimate."""
    lines = [f"grid '{grid.name}': {len(p.cells)} cells to run, {len(p.skipped)} skipped"]
    per_method = Counter(c.method for c in p.cells)
    cached = sum(cache.load_cell(cell_key(c, grid, p.methods[c.method], metrics)) is not None for c in p.cells)
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


def run_cell(cell: Cell, info: MethodInfo, stages: Stages, grid: Grid, metrics: list[str], progress: bool) -> list[dict]:
    """Unlearn and evaluate one cell; returns its records (one per split × metric × forget class)."""
    data = stages.data
    cell_seed = int(stable_hash([cell.seed, cell.method, cell.params_json, cell.forget_class]), 16) % (2**31)
    torch.manual_seed(cell_seed)
    task = UnlearnTask(
        original=stages.original(), data=data, forget_class=cell.forget_class,
        forget_classes=list(cell.forget_classes), params=cell.params_dict, recipe=stages.recipe,
        backbone=cell.backbone, seed=cell_seed, retrained=stages.retrained, new_model=stages.new_model,
        progress=progress, generator=torch.Generator().manual_seed(cell_seed),
    )
    start = time.perf_counter()
    model = info.cls().unlearn(task)
    if data.device.type == "cuda":
        torch.cuda.synchronize(data.device)
    seconds = time.perf_counter() - start
    if not isinstance(model, UnlearnedModel):
        raise TypeError(f"Method '{cell.method}' returned {type(model).__name__}; unlearn() must return an UnlearnedModel.")
    model.eval()
    base = {"dataset": cell.dataset.name, "backbone": cell.backbone.label, "method": cell.method,
            "params": cell.params_json, "seed": cell.seed}
    records = [{**base, "forget_class": cell.forget_class, "split": "all", "metric": "unlearn_seconds", "value": seconds}]
    logit_cache: dict = {}
    for c in ([cell.forget_class] if cell.forget_class is not None else list(cell.forget_classes)):
        ctx = MetricContext(data=data, model=model, forget_class=c, stages=stages, method=cell.method, settings={},
                            logit_cache=logit_cache)
        for name in metrics:
            ctx.settings = metric_settings(grid, name)
            for split, metric, value in METRICS.get(name).compute(ctx):
                records.append({**base, "forget_class": c, "split": split, "metric": metric, "value": float(value)})
    return records


def run(grid: Grid, options: RunOptions) -> RunResult:
    """Run every cell of `grid` not already cached; write the run folder; never stop at a failing cell."""
    device = resolve_device(options.device)
    metrics = metric_names(grid)
    p = plan(grid, options)
    cache = Cache(options.cache)
    folder = RunFolder(options.out or RunFolder.default_path(options.results_dir, grid.name))
    folder.write_config({"command": options.command, "grid": _grid_dict(grid), "device": str(device),
                         "data_root": str(options.data_root) if options.data_root else None,
                         "cache_dir": str(options.cache), "only": options.only, "versions": versions(),
                         "git_commit": git_commit()})
    folder.log(describe_plan(grid, p, cache, metrics))
    failures = [_failure(cell, "skipped", reason) for cell, reason in p.skipped]
    for err in p.plugin_errors:
        failures.append({"method": err.source, "status": "plugin-error", "reason": err.message.splitlines()[0],
                         "traceback": err.message})
    records: list[dict] = []
    computed = cached = 0
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in p.cells:
        groups[cell.group].append(cell)
    bar = tqdm(total=len(p.cells), desc=f"grid {grid.name}", disable=not options.progress, mininterval=1.0)
    for (dataset, backbone, seed), cells in groups.items():
        keys = {cell: cell_key(cell, grid, p.methods[cell.method], metrics) for cell in cells}
        pending = []
        for cell in cells:
            hit = cache.load_cell(keys[cell])
            if hit is None:
                pending.append(cell)
            else:
                records += hit
                cached += 1
                bar.update()
        if not pending:
            continue
        try:
            data = load_dataset(dataset.name, root=options.data_root, cache_dir=options.cache, download=options.download,
                                val_fraction=grid.val_fraction, device=device, options=dataset.options_dict)
            _check_classes(pending, data.num_classes, dataset.name)
            recipe = resolve_recipe(dataset.name, backbone, grid.recipe)
            stages = Stages(data, dataclasses.asdict(dataset), backbone, recipe, seed, cache, options.data_root,
                            progress=options.progress, log=folder.log)
            stages.original()
        except Exception as exc:  # the whole group fails, the other groups go on
            for cell in pending:
                failures.append(_failure(cell, "failed", _reason(exc), traceback.format_exc()))
                bar.update()
            folder.log(f"group {dataset.name}/{backbone.label}/seed {seed} failed: {_reason(exc)}")
            continue
        for cell in pending:
            bar.set_postfix_str(f"{cell.method} c={cell.forget_class if cell.forget_class is not None else 'all'}")
            try:
                cell_records = run_cell(cell, p.methods[cell.method], stages, grid, metrics, options.progress)
            except Exception as exc:
                failures.append(_failure(cell, "failed", _reason(exc), traceback.format_exc()))
                folder.log(f"FAILED {cell.describe()}: {_reason(exc)}")
            else:
                cache.save_cell(keys[cell], cell_records)
                records += cell_records
                computed += 1
                folder.log(f"done {cell.describe()}")
            bar.update()
            folder.write_records(records, _provenance(device))
    bar.close()
    frame = folder.write_records(records, _provenance(device))
    folder.write_failures(failures)
    folder.log(f"finished: {computed} cells computed, {cached} from cache, "
               f"{sum(f['status'] == 'failed' for f in failures)} failed, {len(p.skipped)} skipped")
    return RunResult(folder.path, frame, failures, computed, cached)


def _check_classes(cells: list[Cell], num_classes: int, dataset: str) -> None:
    bad = sorted({c for cell in cells for c in cell.forget_classes if c >= num_classes})
    if bad:
        raise UserError(f"Forget class {bad[0]} is outside dataset '{dataset}', whose classes are 0…{num_classes - 1}.")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def _failure(cell: Cell, status: str, reason: str, tb: str = "") -> dict:
    return {"dataset": cell.dataset.name, "backbone": cell.backbone.label, "method": cell.method,
            "params": cell.params_json, "seed": cell.seed, "forget_class": cell.forget_class, "status": status,
            "reason": reason, "traceback": tb}


def _provenance(device: torch.device) -> dict:
    return {**{f"v_{k}": v for k, v in versions().items()}, "git_commit": git_commit(), "device": device_name(device)}


def _grid_dict(grid: Grid) -> dict:
    raw = dataclasses.asdict(grid)
    raw["datasets"] = [{"name": d.name, **d.options_dict} for d in grid.datasets]
    return raw


def summary(records: pd.DataFrame) -> pd.DataFrame:
    """Mean test-split accuracy on retain and forget sets per dataset × backbone × method (over classes, seeds)."""
    test = records[(records["split"] == "test") & records["metric"].isin(["acc_retain", "acc_forget"])]
    if test.empty:
        return pd.DataFrame()
    table = test.pivot_table(index=["dataset", "backbone", "method"], columns="metric", values="value", aggfunc="mean")
    return table.round(4)
