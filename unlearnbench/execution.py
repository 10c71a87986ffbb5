"""Executing jobs: one cell (unlearn, measure, evaluate), a group's stage models, and the Job a launcher hands to a
worker process, whose errors become failure outcomes, never exceptions."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cost import CostMeter, state_bytes
from .data import DEFAULT_VAL_FRACTION, dataset_identity, load_dataset
from .discovery import MethodInfo, discover
from .errors import UserError, error_reason
from .grid import EVALUATION_OPTIONS, Cell, Grid
from .launchers import LaunchOptions, WorkerDied, assign_devices
from .metrics import METRICS, MetricContext
from .metrics.base import CELL_LOGIT_BYTES
from .models import evaluating
from .planning import (RunOptions, cell_key, grid_has_retrain, metric_key, metric_names, metric_settings,
                       resolve_device)
from .stages import Stages, model_state_summary, same_state
from .store import (BoundedMemo, Cache, LogFile, atomic_write, cell_order, code_hash, derive_seed, device_name,
                    git_commit, same_device)
from .training import PRECISION_VARIABLE, resolve_recipe
from .unlearner import UnlearnedModel, UnlearnTask


def seed_all(seed: int) -> None:
    """Seed python's `random`, numpy's global RNG and torch's on every device (torch.manual_seed seeds CUDA too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def unlearn_cell(cell: Cell, info: MethodInfo, stages: Stages, progress: bool,
                 replicate: int = 0) -> tuple[UnlearnedModel, dict]:
    """The cell's unlearned model (in eval mode) and what unlearning cost: `unlearn_seconds`, `device_seconds`
    and `peak_memory_bytes`. All RNGs are seeded from the cell's identity right before the method runs; the
    tuning protocol builds its trials through this too. Replicate k > 0 runs the method again from the same
    original with another seed (the `epsilon` metric compares such runs).

    A retrained model the method takes ready-made (cached, or kept from an earlier cell) is charged at its
    training cost: its seconds are added, and the extra memory its training needed counts towards the peak; where
    it was trained on another device or CPU thread count than this cell runs on, `trained_on` names it."""
    # from the identity its records carry: cells of other groups, classes or parameters draw other streams
    cell_seed = derive_seed([cell.dataset.label, cell.backbone.label, cell.seed, cell.method, cell.params_json,
                             cell.forget_class] + (["replicate", replicate] if replicate else []), bits=31)
    charged: list[dict] = []
    original = stages.original()
    given = [(original, stages.summary(original))]  # the shared models, as the method received them

    def retrained(forget_class: int) -> torch.nn.Module:  # a rerun of `retrain` gets its own replicate
        model, cost = stages.stage("retrained", int(forget_class), replicate)
        if cost:
            charged.append(cost)
        given.append((model, stages.summary(model)))
        return model

    task = UnlearnTask(
        original=original, data=stages.data.without_test(), forget_class=cell.forget_class,
        forget_classes=cell.evaluated_classes, params=cell.params_dict, recipe=stages.recipe,
        backbone=cell.backbone, seed=cell_seed, retrained=retrained, new_model=stages.new_model,
        progress=progress, generator=torch.Generator().manual_seed(cell_seed),
    )
    seed_all(cell_seed)  # after loading the stages (which re-seed torch): draws depend on no worker or cell order
    with CostMeter(stages.data.device) as cost, left_as_given(given, stages, cell.method):
        model = info.cls().unlearn(task)
    if not isinstance(model, UnlearnedModel):
        raise TypeError(f"Method '{cell.method}' returned {type(model).__name__}; unlearn() must return an UnlearnedModel.")
    model.eval()
    check_serves(model, cell, stages.data, info.cls.per_class)
    # a charged model counts its training's cost; the time this cell waited while another process trained it is
    # not counted again (CUDA events count idle time too, so device seconds lose it on a GPU)
    waited = sum(c.get("waited_seconds", 0.0) for c in charged)
    return model, {
        "unlearn_seconds": cost.wall_seconds - waited + sum(c["wall_seconds"] for c in charged),
        "device_seconds": cost.device_seconds - (waited if stages.data.device.type == "cuda" else 0.0)
                          + sum(c["device_seconds"] for c in charged),
        "peak_memory_bytes": max([cost.peak_memory_bytes, *(c["peak_memory_bytes"] for c in charged)]),
        "trained_on": sorted({c["device"] for c in charged
                              if c.get("device") and not same_device(c["device"], device_name(stages.data.device))})}


def check_serves(model: UnlearnedModel, cell: Cell, data, per_class: bool) -> None:
    """Refuse, in one sentence naming the method, an unlearned model that does not serve the cell's classes
    (`classes()`, and `for_class` answering) or whose logits for a class are not [N, the dataset's classes] (a
    wrong head was evaluated as a result, or failed later in a metric that named neither): two validation images
    through `for_class(c)` for each class the cell evaluates, as the metrics run a model (`predict_logits`: every
    submodule in eval mode, no autocast), so the check changes no BatchNorm statistics and draws no random
    numbers."""
    method, wanted = cell.method, [int(c) for c in cell.evaluated_classes]
    rule = (f"a per-class method's model must serve its forget class {wanted[0]}" if per_class else
            f"a one-round method's model must serve every class of the round, {wanted}")
    try:
        served = [int(c) for c in model.classes()]
    except Exception as exc:
        raise UserError(f"Method '{method}' returned a {type(model).__name__} whose classes() failed "
                        f"({error_reason(exc)}); {rule}.") from exc
    if not set(wanted) <= set(served):
        raise UserError(f"Method '{method}' returned a model serving classes {served}; {rule}.")
    split = data.val if len(data.val) else data.train
    x, _ = next(data.batches(split.subset(torch.arange(min(2, len(split)))), 2))
    for c in wanted:
        try:
            net = model.for_class(c)
            with torch.no_grad(), evaluating(net):
                logits = net(x)
        except Exception as exc:
            raise UserError(f"Method '{method}' returned a {type(model).__name__} whose for_class({c}) did not "
                            f"answer ({error_reason(exc)}); {rule}.") from exc
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
        if shape != (len(x), data.num_classes):
            got = f"logits of shape {list(shape)}" if shape else f"a {type(logits).__name__}"
            raise UserError(f"Method '{method}' returned a model giving {got} for class {c}; the dataset has "
                            f"{data.num_classes} classes: [N, {data.num_classes}] logits are expected.")


def _unchanged(model: torch.nn.Module, before: tuple[list[float], list[bool]]) -> bool:
    try:
        return same_state(before, model_state_summary(model))
    except Exception:  # a state that can no longer be read (a method put something else in it): changed
        return False


@contextlib.contextmanager
def left_as_given(given: list[tuple[torch.nn.Module, tuple]], stages: Stages, method: str):
    """Refuse a method that changed a shared model it was given (the original, a retrained model) in place: the
    worker's next cells would start from the changed model. Such a model is discarded (loaded again for the next
    cell) and, where the method returned, its cell fails with one sentence."""
    raised = True
    try:
        yield
        raised = False
    finally:
        changed = [m for m, before in given if not _unchanged(m, before)]
        for model in changed:
            stages.discard(model)
        if changed and not raised:
            raise UserError(f"Method '{method}' changed a model it was given in place (the original or a retrained "
                            f"model: its weights, BatchNorm statistics or train/eval mode); it must train "
                            f"task.copy_original() and leave the models it is given as they are.")


@dataclass
class Computed:
    """What `run_cell` computed: records by what made them (None: the cost and diagnostics rows; a metric's name:
    its split × class rows), the unlearned model's fingerprint, and whether the cached records `reuse` offered were
    of this very model (so those metrics were not computed again)."""

    records: dict[str | None, list[dict]]
    fingerprint: str
    reused: bool
    artifact: str | None = None  # the SHA-256 of the artifacts file it wrote (the cache checks it before serving)


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (every tensor's name, dtype, shape and bytes): equal for bit-identical models."""
    digest = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_cell(cell: Cell, info: MethodInfo, stages: Stages, grid: Grid, metrics: list[str], progress: bool,
             artifacts: Path | None = None, reuse: tuple[str, set[str]] | None = None, crowded: str = "") -> Computed:
    """Unlearn and evaluate one cell on `metrics`, each record naming the device (and CPU threads) and the git
    commit that computed it; metrics are computed class by class, each class's in the order given. `reuse`:
    (fingerprint, metric names) of an earlier unlearning of this cell whose records of those metrics are cached:
    where this unlearning gives the same model (bit for bit; not so on a GPU or at another CPU thread count), those
    metrics are left out, else every metric is computed. `crowded`: how the device was oversubscribed while the
    cost was measured (`crowding`), said in the cost rows' device, which the cache keeps with them.

    A non-finite metric value fails the cell. When `artifacts` is given, the model's artifacts are saved there."""
    data = stages.data
    model, cost = unlearn_cell(cell, info, stages, progress)
    trained_on = cost.pop("trained_on")
    fingerprint = model_fingerprint(model)
    reused = reuse is not None and reuse[0] == fingerprint
    metrics = [m for m in metrics if not (reused and m in reuse[1])]
    base = {"dataset": cell.dataset.label, "backbone": cell.backbone.label, "method": cell.method,
            "params": cell.params_json, "seed": cell.seed, "device": device_name(data.device),
            "git_commit": git_commit()}  # the code that computed it: a later run taking it from the cache keeps it
    # cost rows that include a retrained model's training measured elsewhere (e.g. by `tune` at other threads)
    charged = {**base, "device": cost_device(data.device, crowded, trained_on)}
    whole = {**cost, "serving_bytes": state_bytes(model), **model.diagnostics()}
    records: dict[str | None, list[dict]] = {None: [
        {**(charged if k in cost else base), "forget_class": cell.forget_class, "split": "all", "metric": k,
         "value": float(v)} for k, v in whole.items()], **{name: [] for name in metrics}}
    logit_cache, results = BoundedMemo(CELL_LOGIT_BYTES), {}

    @functools.lru_cache(maxsize=None)  # one rerun serves every class of an all-class method
    def rerun(replicate: int) -> UnlearnedModel:
        return unlearn_cell(cell, info, stages, False, replicate)[0]

    for c in cell.evaluated_classes:
        ctx = MetricContext(data=data, model=model, forget_class=c, stages=stages, method=cell.method, settings={},
                            logit_cache=logit_cache, results=results, rerun=rerun,
                            has_retrain=grid_has_retrain(grid) and stages.recipe.epochs > 0)
        for name in metrics:
            ctx.settings = metric_settings(grid, name)
            for split, metric, value in METRICS.get(name).compute(ctx):
                if not math.isfinite(value):
                    raise FloatingPointError(f"metric {metric} on the {split} split of class {c} is {value}")
                records[name].append({**base, "forget_class": c, "split": split, "metric": metric,
                                      "value": float(value)})
    digest = None
    if artifacts is not None and model.artifacts() and not reused:
        from safetensors.torch import save

        blob = save({k: v.detach().cpu().contiguous() for k, v in model.artifacts().items()},
                    {"forget_classes": json.dumps(cell.evaluated_classes)})  # the rows it unlearnt
        atomic_write(artifacts, blob)  # whole or not at all: another run may be copying it into its folder
        digest = hashlib.sha256(blob).hexdigest()
    return Computed(records, fingerprint, reused, digest)


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
    metrics_code: str = ""  # the metrics package the run planned with (its metric keys hold it)
    crowded: str = ""  # how its device was oversubscribed while it ran (`crowding`), in its cost rows' device


@dataclass
class Outcome:
    job: Job
    records: list[dict] | None = None
    failure: dict | None = None
    partial: bool = False  # a cell that computed only the metrics its cache lacked


@dataclass(frozen=True)
class GroupKey:
    """Everything a group's Stages depend on: jobs with equal keys share one Stages in a worker process."""

    group: tuple
    device: str
    precision: str
    val_fraction: float
    recipe: str
    cache: Path
    data_root: Path | None
    download: bool
    progress: bool
    log_path: Path

    @classmethod
    def of(cls, job: Job) -> "GroupKey":
        o = job.options
        return cls(job.cell.group, job.device, o.precision, job.grid.val_fraction,
                   json.dumps(job.grid.recipe, sort_keys=True), o.cache, o.data_root, o.download, o.progress,
                   job.log_path)


def load_group(key: GroupKey) -> Stages:
    """The Stages of a (dataset, backbone, seed) group: its data loaded, its stage models trained on demand. Its
    files are scanned again first: the jobs' keys are checked against what is loaded now, not against the scan
    the run planned with (the same process, with --workers 0), so files rewritten since fail those jobs."""
    dataset, backbone, seed = key.group
    files = dataset_identity(dataset.name, dataset.options_dict, key.data_root, key.cache, key.download, rescan=True)
    data = load_dataset(dataset.name, root=key.data_root, cache_dir=key.cache, download=key.download,
                        val_fraction=key.val_fraction, device=resolve_device(key.device),
                        options=dataset.options_dict, files=files or None)
    recipe = resolve_recipe(dataset.name, backbone, json.loads(key.recipe))
    return Stages(data, stage_dataset_key(dataset, files, key.val_fraction), backbone, recipe, seed, Cache(key.cache),
                  key.data_root, progress=key.progress, log=LogFile(key.log_path))


def stage_dataset_key(dataset, files: dict | None = None, val_fraction: float = DEFAULT_VAL_FRACTION) -> dict:
    """The dataset part of a stage model's cache key: the entry without the options that pick evaluation images
    only (`test_per_class`, `train_eval_per_class`, `val_per_class`) or say how images are held, so ImageNet's
    5-per-class evaluation reuses the original and retrained models of the whole test set (and a grid without them
    keys them as before); with `files`, which files it reads (`dataset_identity`); and a `val_fraction` other than
    the default, which carves another training split (the default's models keep their earlier keys)."""
    return {**dataset.key_entry(*EVALUATION_OPTIONS), **({"files": files} if files else {}),
            **({"val_fraction": val_fraction} if val_fraction != DEFAULT_VAL_FRACTION else {})}


class KeptGroup:
    """The one group a worker process keeps in memory for its next job of that group. Another group's job drops
    it before loading its own, so a worker never holds two groups' data and models."""

    key: GroupKey | None = None
    stages: Stages | None = None

    @classmethod
    def stages_for(cls, key: GroupKey) -> Stages:
        if cls.key != key:
            cls.forget()
            cls.stages, cls.key = load_group(key), key
        return cls.stages

    @classmethod
    def forget(cls) -> None:
        cls.key = cls.stages = None


def run_job(job: Job) -> Outcome:
    """Execute one job in this process; every error becomes a failure in the outcome, never an exception."""
    if job.threads:
        torch.set_num_threads(job.threads)
    os.environ[PRECISION_VARIABLE] = job.options.precision  # carried by the job: Slurm tasks need no exported env
    log = LogFile(job.log_path)
    try:
        stages = KeptGroup.stages_for(GroupKey.of(job))
        check_classes(job.cell, stages.data.num_classes, job.cell.dataset.name)
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
        metric_keys = {m: metric_key(job.key, job.grid, m, job.metrics_code) for m in metric_names(job.grid)}
        hit = cache.cell_records(job.key, job.cell, metric_keys)
        if hit is not None:
            return Outcome(job, records=hit)
        methods, _ = discover(job.options.plugins)
        check_planned_key(job, methods[job.cell.method])
        # the unlearning runs again (models are not kept); metrics cached from a bit-identical model are kept
        whole, earlier = cache.cell_entry(job.key) or (None, None)
        cached = cache.metric_records(metric_keys, earlier)  # only those of the model the unlearning entry names
        reuse = (earlier, {m for m, rows in cached.items() if rows is not None}) if earlier and whole else None
        done = run_cell(job.cell, methods[job.cell.method], stages, job.grid, list(metric_keys), job.options.progress,
                        cache.artifact_path(job.key), reuse, job.crowded)
        if not done.reused and whole is not None:  # another model: its earlier entry goes first, so no crash
            cache.drop_cell(job.key)               # between these writes leaves records of two models as one cell
        for m, rows in done.records.items():
            if m is not None:
                cache.save_cell(metric_keys[m], rows, "metric-records", fingerprint=done.fingerprint)
        if not done.reused:  # last: a cell whose unlearning entry exists is complete
            cache.save_cell(job.key, done.records[None], fingerprint=done.fingerprint, artifact=done.artifact)
            whole, cached = done.records[None], {}
        computed = [m for m in done.records if m is not None]
        log(f"done {job.cell.describe()}" + (f" (metrics {', '.join(computed)}; the others cached from the same "
                                             f"model)" if done.reused else ""))
        by_metric = {m: done.records[m] if m in done.records else cached[m] for m in metric_keys}
        return Outcome(job, records=cell_order(job.cell, whole, by_metric), partial=done.reused)
    except (Exception, SystemExit) as exc:  # a method calling sys.exit() fails its cell, not the run
        log(f"FAILED {job.kind} {job.cell.describe()}: {error_reason(exc)}")
        return Outcome(job, failure=failure_row(job.cell, "failed", error_reason(exc), traceback.format_exc()))


def check_planned_key(job: Job, info: MethodInfo) -> None:
    """Refuse to compute a cell whose key, made again from the code this worker imported and the files it reads,
    is not the one the run planned it under: code, a plugin or a dataset's files changed on disk since the run
    started (a worker started later imports the edit), and its records would be cached under a key that does not
    describe them."""
    if not job.key:
        return
    files = dataset_identity(job.cell.dataset.name, job.cell.dataset.options_dict, job.options.data_root,
                             job.options.cache, job.options.download)
    here = cell_key(job.cell, job.grid, info, torch.device(job.device), files)
    metrics_here = code_hash("metrics")
    if here != job.key or (job.metrics_code and metrics_here != job.metrics_code):
        what = (f"cell key {here} here, {job.key} planned, {info.name} read from {info.source}" if here != job.key
                else f"metrics code {metrics_here} here, {job.metrics_code} planned")
        raise UserError(f"The code, a method plugin or the dataset's files changed on disk after this run was planned, "
                        f"or this worker imported them from another checkout ({what}), so this cell was not "
                        f"computed: start the run again to compute it with what is there now.")


def crashed(job: Job, exc: BaseException) -> Outcome:
    """The failure outcome of a job whose worker process died."""
    reason = str(exc) if isinstance(exc, WorkerDied) else f"the worker running it died ({error_reason(exc)})"
    return Outcome(job, failure=failure_row(job.cell, "failed", reason, "".join(traceback.format_exception(exc))))


def worker_threads(launch_options: LaunchOptions) -> int:
    """Torch CPU threads per worker: --threads, else a Slurm task's CPUs (`cpus_per_task`), else this machine's
    cores shared out among the workers (this process: all)."""
    if launch_options.threads:
        return launch_options.threads
    if launch_options.launcher == "slurm":
        return launch_options.slurm.cpus_per_task
    return max(1, (os.cpu_count() or 1) // max(1, launch_options.workers))


def cost_device(device: torch.device, crowded: str = "", trained_on: list[str] = ()) -> str:
    """The device column of cost rows (a cell's, a tuning trial's): `device_name`, then where it was oversubscribed
    (`crowding`) and where a retrained model it charges was trained elsewhere, each after '; ' (the report reads the
    hardware before the first)."""
    notes = ([f"measured with {crowded}"] if crowded else []) + (
        [f"retrained model trained on {', '.join(trained_on)}"] if trained_on else [])
    return "; ".join([device_name(device), *notes])


def crowding(launch_options: LaunchOptions, device: torch.device, jobs: int) -> str:
    """How `jobs` jobs' device is oversubscribed by the local workers running them at once, so that their seconds
    run long: workers × torch threads past the CPU's cores, or more workers than GPUs; '' where it is not."""
    workers = min(launch_options.workers, jobs)
    if launch_options.launcher != "local" or workers < 2:
        return ""
    if device.type == "cpu":
        threads, cores = worker_threads(launch_options), os.cpu_count() or 1
        return f"{workers} workers × {threads} threads on {cores} cores" if workers * threads > cores else ""
    gpus = len(launch_options.gpus) or 1
    return f"{workers} workers on {gpus} GPU{'s' * (gpus > 1)}" if workers > gpus else ""


def make_jobs(kind: str, cells: list[Cell], grid: Grid, options: RunOptions, launch_options: LaunchOptions,
              device: torch.device, log_path: Path, keys: dict[Cell, str] | None = None,
              together: int | None = None) -> list[Job]:
    """One Job per cell, each on its GPU of --gpus; workers show progress bars only when at most one local worker
    runs (parallel bars would interleave). `together`: how many jobs the launch that runs these holds (default
    these), which says how crowded the workers run."""
    quiet = launch_options.workers > 1 or launch_options.launcher != "local"
    worker_options = dataclasses.replace(options, progress=options.progress and not quiet)
    crowded = crowding(launch_options, device, together or len(cells))
    made = [Job(kind, c, (keys or {}).get(c, ""), grid, worker_options, str(device), log_path,
                worker_threads(launch_options), code_hash("metrics") if keys else "", crowded) for c in cells]
    return assign_devices(made, launch_options.gpus, lambda j, d: dataclasses.replace(j, device=d))


def check_classes(cell: Cell, num_classes: int, dataset: str) -> None:
    bad = sorted(c for c in cell.forget_classes if c >= num_classes)
    if bad:
        raise UserError(f"Forget class {bad[0]} is outside dataset '{dataset}', whose classes are 0…{num_classes - 1}.")


def failure_row(cell: Cell, status: str, reason: str, tb: str = "") -> dict:
    return {"dataset": cell.dataset.label, "backbone": cell.backbone.label, "method": cell.method,
            "params": cell.params_json, "seed": cell.seed, "forget_class": cell.forget_class, "status": status,
            "reason": reason, "traceback": tb}
