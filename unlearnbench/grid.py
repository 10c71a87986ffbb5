"""Grids: a YAML spec (datasets × backbones × methods × parameters × seeds × forget classes) → cells."""
from __future__ import annotations

import dataclasses

import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .config import check_keys, check_like_default, from_mapping, read_resource_yaml, read_yaml
from .data import (AUGMENTATIONS, DATASETS, DEFAULT_VAL_FRACTION, PER_CLASS_OPTIONS, STORAGES, check_val_source,
                   memory_budget_bytes)
from .discovery import MethodInfo, get_method
from .errors import UserError, did_you_mean, error_reason
from .models import BACKBONES, BackboneSpec

SEED_LIMIT = 2 ** 32  # seeds are in [0, 2^32), the range every RNG the harness seeds accepts

GRID_KEYS = ("name", "description", "datasets", "backbones", "methods", "seeds", "forget_classes",
             "recipe", "metrics", "metric_settings", "val_fraction", "slurm", "tuning", "tuned")


HOLDING_OPTIONS = ("storage", "memory_budget_gb")  # how the images are held, not which: never in a cache key
# which images metrics, stopping rules and tuning read, never what stage models train on: not in stage keys
EVALUATION_OPTIONS = ("test_per_class", "train_eval_per_class", "val_per_class")


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset name plus loader options (e.g. a tree `path`, an `image_size`)."""

    name: str
    options: tuple = ()

    @property
    def options_dict(self) -> dict:
        return dict(self.options)

    def key_entry(self, *without: str) -> dict:
        """This entry as a cache key's part, without the options that hold the data (and those in `without`)."""
        dropped = HOLDING_OPTIONS + without
        return {"name": self.name, "options": tuple(kv for kv in self.options if kv[0] not in dropped)}

    @property
    def label(self) -> str:
        """The name in records and tables; a training subset is named, e.g. `mnist-1000perclass`, and so are the
        validation and evaluation subsets: `mnist-400perclass-val100perclass`, `imagenet-test5perclass`,
        `imagenet-traineval10perclass`, and validation taken from the test images: `imagenet-valfromtest-…`."""
        options = self.options_dict
        train, val, test = (options.get(f"{split}_per_class") for split in ("train", "val", "test"))
        train_eval = options.get("train_eval_per_class")
        return (self.name + (f"-{train}perclass" if train else "") + (f"-val{val}perclass" if val else "")
                + ("-valfromtest" if options.get("val_from") == "test" else "")
                + (f"-test{test}perclass" if test else "") + (f"-traineval{train_eval}perclass" if train_eval else ""))


@dataclass(frozen=True)
class MethodEntry:
    """A method and its parameter overrides: a list value sweeps, anything else is fixed."""

    name: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    name: str
    datasets: list[DatasetEntry]
    backbones: list[BackboneSpec]
    methods: list[MethodEntry] | str
    seeds: list[int]
    forget_classes: list[int] | str
    recipe: dict
    metrics: list[str] | str
    metric_settings: dict
    val_fraction: float
    description: str = ""
    slurm: dict = field(default_factory=dict)
    tuning: dict = field(default_factory=dict)
    tuned: str = ""
    dataset_methods: dict = field(default_factory=dict)  # dataset label → the only methods run on it (`methods:`)


@dataclass(frozen=True)
class Cell:
    """One unit of work: a method with fixed parameters on one dataset × backbone × seed, for one forget
    class (per-class methods) or for all of them in one run (`forget_class` None)."""

    dataset: DatasetEntry
    backbone: BackboneSpec
    method: str
    params: tuple
    seed: int
    forget_class: int | None
    forget_classes: tuple[int, ...]

    @property
    def params_dict(self) -> dict:
        return dict(self.params)

    @property
    def params_json(self) -> str:
        return json.dumps(self.params_dict, sort_keys=True)

    @property
    def evaluated_classes(self) -> list[int]:
        """The forget classes this cell unlearns and is scored on: its class, or all of them for one round."""
        return [self.forget_class] if self.forget_class is not None else list(self.forget_classes)

    @property
    def group(self) -> tuple:
        """Cells sharing data and the original model: (dataset, backbone, seed)."""
        return (self.dataset, self.backbone, self.seed)

    def describe(self) -> str:
        target = "all classes" if self.forget_class is None else f"class {self.forget_class}"
        return f"{self.dataset.label}/{self.backbone.label}/{self.method} {self.params_json} seed {self.seed} {target}"


def builtin_grids() -> list[str]:
    """Names of the grids shipped with the package."""
    folder = resources.files("unlearnbench").joinpath("configs/grids")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_grid(name_or_path: str, run_config: bool = False) -> Grid:
    """Load a shipped grid by name or a YAML file by path, validating every key and value; with `run_config`, a run
    folder's config.yaml stands for the grid it records (the grid that run ran)."""
    if not str(name_or_path).strip():  # Path("") is the current folder
        raise UserError(f"Give a grid: a shipped name ({', '.join(builtin_grids())}) or a YAML file; got an empty name.")
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        raw = read_yaml(path)
        where = str(path)
        if run_config and isinstance(raw, dict) and {"command", "grid"} <= raw.keys():
            raw, where = raw["grid"], f"the grid of {path}"
    elif name_or_path in builtin_grids():
        where = f"grid '{name_or_path}'"
        raw = read_resource_yaml(f"configs/grids/{name_or_path}.yaml")
    else:
        raise UserError(f"Unknown grid '{name_or_path}'{did_you_mean(name_or_path, builtin_grids())}; "
                        f"give a YAML file or one of: {', '.join(builtin_grids())}.")
    return parse_grid(raw, where)


def parse_grid(raw: Any, where: str = "the grid") -> Grid:
    """Validate a grid mapping (as read from YAML) into a Grid."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a YAML mapping with keys such as datasets, backbones, methods.")
    if {"command", "grid"} <= raw.keys():  # (each would read as "Unknown key 'command'" / "'objective'")
        raise UserError(f"{where} is a run folder's config.yaml, not a grid: rerun that run with `--out <its "
                        f"folder> --retry-failed`, or pass a grid file.")
    if {"tuned", "objective"} <= raw.keys():
        raise UserError(f"{where} is a tuning result (tuned.yaml), not a grid: name it in a grid's 'tuned:'.")
    check_keys(raw, GRID_KEYS, where)
    name = raw.get("name", Path(where).stem)
    name = str(name) if isinstance(name, int) and not isinstance(name, bool) else name  # `name: 2024`
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise UserError(f"'name' in {where} must be one folder name (run and tuning folders are named after it: no "
                        f"'/' or '\\', not '.' or '..'), got {name!r}.")
    for required in ("datasets", "backbones"):
        if not raw.get(required):
            raise UserError(f"{where} needs a non-empty '{required}' list.")
    raw_datasets = _as_list(raw["datasets"], "datasets", where)
    datasets = [_dataset_entry(d, where) for d in raw_datasets]
    dataset_methods = {entry.label: _dataset_methods(d, where) for entry, d in zip(datasets, raw_datasets)
                       if isinstance(d, dict) and "methods" in d}
    labels = [d.label for d in datasets]
    for label in labels:  # records and tables name a dataset by its label: two alike would be pooled into one
        if labels.count(label) > 1:
            raise UserError(f"Dataset '{label}' appears {labels.count(label)} times in {where} (its records and "
                            f"tables name it by that label, which its path and image_size do not change); list it "
                            f"once, or run each in a grid of its own.")
    backbones = [_backbone_spec(b, where) for b in _as_list(raw["backbones"], "backbones", where)]
    methods = raw.get("methods", "all")
    if methods != "all":
        methods = [_method_entry(m, where) for m in _as_list(methods, "methods", where)]
        if not methods:
            raise UserError(f"'methods' in {where} must be 'all' or a non-empty list of method names, got [].")
        runs = {m.name for m in methods}
        for label, names in dataset_methods.items():  # checked here, not after --methods has replaced the list
            for name in names:
                if name not in runs:
                    raise UserError(f"The 'methods' of dataset '{label}' in {where} name {name}, which the grid "
                                    f"does not run{did_you_mean(name, runs)}; add it to the grid's methods or remove "
                                    f"it there.")
    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) < len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < SEED_LIMIT for s in seeds)):
        raise UserError(f"'seeds' in {where} must be a non-empty list of distinct integers in [0, 2^32), "
                        f"got {seeds!r}.")
    classes = raw.get("forget_classes", "all")
    if classes != "all" and (not isinstance(classes, list) or not classes or len(set(classes)) < len(classes)
                             or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes)):
        raise UserError(f"'forget_classes' in {where} must be 'all' or a list of distinct class indices, "
                        f"got {classes!r}.")
    metrics = raw.get("metrics", "all")
    if metrics != "all" and not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
        raise UserError(f"'metrics' in {where} must be 'all' or a non-empty list of metric names, got {metrics!r}.")
    for key in ("recipe", "metric_settings", "slurm", "tuning"):
        if not isinstance(raw.get(key, {}), dict):
            raise UserError(f"'{key}' in {where} must be a mapping, got {raw[key]!r}.")
    from .training import check_recipe_sections, resolve_recipe

    check_recipe_sections(raw.get("recipe", {}), [d.name for d in datasets], where)
    for dataset, backbone in itertools.product(datasets, backbones):  # every recipe's values, before any work
        resolve_recipe(dataset.name, backbone, raw.get("recipe", {}))
    from .tuning import TuningSettings

    from_mapping(TuningSettings, raw.get("tuning", {}), f"the tuning section of {where}")  # misspelt keys fail here
    tuned = raw.get("tuned", "")
    if not isinstance(tuned, str):
        raise UserError(f"'tuned' in {where} must be the name of a shipped tuning result or a path to a tuned.yaml, "
                        f"got {tuned!r}.")
    val_fraction = raw.get("val_fraction", DEFAULT_VAL_FRACTION)
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise UserError(f"'val_fraction' in {where} must be a number between 0 and 1, got {val_fraction!r}.")
    return Grid(
        name=name, datasets=datasets, backbones=backbones, methods=methods,
        seeds=seeds, forget_classes=classes, recipe=raw.get("recipe", {}), metrics=metrics,
        metric_settings=raw.get("metric_settings", {}), val_fraction=float(val_fraction),
        description=str(raw.get("description", "")), slurm=raw.get("slurm", {}), tuning=raw.get("tuning", {}),
        tuned=tuned, dataset_methods=dataset_methods,
    )


def with_methods(grid: Grid, text: str) -> Grid:
    """`grid` with its methods replaced (the --methods flag): 'all' (every discovered method) or comma-separated
    names; a name the grid lists keeps the grid's parameter overrides."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):  # an empty name: a stray comma, or nothing given
        raise UserError(f"--methods expects 'all' or comma-separated method names such as wfnet,retrain, got "
                        f"{text!r}.")
    if names == ["all"]:
        return dataclasses.replace(grid, methods="all")
    listed = {} if grid.methods == "all" else {m.name: m for m in grid.methods}
    return dataclasses.replace(grid, methods=[listed.get(n, MethodEntry(n)) for n in dict.fromkeys(names)])


def _as_list(value: Any, key: str, where: str) -> list:
    if isinstance(value, (str, dict)):
        return [value]
    if not isinstance(value, list):
        raise UserError(f"'{key}' in {where} must be a list, got {value!r}.")
    return value


def _dataset_entry(value: Any, where: str) -> DatasetEntry:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError(f"A dataset in {where} must be a name or a mapping with a 'name' string, got {value!r}.")
    DATASETS.get(value["name"])
    check_keys(value, ("name", "path", "image_size", "augment", *PER_CLASS_OPTIONS, "val_from", "storage",
                       "memory_budget_gb", "methods"), f"dataset '{value['name']}' of {where}")
    for key in PER_CLASS_OPTIONS:
        per_class = value.get(key)
        if per_class is not None and (not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1):
            raise UserError(f"'{key}' of dataset '{value['name']}' in {where} must be an integer ≥ 1, "
                            f"got {per_class!r}.")
    check_val_source(value["name"], value.get("val_from", "train"), value.get("test_per_class"), f" in {where}")
    if value.get("storage", "auto") not in STORAGES:
        raise UserError(f"'storage' of dataset '{value['name']}' in {where} must be one of {', '.join(STORAGES)}, "
                        f"got {value['storage']!r}.")
    memory_budget_bytes(value)
    tree_options = [k for k in ("path", "image_size", "augment") if k in value]
    if tree_options and not DATASETS.get(value["name"]).decodes_to_file:
        raise UserError(f"'{tree_options[0]}' of dataset '{value['name']}' in {where} applies only to ImageFolder "
                        f"datasets ({', '.join(n for n in DATASETS.names() if DATASETS.get(n).decodes_to_file)}); "
                        f"remove it (this dataset is found under --data-root).")
    if not isinstance(value.get("path", ""), str):
        raise UserError(f"'path' of dataset '{value['name']}' in {where} must be a folder path (a string), "
                        f"got {value['path']!r}.")
    size = value.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 8):
        raise UserError(f"'image_size' of dataset '{value['name']}' in {where} must be an integer ≥ 8 (pixels), "
                        f"got {size!r}.")
    if "augment" in value and value["augment"] not in AUGMENTATIONS:
        raise UserError(f"'augment' of dataset '{value['name']}' in {where} must be one of "
                        f"{', '.join(AUGMENTATIONS)}, got {value['augment']!r}.")
    # `val_from: train` is the default: dropped, so that it keys and names the dataset as leaving it out does
    options = tuple(sorted((k, v) for k, v in value.items()
                           if k not in ("name", "methods") and (k, v) != ("val_from", "train")))
    return DatasetEntry(value["name"], options)


def _dataset_methods(value: dict, where: str) -> tuple[str, ...]:
    """A dataset's `methods:`: the only methods the grid runs on it (the paper's ImageNet protocol: no per-class
    method there); the grid's other methods are skipped on it with that reason."""
    names = value["methods"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"'methods' of dataset '{value['name']}' in {where} must be a non-empty list of method "
                        f"names, got {names!r}.")
    return tuple(names)


def _backbone_spec(value: Any, where: str) -> BackboneSpec:
    if isinstance(value, str):
        value = {"name": value}
    spec = from_mapping(BackboneSpec, value, f"a backbone of {where}")
    BACKBONES.get(spec.name)
    if not (0 < spec.width < math.inf and 0 < spec.depth < math.inf):
        raise UserError(f"Backbone '{spec.name}' in {where} needs a finite width > 0 and depth > 0, got width "
                        f"{spec.width!r}, depth {spec.depth!r}.")
    for option in ("patch", "depth"):  # a CNN's blocks are fixed: set, either would only rename it
        if getattr(spec, option) != getattr(BackboneSpec, option) and spec.family != "vit":
            raise UserError(f"'{option}' of backbone '{spec.name}' in {where} applies only to ViT backbones "
                            f"({', '.join(n for n in BACKBONES.names() if BACKBONES.get(n).family == 'vit')}); "
                            f"remove it.")
    if (spec.mean is None) != (spec.std is None):
        raise UserError(f"Backbone '{spec.name}' in {where} gives '{'mean' if spec.std is None else 'std'}' without "
                        f"'{'std' if spec.std is None else 'mean'}': its weights' input normalisation needs both.")
    if spec.mean is not None and not (
            len(spec.mean) == len(spec.std) > 0 and all(math.isfinite(m) for m in spec.mean)
            and all(0 < s < math.inf for s in spec.std)):
        raise UserError(f"'mean' and 'std' of backbone '{spec.name}' in {where} must be lists of one finite number a "
                        f"channel, of equal length, each std > 0; got {list(spec.mean)} and {list(spec.std)}.")
    if spec.patch is not None and spec.patch < 1:
        raise UserError(f"'patch' of backbone '{spec.name}' in {where} must be an integer ≥ 1 (pixels), "
                        f"got {spec.patch!r}.")
    return spec


def _method_entry(value: Any, where: str) -> MethodEntry:
    if isinstance(value, str):
        return MethodEntry(value)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError(f"A method in {where} must be a name or a mapping with a 'name' string, got {value!r}.")
    check_keys(value, ("name", "params"), f"method '{value['name']}' of {where}")
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise UserError(f"'params' of method '{value['name']}' in {where} must be a mapping, got {params!r}.")
    return MethodEntry(value["name"], params)


def expand(grid: Grid, methods: dict[str, MethodInfo], num_classes: dict[str, int | None]) -> list[Cell]:
    """All cells of `grid`; `num_classes` maps each dataset name to its class count (None: known after loading)."""
    entries = [MethodEntry(n) for n in methods] if grid.methods == "all" else grid.methods
    tuned = tuned_parameters(grid.tuned)
    cells: list[Cell] = []
    for dataset, backbone, entry, seed in itertools.product(grid.datasets, grid.backbones, entries, grid.seeds):
        info = get_method(methods, entry.name)
        n = num_classes.get(dataset.name)
        classes = forget_classes(grid.forget_classes, n, dataset.name)
        chosen = tuned.get(dataset.label, {}).get(backbone.label, {}).get(entry.name, {}).get("params", {})
        for params in parameter_sets(info, backbone, entry.params, chosen):
            per_class = [(c,) for c in classes] if info.cls.per_class else [(None,)]
            for (c,) in per_class:
                cells.append(Cell(dataset, backbone, entry.name, params, seed, c, tuple(classes)))
    seen: set[str] = set()
    for cell in cells:  # a cell's description is the identity its records and tables hold it by
        if cell.describe() in seen:
            raise UserError(f"Grid '{grid.name}' holds the cell {cell.describe()} twice (a backbone, method or "
                            f"parameter value listed twice); list each once.")
        seen.add(cell.describe())
    return cells


def forget_classes(spec: list[int] | str, num_classes: int | None, dataset: str) -> list[int]:
    """The forget classes for a dataset with `num_classes` classes; out-of-range classes are a UserError."""
    if spec == "all":
        if num_classes is None:
            raise UserError(f"Dataset '{dataset}' has an unknown number of classes; list 'forget_classes' explicitly.")
        return list(range(num_classes))
    bad = [c for c in spec if c < 0 or (num_classes is not None and c >= num_classes)]
    if bad:
        raise UserError(f"Forget class {bad[0]} is outside dataset '{dataset}', whose classes are 0…{(num_classes or 1) - 1}.")
    return sorted(set(spec))


def parameter_sets(info: MethodInfo, backbone: BackboneSpec, overrides: dict, tuned: dict | None = None) -> list[tuple]:
    """Expand a method's parameters: defaults for `backbone`, then the `tuned` values chosen for this dataset ×
    backbone, then the grid's overrides; list values sweep."""
    method = info.cls()
    defaults = method.default_parameters(backbone)
    if overrides and not defaults:
        raise UserError(f"Method '{info.name}' takes no parameters; remove '{next(iter(overrides))}' from its params.")
    check_keys(overrides, defaults, f"the parameters of method '{info.name}'")
    check_keys(tuned or {}, defaults, f"the tuned parameters of method '{info.name}' (re-run `run_bench.py tune`)")
    for key, value in (tuned or {}).items():  # where the value comes from the tuned file, the sentence says so
        if key not in overrides:
            check_like_default(value, defaults[key], f"Parameter '{key}' of method '{info.name}' in the grid's "
                                                     f"`tuned:` result")
    checked = {}
    for key, value in overrides.items():
        if value == []:
            raise UserError(f"Parameter '{key}' of method '{info.name}' sweeps an empty list; give at least one value.")
        items = [check_like_default(item, defaults[key], f"Parameter '{key}' of method '{info.name}'")
                 for item in (value if isinstance(value, list) else [value])]
        checked[key] = items if isinstance(value, list) else items[0]
    overrides = checked
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in {**defaults, **(tuned or {}), **overrides}.items()}
    keys = sorted(axes)
    sets = [tuple(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]
    for params in sets:
        try:
            method.check_parameters(dict(params))
        except UserError:
            raise
        except Exception as exc:  # a bug in the method's own check: one sentence naming it, not a traceback
            raise UserError(f"Method '{info.name}' in {info.source}: check_parameters raised {error_reason(exc)}; "
                            f"fix that method or leave it out of the grid.") from None
    return sets


def tuned_file(name_or_path: str) -> Path | None:
    """The tuned.yaml a grid's `tuned:` names: a shipped result (configs/tuned/<name>.yaml), a path, or a tuning
    folder holding one (what `tune --out` wrote); None for ''."""
    if not name_or_path:
        return None
    shipped = resources.files("unlearnbench").joinpath(f"configs/tuned/{name_or_path}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "tuned.yaml").is_file():
            return path / "tuned.yaml"
        raise UserError(f"The tuned parameters '{name_or_path}' are a folder without a tuned.yaml; name the "
                        f"tuned.yaml of a `tune --out` folder, or that folder once its tuning has written one.")
    folder = resources.files("unlearnbench").joinpath("configs/tuned")
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []
    raise UserError(f"The tuned parameters '{name_or_path}' are neither a file nor a shipped tuning result"
                    f"{did_you_mean(name_or_path, names)}; shipped: {', '.join(names) or 'none'}.")


def tuning_conditions(name_or_path: str) -> dict:
    """What a tuned.yaml's studies were run under, as `run_bench.py tune` records it: `val_fraction` (the
    validation carve they scored on) and `recipe` (the tuning grid's recipe overrides, which trained the originals
    and retrained models); {} for a grid that names no result or a file that records neither."""
    path = tuned_file(name_or_path)
    raw = read_yaml(path) if path is not None else None
    return {k: raw[k] for k in ("val_fraction", "recipe") if k in raw} if isinstance(raw, dict) else {}


def tuned_parameters(name_or_path: str) -> dict:
    """{dataset label: {backbone label: {method: {'params': {...}, 'tuning_seconds': s, …}}}} from a tuned.yaml
    written by `run_bench.py tune`; {} when the grid names none."""
    path = tuned_file(name_or_path)
    if path is None:
        return {}
    raw = read_yaml(path)
    tuned = raw.get("tuned") if isinstance(raw, dict) else None
    entries = [(d, b, m, e) for d, backbones in (tuned or {}).items() if isinstance(backbones, dict)
               for b, methods in backbones.items() if isinstance(methods, dict) for m, e in methods.items()]
    shaped = isinstance(tuned, dict) and all(isinstance(b, dict) and all(isinstance(m, dict) for m in b.values())
                                             for b in tuned.values())
    if not shaped or not all(isinstance(e, dict) and isinstance(e.get("params"), dict) for *_, e in entries):
        raise UserError(f"{path} is not a tuning result: it needs a 'tuned' mapping dataset → backbone → method → "
                        f"{{params: {{...}}, tuning_seconds: ...}}, as `run_bench.py tune` writes.")
    return tuned
