"""Planning a run: the cells of a grid after --only filters, those skipped up front, each cell's cache key, and the
plan shown before anything runs."""
from __future__ import annotations

import dataclasses
import os
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import DATASETS, check_dataset_subsets, dataset_classes, dataset_identity, dataset_missing
from .discovery import MethodInfo, PluginError, discover, get_method
from .estimates import plan_estimates
from .errors import UserError, did_you_mean, error_reason
from .grid import HOLDING_OPTIONS, SEED_LIMIT, Cell, Grid, expand, tuned_parameters, tuning_conditions
from .launchers import SlurmOptions
from .models import backbone_key
from .metrics import METRICS
from .stages import check_normalisation, no_weights_reason, with_local_weights
from .store import Cache, code_hash, key_versions, metric_library_versions, stable_hash
from .training import PRECISION_VARIABLE, compute_setting, resolve_recipe

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
    only: dict | list[dict] = field(default_factory=dict)  # a list: the cells any of its filter sets selects
    plugins: list = field(default_factory=list)
    progress: bool = True
    command: str = ""
    precision: str = "auto"  # --precision: 'auto' (bf16 autocast on CUDA) or 'float32' everywhere
    report: bool = True  # --no-report: write no report/ at the end (`run_bench.py report RUN_DIR` writes it later)
    in_slurm_tasks: bool = False  # `device` is the Slurm tasks' (`slurm_device`): checked there, not on this machine

    @property
    def cache(self) -> Path:
        return self.cache_dir or self.results_dir / "cache"

    def run_device(self) -> torch.device:
        """The device the cells compute on, which keys them: `resolve_device` here, or the Slurm tasks' device."""
        return torch.device(self.device) if self.in_slurm_tasks else resolve_device(self.device)


@dataclass
class Plan:
    """The cells to run and those skipped up front, with the reason; the device they run on."""

    cells: list[Cell]
    skipped: list[tuple[Cell, str]]
    methods: dict[str, MethodInfo]
    plugin_errors: list
    device: torch.device
    files: dict = field(default_factory=dict)  # dataset entry → which files it reads (`dataset_identity`)
    # one-round methods (forget_class=all) an --only forget_class filter left out, though its other filters chose them
    one_round_left_out: tuple[str, ...] = ()


def slurm_device(name: str, slurm: SlurmOptions) -> str:
    """The device Slurm tasks compute on, named on the submitting machine (a login node often has no GPU): 'auto'
    is cuda where the tasks get GPUs (`gpus_per_task`), else cpu; cuda needs tasks with GPUs; a task's GPUs are its
    own, so no index is named."""
    if name == "auto":
        return "cuda" if slurm.gpus_per_task else "cpu"
    if re.fullmatch(r"cuda:\d+", name):
        raise UserError(f"--device {name} names a GPU of this machine, but a Slurm task computes on its own "
                        f"(gpus_per_task); use --device cuda or auto.")
    if name == "cuda" and not slurm.gpus_per_task:
        raise UserError("--device cuda asks for a GPU, but the Slurm tasks get none (gpus_per_task: 0); set "
                        "gpus_per_task or use --device cpu.")
    if name not in ("cpu", "cuda"):
        raise UserError(f"Unknown device '{name}'; use auto, cpu or cuda with --launcher slurm.")
    return name


def on_launcher(options: RunOptions, slurm: SlurmOptions | None) -> RunOptions:
    """`options` with the device the jobs compute on: under Slurm (`slurm` given) the tasks' (`slurm_device`)."""
    if slurm is None or options.in_slurm_tasks:
        return options
    return dataclasses.replace(options, device=slurm_device(options.device, slurm), in_slurm_tasks=True)


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
    names = [n for n in METRICS.names() if METRICS.get(n).in_all] if grid.metrics == "all" else list(grid.metrics)
    for name in names:
        METRICS.get(name)
    unknown = [k for k in grid.metric_settings if k not in METRICS]
    if unknown:
        raise UserError(f"Unknown metric '{unknown[0]}' in metric_settings{did_you_mean(unknown[0], METRICS.names())}.")
    for name in grid.metric_settings:  # malformed settings fail before any work, also in --dry-run
        metric_settings(grid, name)
    return names


def metric_settings(grid: Grid, name: str) -> dict:
    """A metric's settings: its registered defaults, overridden by the grid's metric_settings; each override must
    have its default's kind (`config.check_like_default`) and the whole pass the metric's own `check`."""
    metric = METRICS.get(name)
    defaults = metric.defaults
    overrides = grid.metric_settings.get(name, {}) or {}
    where = f"metric_settings.{name} of grid '{grid.name}'"
    if not isinstance(overrides, dict):
        raise UserError(f"{where} must be a mapping of setting: value (e.g. {{{next(iter(defaults), 'key')}: …}}), "
                        f"got {overrides!r}.")
    from .config import check_keys, check_like_default, check_ranges

    check_keys(overrides, defaults, where)
    overrides = {k: check_like_default(v, defaults[k], f"'{k}' in {where}") for k, v in overrides.items()}
    settings = {**defaults, **overrides}
    # every metric's `seed` setting seeds its RNGs (numpy's and torch's accept [0, 2^32))
    check_ranges(settings, {"seed": (lambda v: 0 <= v < SEED_LIMIT, "in [0, 2^32)")}, lambda key: f"'{key}' in {where}")
    if metric.check:
        metric.check(settings)
    return settings


SLURM_NAMES = ("partition", "cluster")  # SlurmOptions' fields that are names


def slurm_options(grid: Grid, overrides: dict, recorded: dict | None = None) -> SlurmOptions:
    """Slurm settings: the grid's `slurm:` section (or the settings a run recorded, which --retry-failed reuses),
    then --slurm KEY=VALUE overrides (strings parsed as YAML, but a name kept as written: partition=123 or
    partition=on named no partition to YAML)."""
    import yaml

    from .config import from_mapping

    merged = {**(grid.slurm if recorded is None else recorded),
              **{k: v if k in SLURM_NAMES else yaml.safe_load(v) for k, v in overrides.items()}}
    return from_mapping(SlurmOptions, merged, "the Slurm settings")


def plan(grid: Grid, options: RunOptions) -> Plan:
    """Expand `grid` into cells, apply --only filters and mark cells that cannot run (missing data, method skip)."""
    device = options.run_device()
    if options.precision not in ("auto", "float32"):
        raise UserError(f"Unknown precision '{options.precision}'; choose auto or float32.")
    os.environ[PRECISION_VARIABLE] = options.precision  # this process's cache keys; each job sets its worker's
    root = options.data_root
    if root is not None and not root.is_dir() and (root.exists() or not options.download):
        raise UserError(f"--data-root {root} {'is not a folder' if root.exists() else 'does not exist'}; pass the "
                        f"folder holding the datasets (or add --download to fetch them into a new one).")
    methods, plugin_errors = discover(options.plugins)
    missing = {d: dataset_missing(d.name, options.data_root, options.cache, d.options_dict, options.download)
               for d in grid.datasets}
    num_classes = {d.name: dataset_classes(d.name, root, options.cache, d.options_dict) for d in grid.datasets}
    # a dataset whose classes are counted in its files, which are missing: planned with one stand-in class, so that
    # its cells are skipped with the missing data's reason, one per dataset × backbone × method × seed
    uncounted = {d.name for d in grid.datasets if num_classes[d.name] is None and missing[d]}
    if grid.forget_classes == "all":
        num_classes.update(dict.fromkeys(uncounted, 1))
    for entry in [] if grid.methods == "all" else grid.methods:
        get_method(methods, entry.name, plugin_errors)  # an unknown name: one sentence naming unloadable plugins
    made = _instances(grid, methods, plugin_errors)
    runs = grid if grid.methods == "all" else dataclasses.replace(  # without methods that cannot be made
        grid, methods=[e for e in grid.methods if e.name in made])
    failed = {e.method: e for e in plugin_errors if e.kind == "runtime"}
    expanded = expand(runs, {n: methods[n] for n in made}, num_classes)
    cells = _select(expanded, options.only, grid.name, failed)
    left_out = _one_round_left_out(expanded, cells, options.only, grid.name)
    cells = _with_local_weights(cells, grid, root)
    runnable, skipped, raised, no_weights = [], [], {}, {}
    cells, not_listed = _dataset_method_lists(grid, cells, methods)
    skipped += not_listed
    for cell in cells:
        if cell.dataset.name in uncounted:
            cell = dataclasses.replace(cell, forget_class=None, forget_classes=())
        try:
            skip, reason = made[cell.method].skip(cell.dataset.name, cell.backbone)
        except (Exception, SystemExit) as exc:  # that method's plugin error; its other cells and the rest run
            raised.setdefault(cell.method, _method_error(methods[cell.method],
                                                         f"skip({cell.dataset.name!r}, {cell.backbone.label!r})", exc))
            continue
        limit, classes = made[cell.method].max_classes, num_classes.get(cell.dataset.name)
        if not skip and limit is not None and classes is not None and classes > limit:
            skip, reason = True, (f"{cell.method} runs on datasets of at most {limit} classes (its cost grows with "
                                  f"their number) and {cell.dataset.name} has {classes}")
        if cell.method == "retrain" and resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe).epochs == 0:
            skip, reason = True, (f"the {cell.dataset.name} recipe trains 0 epochs (its originals are pretrained "
                                  f"weights), so there is nothing to retrain with; give the grid a recipe with epochs")
        weights = (cell.dataset.name, cell.backbone)
        if weights not in no_weights:
            no_weights[weights] = weights_missing(cell, grid)
        if missing[cell.dataset]:
            skipped.append((cell, missing[cell.dataset]))
        elif no_weights[weights]:
            skipped.append((cell, no_weights[weights]))
        elif skip:
            skipped.append((cell, reason or "the method does not support this setting"))
        else:
            runnable.append(cell)
    for cell in {(c.dataset.name, c.backbone): c for c in runnable if c.backbone.pretrained}.values():
        info = DATASETS.get(cell.dataset.name)  # (ImageFolder trees are decoded to RGB)
        channels = info.image_shape[2] if info.image_shape else 3 if info.decodes_to_file else None
        if channels is not None:
            check_normalisation(cell.backbone, cell.dataset.name, channels)
    for dataset in dict.fromkeys(c.dataset for c in runnable):  # a subset larger than a class: before any work
        check_dataset_subsets(dataset, root, options.cache, grid.val_fraction)
    _check_tuned_setups(runnable, grid)  # (a skipped cell's setup may lack what it is skipped for, e.g. its weights)
    files = {d: dataset_identity(d.name, d.options_dict, root, options.cache, options.download) for d in grid.datasets}
    return Plan(runnable, skipped, methods, plugin_errors + list(raised.values()), device, files, left_out)


def weights_missing(cell: Cell, grid: Grid) -> str | None:
    """Why the cell's original cannot be made, where it loads pretrained weights that are not there (like missing
    data, its cells are then skipped with this reason), else None."""
    if cell.backbone.pretrained:
        path = Path(cell.backbone.pretrained).expanduser()
        return None if path.is_file() else f"its pretrained weights file {path} does not exist"
    if resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe).epochs == 0:
        return no_weights_reason(cell.dataset.name, cell.backbone)
    return None


def _with_local_weights(cells: list[Cell], grid: Grid, root: Path | None) -> list[Cell]:
    """`cells` with each backbone naming the weights file under <data-root>/weights/ that its 0-epoch recipe loads
    (stages.with_local_weights): the file's contents are then in the cell's and its stage models' keys."""
    backbones = {}
    for cell in cells:
        if (cell.dataset.name, cell.backbone) not in backbones:
            epochs = resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe).epochs
            backbones[cell.dataset.name, cell.backbone] = with_local_weights(cell.backbone, epochs, root)
    return [dataclasses.replace(c, backbone=backbones[c.dataset.name, c.backbone]) for c in cells]


def _instances(grid: Grid, methods: dict[str, MethodInfo], errors: list) -> dict:
    """{name: instance} of every discovered method the grid runs; a class that raises when made (its __init__) is
    added to `errors` as a plugin error instead, and the grid runs without it."""
    names = methods if grid.methods == "all" else [e.name for e in grid.methods if e.name in methods]
    made = {}
    for name in dict.fromkeys(names):
        try:
            made[name] = methods[name].cls()
        except (Exception, SystemExit) as exc:
            errors.append(_method_error(methods[name], "creating it", exc))
    return made


def _method_error(info: MethodInfo, call: str, exc: BaseException) -> PluginError:
    """The plugin error of a method whose `call` raised `exc` while the run was planned (message: one sentence,
    then the traceback)."""
    return PluginError(info.source, f"Method '{info.name}' in {info.source}: {call} raised {error_reason(exc)}.\n"
                                    + "".join(traceback.format_exception(exc)), "runtime", info.name)


def _dataset_method_lists(grid: Grid, cells: list[Cell], methods: dict) -> tuple[list[Cell], list]:
    """The cells a dataset's `methods:` list allows, and one skipped entry (forget class None, whatever the
    number of classes: ImageNet's 1000 would otherwise list 1000 each) per dataset × backbone × method × seed it
    leaves out, with the reason."""
    for label, names in grid.dataset_methods.items():  # (that the grid runs them is checked when it is read)
        for name in names:
            if name not in methods:
                raise UserError(f"The 'methods' of dataset '{label}' in grid '{grid.name}' name unknown method "
                                f"'{name}'{did_you_mean(name, methods)}.")
    kept, left_out = [], {}
    for cell in cells:
        allowed = grid.dataset_methods.get(cell.dataset.label)
        if allowed is None or cell.method in allowed:
            kept.append(cell)
        else:
            reason = (f"grid '{grid.name}' runs only {', '.join(allowed)} on {cell.dataset.label} (its `methods:` "
                      f"list there); add {cell.method} to that list to run it")
            left_out.setdefault(dataclasses.replace(cell, forget_class=None), reason)
    return kept, list(left_out.items())


def _select(cells: list[Cell], only: dict | list[dict], grid_name: str,
            failed: dict[str, PluginError] | None = None) -> list[Cell]:
    """The cells matching every --only filter (KEY=V1,V2: any of the values); a key, or a value no cell of the
    grid has, is a UserError with suggestions (for a method in `failed`, one whose __init__ raised, that error).
    A list of filter sets (a run folder several --only runs wrote into) selects the cells any of them selects."""
    if isinstance(only, list):
        chosen = {id(c) for filters in only for c in _select(cells, filters, grid_name, failed)}
        return [c for c in cells if id(c) in chosen]
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
        for name in unknown if key == "method" else []:
            if name in (failed or {}):
                raise UserError(f"--only method={name} matches no cell of grid '{grid_name}': "
                                f"{failed[name].message.splitlines()[0].rstrip('.')}; fix it to run '{name}'.")
        if unknown and key == "forget_class" and present == ["all"]:  # every cell is a one-round method's
            raise UserError(f"--only forget_class={unknown[0]} matches no cell of grid '{grid_name}': "
                            f"{_one_round(cells)}; use --only forget_class=all, or add a per-class method to the "
                            f"grid.")
        if unknown:
            raise UserError(f"--only {key}={unknown[0]} matches no cell of grid '{grid_name}'"
                            f"{did_you_mean(unknown[0], present)}; its {key} values are: {', '.join(present)}.")
    chosen = [c for c, v in zip(cells, values) if all(wanted[k] & v[k] for k in wanted)]
    if wanted and not chosen:
        others = [c for c, v in zip(cells, values) if all(wanted[k] & v[k] for k in wanted if k != "forget_class")]
        if "forget_class" in wanted and others and all(c.forget_class is None for c in others):
            raise UserError(f"The --only filters {', '.join(f'{k}={t}' for k, t in only.items())} match no cell of "
                            f"grid '{grid_name}' together: {_one_round(others)}; drop forget_class or use "
                            f"forget_class=all.")
        raise UserError(f"The --only filters {', '.join(f'{k}={t}' for k, t in only.items())} match no cell of "
                        f"grid '{grid_name}' together; drop one of them.")
    return chosen


def _one_round_left_out(cells: list[Cell], chosen: list[Cell], only: dict | list[dict],
                        grid_name: str) -> tuple[str, ...]:
    """The one-round methods whose cells (forget_class=all) a forget_class filter without 'all' left out, though
    the filter set's other keys choose them: `--only forget_class=1` runs no WF-Net, which a user may not expect."""
    left: set[str] = set()
    for filters in only if isinstance(only, list) else [only or {}]:
        classes = {v.strip() for v in str(filters.get("forget_class", "all")).split(",")}
        if "all" in classes:
            continue
        rest = {k: v for k, v in filters.items() if k != "forget_class"}
        left |= {c.method for c in (_select(cells, rest, grid_name) if rest else cells) if c.forget_class is None}
    return tuple(sorted(left - {c.method for c in chosen if c.forget_class is None}))


def _one_round(cells: list[Cell]) -> str:
    """Why a forget-class filter misses `cells`, all of them one-round methods' (part of a sentence)."""
    methods = sorted({c.method for c in cells})
    named = f"method {methods[0]} is" if len(methods) == 1 else f"methods {', '.join(methods)} are"
    return f"{named} one-round, each cell unlearning every forget class at once (forget_class=all)"


def grid_has_retrain(grid: Grid) -> bool:
    """Whether the grid runs the retrain method (so retrained models exist for distance metrics)."""
    return grid.methods == "all" or any(m.name == "retrain" for m in grid.methods)


def retrained_models(cells: list[Cell], grid: Grid, metrics: list[str]) -> dict[tuple, Cell]:
    """(group, forget class) → a retrain cell, for every retrained model `cells` need: their own retrain cells,
    and, where a metric compares with retrained models (the grid has retrain, or the metric's `train_missing`
    asks), a stand-in retrain cell for each other cell's classes. Groups whose recipe trains 0 epochs need none."""
    needed = {(c.group, c.forget_class): c for c in cells if c.method == "retrain"}
    if any(METRICS.get(m).uses_retrained and (grid_has_retrain(grid) or metric_settings(grid, m).get("train_missing"))
           for m in metrics):
        trains = {}  # recipe epochs per group (resolve_recipe reads recipes.yaml: once per group, not per cell)
        for cell in cells:
            if cell.group not in trains:
                trains[cell.group] = resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe).epochs > 0
            for c in cell.evaluated_classes:
                if trains[cell.group] and (cell.group, c) not in needed:
                    needed[cell.group, c] = dataclasses.replace(cell, method="retrain", params=(), forget_class=c,
                                                                forget_classes=(c,))
    return needed


def cell_key(cell: Cell, grid: Grid, info: MethodInfo, device: torch.device, files: dict | None = None) -> str:
    """The cache key of a cell's unlearning: its full config, which files its dataset reads (`files`,
    `dataset_identity`'s) and its pretrained weights' contents, the device type and precision it runs in, the
    plugin file's hash, library versions and harness code less the metrics package. Each metric's records are
    cached apart under `metric_key`, so a grid that adds or changes a metric computes that metric only."""
    recipe = resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe)
    return stable_hash({
        "dataset": cell.dataset.key_entry(), **({"files": files} if files else {}),
        "backbone": backbone_key(cell.backbone),
        "method": cell.method, "params": cell.params_dict, "seed": cell.seed, "forget_class": cell.forget_class,
        "forget_classes": cell.evaluated_classes, "recipe": dataclasses.asdict(recipe), "source": info.source_hash,
        "val_fraction": grid.val_fraction, **compute_setting(device),
        "versions": key_versions(), "code": code_hash(without=("metrics",)),
    })


def metric_key(key: str, grid: Grid, metric: str, code: str = "") -> str:
    """The cache key of one metric's records of the cell whose `cell_key` is `key`: the metric, its settings,
    the metrics package's code (`code`: its hash as a run planned it; default this process's) and, for a metric that
    compares with retrained models, whether the grid trains them anyway (`MetricContext.has_retrain`): a grid that
    adds the retrain method recomputes those metrics only, not every cell's unlearning."""
    compares = {"has_retrain": grid_has_retrain(grid)} if METRICS.get(metric).uses_retrained else {}
    return stable_hash({"cell": key, "metric": metric, "settings": metric_settings(grid, metric),
                        "code": code or code_hash("metrics"), **compares,
                        **({"versions": metric_library_versions()} if METRICS.get(metric).fits_sklearn else {})})


def study_setup(cell: Cell) -> dict:
    """What of a cell's dataset and backbone parameters tuned on it hold for: the dataset options that change its
    training or validation images and the backbone's spec with its pretrained weights' contents (not where files
    lie, nor the evaluation subsets), which labels leave out (e.g. `image_size`). Written with each study's result."""
    skipped = HOLDING_OPTIONS + ("path", "test_per_class", "train_eval_per_class")
    return {"dataset": {"name": cell.dataset.name,
                        **{k: v for k, v in cell.dataset.options_dict.items() if k not in skipped}},
            "backbone": {k: v for k, v in backbone_key(cell.backbone).items() if k != "pretrained"}}


def _check_tuned_setups(cells: list[Cell], grid: Grid) -> None:
    """Refuse a grid whose `tuned:` result chose a cell's parameters on another setup under the same dataset and
    backbone labels: another validation carve, another training recipe for the originals and retrained models the
    studies scored against, or (where the study recorded it) other dataset options or backbone weights."""
    tuned, checked = tuned_parameters(grid.tuned), set()
    conditions = tuning_conditions(grid.tuned) if tuned else {}
    for cell in cells:
        entry = tuned.get(cell.dataset.label, {}).get(cell.backbone.label, {}).get(cell.method, {})
        if not entry or (cell.dataset, cell.backbone, cell.method) in checked:
            continue
        checked.add((cell.dataset, cell.backbone, cell.method))
        where = f"The tuned parameters of {cell.method} on {cell.dataset.label}/{cell.backbone.label} in '{grid.tuned}'"
        then = "tune this grid (`run_bench.py tune`) or leave `tuned:` out."
        carve = conditions.get("val_fraction")
        uncarved = cell.dataset.options_dict.get("val_from") == "test"  # its validation split is no carve
        if isinstance(carve, (int, float)) and carve != grid.val_fraction and not uncarved:
            raise UserError(f"{where} were scored on a validation carve of {carve:g} of the training split, this "
                            f"grid carves {grid.val_fraction:g}: {then}")
        if isinstance(conditions.get("recipe"), dict):
            theirs = dataclasses.asdict(resolve_recipe(cell.dataset.name, cell.backbone, conditions["recipe"]))
            ours = dataclasses.asdict(resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe))
            differ = [f"{k} {theirs[k]} there, {ours[k]} here" for k in ours if ours[k] != theirs[k]]
            if differ:
                raise UserError(f"{where} were chosen against originals and retrained models of another training "
                                f"recipe ({'; '.join(differ)}): {then}")
        if "setup" not in entry:  # results written before setups were recorded: the labels say the rest
            continue
        ours, theirs = study_setup(cell), entry["setup"] if isinstance(entry["setup"], dict) else {}
        if theirs != ours:
            parts = {part: theirs.get(part) if isinstance(theirs.get(part), dict) else {} for part in ours}
            differ = sorted(f"{part} {k}" for part in ours for k in {*ours[part], *parts[part]}
                            if ours[part].get(k) != parts[part].get(k))
            raise UserError(f"{where} were chosen on another setup ({', '.join(differ)} differ): {then}")


def stage_retrained_counts(cells: list[Cell], grid: Grid, metrics: list[str]) -> dict[tuple, int]:
    """Group → how many retrained models its cells train (`stage_retrained`)."""
    return dict(Counter(group for group, _, _ in stage_retrained(cells, grid, metrics)))


def stage_retrained(cells: list[Cell], grid: Grid, metrics: list[str]) -> set[tuple]:
    """(group, forget class, replicate) of every retrained model the cells train: one a class where a metric or the
    retrain method needs it (`retrained_models`), and the replicates metrics declare (`Metric.replicates`): their
    further retrained replicates of each forget class, and the retrain method's reruns, which train replicates too."""
    trained = {(group, c, 0) for group, c in retrained_models(cells, grid, metrics)}
    for name in metrics:
        declare = METRICS.get(name).replicates
        if declare is None:
            continue
        reruns, numbers = declare(metric_settings(grid, name))
        for cell in cells:
            for c in cell.evaluated_classes:
                trained |= {(cell.group, c, k) for k in numbers}
                if cell.method == "retrain":
                    trained |= {(cell.group, c, k) for k in range(1, reruns + 1)}
    return trained


def stage_key_bases(p: Plan, grid: Grid) -> dict:
    """Group → the key base its stage models are cached under (`stages.stage_key_base`), as planned here."""
    from .execution import stage_dataset_key
    from .stages import stage_key_base

    bases = {}
    for cell in p.cells:
        if cell.group not in bases:
            recipe = resolve_recipe(cell.dataset.name, cell.backbone, grid.recipe)
            bases[cell.group] = stage_key_base(stage_dataset_key(cell.dataset, p.files.get(cell.dataset),
                                                                 grid.val_fraction), cell.backbone, recipe,
                                               cell.seed, p.device)
    return bases


def cached_originals(bases: dict, cache: Cache) -> set:
    """The groups (of `stage_key_bases`) whose original model the cache holds."""
    from .stages import stage_model_key

    return {g for g, base in bases.items() if cache.has_model("original", stage_model_key(base, "original", None))}


def stages_to_train(p: Plan, grid: Grid, retrained_models: set[tuple], cache: Cache) -> tuple[dict, dict, int, int]:
    """Group → the originals (0 or 1) and → the retrained models (`stage_retrained`'s) its cells need that the cache
    does not hold yet, with how many of each are cached: what a run will train, for the plan's cost estimate."""
    from .stages import stage_model_key

    bases = stage_key_bases(p, grid)
    cached = cached_originals(bases, cache)
    originals = {g: int(g not in cached) for g in bases}
    retrained = Counter()
    cached_retrained = 0
    for group, c, k in retrained_models:
        if cache.has_model("retrained", stage_model_key(bases[group], "retrained", c, k)):
            cached_retrained += 1
        else:
            retrained[group] += 1
    return originals, dict(retrained), len(bases) - sum(originals.values()), cached_retrained


def describe_plan(grid: Grid, p: Plan, cache: Cache, metrics: list[str], data_root: str | None = None,
                  cached: int | None = None) -> str:
    """A human-readable plan: cells per method, stages to train, what is cached (`cached`: the count where the
    caller has looked it up already), cost and memory estimates."""
    lines = [f"grid '{grid.name}': {len(p.cells)} cells to run, {len(p.skipped)} skipped"]
    per_method = Counter(c.method for c in p.cells)
    if cached is None:
        keys = [cell_key(c, grid, p.methods[c.method], p.device, p.files.get(c.dataset)) for c in p.cells]
        cached = sum(cache.cell_records(key, c, {m: metric_key(key, grid, m) for m in metrics}) is not None
                     for key, c in zip(keys, p.cells))
    for method, n in sorted(per_method.items()):
        kind = "per class" if p.methods[method].cls.per_class else "one round for all classes"
        lines.append(f"  {method:<22} {n:4d} cells ({kind})")
    groups = {c.group for c in p.cells}
    trained = stage_retrained(p.cells, grid, metrics)
    retrains = dict(Counter(group for group, _, _ in trained))
    originals, to_retrain, originals_cached, retrained_cached = stages_to_train(p, grid, trained, cache)
    lines.append(f"stages: {len(groups)} original models, {sum(retrains.values())} retrained models (shared; "
                 f"cached: {originals_cached} and {retrained_cached})")
    lines.append(f"cached cells: {cached} of {len(p.cells)}")
    lines += plan_estimates(grid, p.cells, retrains, data_root, cache.root, p.device, (originals, to_retrain))
    for cell, reason in p.skipped[:20]:
        lines.append(f"  skipped {cell.describe()}: {reason}")
    if len(p.skipped) > 20:
        lines.append(f"  … and {len(p.skipped) - 20} more skipped cells")
    for err in p.plugin_errors:
        verb = "failed to import" if err.kind == "import" else "rejected"
        lines.append(f"plugin {err.source} {verb}: {err.message.splitlines()[0]}")
    return "\n".join(lines)
