"""Find `Unlearner` subclasses in plugin folders (methods/, baselines/, --plugins DIR) and entry points."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .errors import UserError, did_you_mean
from .unlearner import Unlearner

ENTRY_POINT_GROUP = "unlearnbench.methods"
DEFAULT_FOLDERS = ("methods", "baselines")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MethodInfo:
    """A discovered method: its class, the file that defines it and that file's content hash."""

    name: str
    cls: type[Unlearner]
    source: str
    source_hash: str


@dataclass(frozen=True)
class PluginError:
    """A plugin file that failed to import: the other methods still run."""

    source: str
    message: str


def plugin_folders(extra: list[str | Path] | None = None) -> list[Path]:
    """The folders searched: methods/ and baselines/ of the project and of the working directory (where they
    exist), then the folders in $UNLEARNBENCH_PLUGINS and `extra` (which must exist)."""
    defaults = [base / name for base in (PROJECT_ROOT, Path.cwd()) for name in DEFAULT_FOLDERS]
    named = [Path(p).expanduser() for p in os.environ.get("UNLEARNBENCH_PLUGINS", "").split(os.pathsep) if p]
    named += [Path(p).expanduser() for p in extra or []]
    for folder in named:
        if not folder.is_dir():
            raise UserError(f"Plugin folder {folder} does not exist.")
    return list(dict.fromkeys(p.resolve() for p in [*(d for d in defaults if d.is_dir()), *named]))


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _load_file(path: Path) -> list[type[Unlearner]]:
    module_name = f"unlearnbench_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return [
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Unlearner) and obj.__module__ == module_name and obj.name
    ]


def discover(extra_folders: list[str | Path] | None = None) -> tuple[dict[str, MethodInfo], list[PluginError]]:
    """Return {name: MethodInfo} for every method found, and the plugin files that failed to import."""
    methods: dict[str, MethodInfo] = {}
    errors: list[PluginError] = []
    for folder in plugin_folders(extra_folders):
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                classes = _load_file(path)
            except (Exception, SystemExit) as exc:  # a plugin that calls sys.exit() must not end the run
                errors.append(PluginError(str(path), f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"))
                continue
            for cls in classes:
                _add(methods, MethodInfo(cls.name, cls, str(path), file_hash(path)))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except (Exception, SystemExit) as exc:
            errors.append(PluginError(f"entry point {ep.name}", f"{exc.__class__.__name__}: {exc}"))
            continue
        source = Path(inspect.getfile(cls))
        _add(methods, MethodInfo(cls.name, cls, str(source), file_hash(source)))
    return dict(sorted(methods.items())), errors


def _add(methods: dict[str, MethodInfo], info: MethodInfo) -> None:
    previous = methods.get(info.name)
    if previous and previous.source != info.source:
        warnings.warn(f"Method '{info.name}' is defined in {previous.source} and {info.source}; using the latter.")
    methods[info.name] = info


def get_method(methods: dict[str, MethodInfo], name: str) -> MethodInfo:
    """Look up a discovered method; an unknown name is a UserError with suggestions."""
    if name not in methods:
        raise UserError(f"Unknown method '{name}'{did_you_mean(name, methods)}; discovered: {', '.join(methods)}.")
    return methods[name]
