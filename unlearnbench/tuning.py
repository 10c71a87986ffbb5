"""The tuning protocol: one seeded, budgeted Optuna search per dataset × backbone × method, on the validation split.

Every method goes through it the same way (docs/protocol.md, "Tuning"): the same number of trials, the same
TPE sampler seed, the same forget classes (fixed in the grid's `tuning:` section and written beside the result)
and one objective, the distance to the retrained model on the validation split,

    mean over tuning classes c of |Acc_r(θ) − Acc_r(retrain_c)| + |Acc_f(θ) − Acc_f(retrain_c)|   (0 = retrain, 2 = worst)

The first trial is the method's defaults, so tuning never picks a setting worse on validation than the defaults.
A trial's models are built exactly as a grid cell with the same parameters builds them (same task, same seed), and
each trial is cached: a killed or repeated `tune` replays the cached trials (the seeded sampler then proposes the
same next ones) and computes only what is missing. The test split is never read.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import check_ranges, from_mapping
from .data import dataset_identity, scans_files_afresh
from .errors import UserError
from .grid import Cell, Grid
from .search_space import Float, describe
from .stages import Stages
from .store import stable_hash
from .training import compute_setting, finite_logits
from .tuning_results import earlier_tuning, in_plan_order, merged, summarise, write_tuning


@dataclass(frozen=True)
class TuningSettings:
    """A grid's `tuning:` section: the budget and the classes every method is tuned on.

    trials: trials per dataset × backbone × method (the first is the defaults). forget_classes: the classes a trial
    unlearns and is scored on (None: every forget class of the grid), which need not be the grid's (one-round
    methods' trials unlearn these and the grid's classes in one round, scored on these). seed: the TPE sampler's
    seed. startup_trials: trials sampled at random (after the defaults) before TPE models the history.
    """

    trials: int = 20
    forget_classes: Any = None  # list[int] | None, checked below: a type hint would show up in its error message
    seed: int = 0
    startup_trials: int = 8

    def __post_init__(self) -> None:
        # one sentence per bad key; from_mapping appends where the section is, e.g. "(the tuning section of x.yaml)"
        check_ranges(dataclasses.asdict(self), {
            "trials": (lambda v: v >= 1, "an integer ≥ 1"),
            "startup_trials": (lambda v: v >= 0, "an integer ≥ 0"),
            "seed": (lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2^32)"),
            "forget_classes": (lambda v: v is None or (isinstance(v, (list, tuple)) and all(
                isinstance(c, int) and not isinstance(c, bool) for c in v)),
                "a list of class indices such as [0, 1]")},
            lambda key: f"The tuning setting '{key}'")
        if self.forget_classes is not None and not self.forget_classes:
            raise UserError("The tuning setting 'forget_classes' lists no class; list at least one class index or "
                            "leave it out to tune on the grid's forget classes.")


def tuning_settings(grid: Grid) -> TuningSettings:
    """The grid's `tuning:` section as TuningSettings (defaults where it is absent)."""
    return from_mapping(TuningSettings, grid.tuning or {}, f"the tuning section of grid '{grid.name}'")


def grid_split(grid: Grid) -> dict:
    """What of the grid besides the tuning settings decides the validation split and the stage models a study
    scores against, recorded in the result so studies of another split are never added to it."""
    return {"val_fraction": grid.val_fraction, "recipe": grid.recipe}


def val_accuracies(net: torch.nn.Module, stages: Stages, forget_class: int) -> dict[str, float]:
    """{'acc_retain', 'acc_forget'}: accuracy (fraction) of `net` on D_r(c) and D_f(c) of the validation split.
    A shared stage model's logits come from the group's memo. Non-finite outputs fail (as they fail a grid cell):
    argmax would read a NaN row as class 0, a finite score for a broken model."""
    data = stages.data
    logits = stages.stage_logits(net, "val")
    if logits is None:
        logits = finite_logits(net, data, "val")
    hit = logits.argmax(1) == data.val.labels
    forget = data.val.labels == forget_class
    if not forget.any():
        raise UserError(f"The validation split holds no sample of class {forget_class}, which tuning scores on; "
                        f"use a larger val_fraction or other tuning forget_classes.")
    return {"acc_retain": float(hit[~forget].float().mean()), "acc_forget": float(hit[forget].float().mean())}


def retrain_distance(scores: dict[str, float], reference: dict[str, float]) -> float:
    """|ΔAcc_r| + |ΔAcc_f| between a model's validation accuracies and the retrained model's (fractions)."""
    return abs(scores["acc_retain"] - reference["acc_retain"]) + abs(scores["acc_forget"] - reference["acc_forget"])


def round_params(params: dict, space: dict) -> dict:
    """Values sampled from a Float range kept to 3 significant digits, so tables stay readable and cache keys
    stable; a Choice's options are kept as declared."""
    return {k: float(f"{v:.3g}") if isinstance(space[k], Float) else v for k, v in params.items()}


def run_study(job, stages: Stages) -> list[dict]:
    """The whole search for the job's dataset × backbone × method (in this process); returns one row per trial
    (tuning_results.TRIAL_COLUMNS). Called by `execution.run_job` for jobs of kind 'tune'."""
    import optuna

    from .discovery import discover
    from .planning import cell_key
    from .execution import cost_device
    from .store import Cache

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = tuning_settings(job.grid)
    cell: Cell = job.cell
    info = discover(job.options.plugins)[0][cell.method]
    fixed = dict(cell.params)  # the defaults with the grid's fixed overrides: the trials change only the space
    space = searched_space(info.cls(), cell, job.grid)
    classes = tuning_classes(settings, cell, job.options)
    cell = trial_cell_classes(cell, classes, info.cls.per_class)
    reference = {c: val_accuracies(stages.retrained(c), stages, c) for c in classes}
    cache = Cache(job.options.cache)
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials + 1)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial({k: fixed[k] for k in space})
    rows, tried = [], set()
    measured_on = cost_device(stages.data.device, job.crowded)
    for number in range(settings.trials):
        trial = study.ask()
        sampled = {k: spec.suggest(trial, k) for k, spec in space.items()}
        params = {**fixed, **(sampled if number == 0 else round_params(sampled, space))}  # trial 0: the defaults
        trial_cell = dataclasses.replace(cell, params=tuple(sorted(params.items())))
        key = stable_hash({"kind": "tuning-trial", "classes": classes, "cell": cell_key(
            trial_cell, job.grid, info, stages.data.device, dataset_identity(
                cell.dataset.name, cell.dataset.options_dict, job.options.data_root, job.options.cache,
                job.options.download))})
        hit = cache.load_cell(key)
        # a cached trial keeps the device its seconds were measured on ('unknown' where cached before it was kept)
        result = ({"device": "unknown", **hit[0]} if hit is not None else
                  {**_evaluate(trial_cell, info, stages, classes, reference), "device": measured_on})
        if hit is None and not result["error"]:
            cache.save_cell(key, [result])
        if hit is not None and key in tried:  # a setting this study ran already (a small discrete space), taken
            result = {**result, "seconds": 0.0}  # from the cache: it costs nothing (a failed one is run again)
        tried.add(key)
        study.tell(trial, result["objective"])
        rows.append({"dataset": cell.dataset.label, "backbone": cell.backbone.label, "method": cell.method,
                     "trial": number, "params": json.dumps(params, sort_keys=True), **result, "cached": hit is not None})
    return rows


def tuning_versions() -> dict:
    """`store.versions()` and Optuna's, whose sampler proposes the trials (another version, other proposals)."""
    import optuna

    from .store import versions

    return {**versions(), "optuna": optuna.__version__}


def searched_space(method, cell: Cell, grid: Grid) -> dict:
    """The method's search space for the cell's backbone, less the parameters the grid fixes for that method."""
    fixed = {} if grid.methods == "all" else next((m.params for m in grid.methods if m.name == cell.method), {})
    return {k: v for k, v in method.space(cell.backbone).items() if k not in fixed}


def tuning_classes(settings: TuningSettings, cell: Cell, options) -> list[int]:
    """The forget classes a study unlearns and scores on: the settings' list (None: the grid's forget classes). They
    need not be among the grid's: a grid may evaluate fewer classes than its parameters were tuned on. 'all' counts
    the dataset's classes as planning does (an ImageFolder tree's own)."""
    from .data import dataset_classes
    from .grid import forget_classes

    if settings.forget_classes is None:
        return list(cell.forget_classes)
    n = dataset_classes(cell.dataset.name, options.data_root, options.cache, cell.dataset.options_dict)
    bad = [c for c in settings.forget_classes if c < 0 or (n is not None and c >= n)]
    if bad:  # said here, not by grid.forget_classes, whose sentence would not say the class is the tuning section's
        span = f"0…{n - 1}" if n else "numbered from 0"
        raise UserError(f"Forget class {bad[0]} in the tuning section is outside dataset '{cell.dataset.label}', "
                        f"whose classes are {span}; list only classes in that range in the tuning section's "
                        f"forget_classes.")
    return forget_classes(settings.forget_classes, n, cell.dataset.label)


def trial_cell_classes(cell: Cell, classes: list[int], per_class: bool) -> Cell:
    """The study's cell with the classes its trials cover: a per-class method's, the tuning classes (its trials
    then keep their keys whatever the grid's forget classes); a one-round method's round spans the grid's forget
    classes and the tuning classes together (so it is scored only on classes it unlearnt, and filters at least the
    classes the grid asks for)."""
    covered = set(classes) if per_class else set(cell.forget_classes) | set(classes)
    return dataclasses.replace(cell, forget_classes=tuple(sorted(covered)))


def _evaluate(cell: Cell, info, stages: Stages, classes: list[int], reference: dict) -> dict:
    """Unlearn as the grid cell would (per class, or once for all classes) and score on the validation split; a
    failing trial scores the worst objective (2) and keeps its error."""
    from .execution import unlearn_cell

    start = time.perf_counter()
    try:
        info.cls().check_parameters(cell.params_dict)  # a setting the grid would refuse is never chosen
        scores = {}
        targets = [dataclasses.replace(cell, forget_class=c) for c in classes] if info.cls.per_class else [cell]
        for target in targets:
            model, _ = unlearn_cell(target, info, stages, progress=False)
            for c in ([target.forget_class] if info.cls.per_class else classes):
                scores[c] = val_accuracies(model.for_class(c), stages, c)
        distance = sum(retrain_distance(scores[c], reference[c]) for c in classes) / len(classes)
        if not math.isfinite(distance):
            raise FloatingPointError(f"the objective is {distance}")
        return {"objective": distance,
                "val_acc_retain": sum(s["acc_retain"] for s in scores.values()) / len(classes),
                "val_acc_forget": sum(s["acc_forget"] for s in scores.values()) / len(classes),
                "seconds": time.perf_counter() - start, "error": ""}
    except (Exception, SystemExit) as exc:  # a method calling sys.exit() fails its trial, as it fails a grid cell
        stages.log(f"tuning trial {cell.describe()} failed: {exc}\n{traceback.format_exc()}")
        return {"objective": 2.0, "val_acc_retain": math.nan, "val_acc_forget": math.nan,
                "seconds": time.perf_counter() - start, "error": f"{type(exc).__name__}: {exc}"}


@dataclass
class TuneResult:
    folder: Path
    trials: pd.DataFrame
    document: dict  # every study of the folder: this call's and those an earlier call wrote there
    failures: list[dict]
    studies: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # this call's (dataset, backbone,
    # method)


@scans_files_afresh
def tune(grid: Grid, options, launch_options, out: Path) -> TuneResult:
    """Tune every dataset × backbone × method of `grid` that declares a search space (one study each, on the first
    seed and parameter set the plan holds: the grid's, or those `--only` picks); write trials.csv, tuned.yaml and
    summary.md into `out` after every finished study (a killed run loses no finished study; re-running resumes from
    the trial cache). The original and retrained models are the grid's own cached stages, trained first, once
    each."""
    from .planning import on_launcher, plan
    from .store import RunFolder, writable_folder

    from .execution import KeptGroup

    if any((Path(out) / name).is_file() for name in ("config.yaml", "records.csv")):
        raise UserError(f"{out} holds a run (config.yaml, records.csv), not a tuning; pass another --out.")
    grid = dataclasses.replace(grid, tuned="")  # search from the defaults, not from an earlier result
    options = on_launcher(options, launch_options.slurm if launch_options.launcher == "slurm" else None)
    settings = tuning_settings(grid)
    if not grid.tuning:  # said, since a study of the default budget can take long (before: only log.txt said it)
        print(f"note: grid '{grid.name}' has no tuning: section, so each study runs the default budget: "
              f"{settings.trials} trials ({settings.startup_trials} drawn at random after the defaults, then TPE, "
              f"seed {settings.seed}), scored on the grid's forget classes.", file=sys.stderr)
    if 1 < settings.trials <= settings.startup_trials + 1:  # TPE models the history from trial startup_trials + 2 on
        print(f"warning: the tuning section's startup_trials ({settings.startup_trials}) leaves none of its "
              f"{settings.trials} trials to TPE: after the defaults, every trial is drawn at random.", file=sys.stderr)
    filters = options.only if isinstance(options.only, list) else [options.only or {}]
    if any("forget_class" in f for f in filters):  # (it chose studies, per-class or not, never their classes)
        raise UserError("tune scores every study on the classes of the grid's 'tuning: forget_classes' (default: "
                        "the grid's forget_classes), not on --only forget_class; set them there, and choose studies "
                        "with --only method=.")
    p = plan(grid, options)
    KeptGroup.forget()  # as `run`: models an earlier run or tune in this process kept are not trusted blindly
    from .runner import check_launch, check_workers

    check_launch(launch_options, p.device)  # before any folder is made
    writable_folder(options.cache, "cache folder")
    studies: dict = {}
    for cell in p.cells:  # expansion order: the first seed and parameter set of each study come first
        if p.methods[cell.method].cls().space(cell.backbone):
            key = (cell.dataset.label, cell.backbone.label, cell.method)
            studies.setdefault(key, dataclasses.replace(cell, forget_class=None))
    skipped: dict = {}  # studies whose cells the plan skips (data missing, a method's own skip), with the reason
    for cell, reason in p.skipped:
        key = (cell.dataset.label, cell.backbone.label, cell.method)
        if key not in studies and p.methods[cell.method].cls().space(cell.backbone):
            skipped.setdefault(key, (dataclasses.replace(cell, forget_class=None), reason))
    if not studies:
        if skipped:
            raise UserError(f"Every study of grid '{grid.name}' is skipped; the first: "
                            f"{next(iter(skipped.values()))[1].rstrip('.')}.")
        picked = " that --only keeps" if any(filters) else ""
        raise UserError(f"No method of grid '{grid.name}'{picked} declares a search space, so there is nothing to "
                        f"tune.")
    classes = {c.group: tuning_classes(settings, c, options) for c in studies.values()}
    crowded = check_workers(grid, list(studies.values()), {g: len(ks) for g, ks in classes.items()}, launch_options,
                            p.device, options.data_root, Path(options.cache))
    if crowded:
        print(f"warning: {crowded}.", file=sys.stderr)
    with RunFolder(out).lock("tune"):  # two tunes adding studies to one folder would drop each other's
        return _run_studies(grid, options, launch_options, out, p, settings, studies, classes, list(skipped.values()))


def _run_studies(grid: Grid, options, launch_options, out: Path, p, settings: TuningSettings, studies: dict,
                 classes: dict, skipped: list) -> TuneResult:
    """`tune` from its plan on: stages first, then one job per study, the result written after every study."""
    from .execution import crashed, failure_row, make_jobs, run_job
    from .launchers import WorkerSlots, launch
    from .planning import study_setup
    from .store import LogFile, git_commit, remove_dead_partials

    study_classes = {key: classes[cell.group] for key, cell in studies.items()}  # recorded with each study
    seeds = {key: cell.seed for key, cell in studies.items()}  # the stage models' (--only seed=… picks another)
    earlier = earlier_tuning(out, settings, grid_split(grid), study_classes, seeds)
    log_path = out / "log.txt"
    log = LogFile(log_path)
    log(f"tuning {len(studies)} studies of grid '{grid.name}': {settings}")
    for leftover in remove_dead_partials(Path(options.cache)) + remove_dead_partials(out):
        log(f"removed {leftover}, left half-written by a process that no longer runs")
    failures: list[dict] = []
    for cell, reason in skipped:  # said, not dropped silently: a resumed run with a dataset gone would lose them
        log(f"skipped {cell.dataset.label}/{cell.backbone.label}/{cell.method}: {reason}")
        failures.append(failure_row(cell, "skipped", reason))
    firsts = {c.group: c for c in studies.values()}
    retrained = [dataclasses.replace(c, forget_class=k) for g, c in firsts.items() for k in classes[g]]
    # one-round methods' trials are the longest: their studies start first
    ordered = sorted(studies, key=lambda k: p.methods[k[2]].cls.per_class)
    spaces = {k: describe(searched_space(p.methods[k[2]].cls(), studies[k], grid)) for k in ordered}
    setups = {k: study_setup(studies[k]) for k in ordered}
    sources = {k: p.methods[k[2]].source_hash for k in ordered}
    header = (f"Tuned by: run_bench.py tune --grid {grid.name} ({options.command or 'python API'})\n"
              f"git {git_commit()}, {tuning_versions()}, device {p.device} ({compute_setting(p.device)['precision']})\n"
              f"objective: mean over tuning classes of |Acc_r - Acc_r(retrain)| + |Acc_f - Acc_f(retrain)| on the "
              f"validation split (lower is better); the first trial is the method's defaults")
    rows: list[dict] = []
    document: dict = {}
    phases = [("original", list(firsts.values())), ("retrained", retrained), ("tune", [studies[k] for k in ordered])]
    broken: dict = {}  # group → the failure of its original or a retrained model: its studies fail with it
    with WorkerSlots() as slots:  # one set of worker processes for every phase
        for kind, cells in phases:
            for cell in (c for c in cells if c.group in broken and kind == "tune"):
                failures.append(failure_row(cell, "failed", f"its group's {broken[cell.group]['reason']}",
                                            broken[cell.group]["traceback"]))
            jobs = make_jobs(kind, [c for c in cells if c.group not in broken], grid, options, launch_options,
                             p.device, log_path)
            for outcome in launch(run_job, jobs, dataclasses.replace(launch_options, folder=out), crashed,
                                  slots):
                study = outcome.job.cell
                if outcome.failure:  # a stage model's failure is its studies' (one each), not one of its own
                    if kind == "tune":
                        failures.append(outcome.failure)
                    else:
                        broken.setdefault(study.group, {**outcome.failure,
                                                        "reason": f"{kind} model failed: {outcome.failure['reason']}"})
                    log(f"FAILED {kind} {study.describe()}: {outcome.failure['reason']}")
                    continue
                if kind == "tune":
                    rows += outcome.records
                    trials = in_plan_order(rows, spaces)
                    document = summarise(trials, settings, spaces, git_commit(), grid_split(grid), setups,
                                         study_classes, seeds, sources)
                    write_tuning(out, *merged(earlier, trials, document, header))
                    chosen = document["tuned"].get(study.dataset.label, {}).get(study.backbone.label,
                                                                                {}).get(study.method)
                    if chosen is None:
                        failures.append(failure_row(study, "failed", "every tuning trial failed (see trials.csv)"))
                    log(f"tuned {study.dataset.label}/{study.backbone.label}/{study.method}: "
                        f"{chosen['params'] if chosen else 'every trial failed'}")
    trials, document, _ = merged(earlier, in_plan_order(rows, spaces), document or summarise(
        in_plan_order(rows, spaces), settings, spaces, grid_split=grid_split(grid), setups=setups,
        classes=study_classes, seeds=seeds, sources=sources), header)
    return TuneResult(out, trials, document, failures, list(studies))
