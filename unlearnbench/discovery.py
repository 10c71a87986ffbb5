"""Find `Unlearner` subclasses: in the shipped plugin packages (`unlearnbench.methods`, `unlearnbench.baselines`,
the source tree's methods/ and baselines/), in folders named by --plugins or $UNLEARNBENCH_PLUGINS, and through
entry points. Nothing is imported from the working directory unless it is named.

Each plugin folder is imported as a package, so a plugin file may import its folder's building blocks relatively
(`from ._finetuning import finetune`). A method's `source_hash` covers its file and every file of a plugin folder it
imports, directly or not (its import closure): editing WF-Net's layers changes only WF-Net's hash, editing the
baselines' fine-tuning loop only the hashes of the baselines that import it.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
import types
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .errors import UserError, did_you_mean
from .models import BACKBONES
from .search_space import declaration_problem
from .store import code_of
from .unlearner import Unlearner

# the paper's methods by the paper's names (every table and figure uses them), in the paper's order
PAPER_METHODS = {"original": "Original", "retrain": "Retrained", "random_labels": "Random Labels",
                 "negative_gradient": "Negative Gradients", "wfnet": "WF-Net"}

ENTRY_POINT_GROUP = "unlearnbench.methods"
SHIPPED_PACKAGES = ("unlearnbench.methods", "unlearnbench.baselines")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MethodInfo:
    """A discovered method: its class, the file that defines it, the plugin files that file imports (its import
    closure, itself excluded) and the hash of all of them."""

    name: str
    cls: type[Unlearner]
    source: str
    source_hash: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginError:
    """A plugin file that failed to import, declares a malformed method or whose method raised when planned: the
    other methods still run."""

    source: str
    message: str
    kind: str = "import"  # or "declaration": imported, but a class's name, parameters or search space are malformed
    # or "runtime": a method's __init__ or skip() raised while a run was planned
    method: str | None = None  # the method it is about, where it names one


def _shipped_package(name: str) -> tuple[str, Path]:
    """Import a shipped plugin package; in a source tree that was never installed, load it from the top-level
    folder of the same name."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError:
        module = _folder_module(name, PROJECT_ROOT / name.rsplit(".", 1)[1])
    return name, Path(module.__path__[0]).resolve()


def _folder_module(name: str, folder: Path) -> types.ModuleType:
    """Register `folder` as the package `name` (running its __init__.py if it has one)."""
    if name in sys.modules:
        return sys.modules[name]
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    sys.modules[name] = module
    return module


_IMPORTED: dict[str, tuple[int, int] | None] = {}  # a plugin module's file → (size, mtime_ns) when imported here


def _plugin_modules(packages: list[tuple[str, Path]]) -> dict[str, str]:
    """{module name: its file} of the plugin packages' modules this process has imported."""
    names = [name for name, _ in packages]
    return {m: module.__file__ for m, module in list(sys.modules.items())
            if any(m == n or m.startswith(n + ".") for n in names) and getattr(module, "__file__", None)}


def _file_state(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _import_afresh(packages: list[tuple[str, Path]]) -> bool:
    """Drop from sys.modules each plugin package one of whose imported files changed since this process imported
    it, so that discovery imports it again and its methods run the code their cells' keys hash: a second run in one
    process (the Python API, a notebook) ran the first run's import under the edited files' key, and cached the
    old code's records there. True when one was dropped. (A package importing another plugin folder's files is
    imported again when its own files change.)"""
    stale = {n for m, f in _plugin_modules(packages).items() if f in _IMPORTED and _IMPORTED[f] != _file_state(f)
             for n, _ in packages if m == n or m.startswith(n + ".")}
    for m, f in _plugin_modules([(n, Path()) for n in stale]).items():
        del sys.modules[m]
        _IMPORTED.pop(f, None)
        with contextlib.suppress(OSError, ValueError, NotImplementedError):  # its bytecode may match the edit's
            Path(importlib.util.cache_from_source(f)).unlink(missing_ok=True)  # size and (whole-second) time
    if stale:
        importlib.invalidate_caches()
    return bool(stale)


def _remember_imports(packages: list[tuple[str, Path]]) -> None:
    """Record the state of each plugin file as discovery imported it (`_import_afresh` compares with it)."""
    for f in _plugin_modules(packages).values():
        _IMPORTED.setdefault(f, _file_state(f))


def plugin_packages(extra: list[str | Path] | None = None) -> list[tuple[str, Path]]:
    """(package name, folder) of every plugin folder searched: the shipped packages, then the folders in
    $UNLEARNBENCH_PLUGINS and `extra` (which must exist), each imported as its own package."""
    named = [Path(p).expanduser() for p in os.environ.get("UNLEARNBENCH_PLUGINS", "").split(os.pathsep) if p]
    named += [Path(p).expanduser() for p in extra or []]
    for folder in named:
        if not folder.is_dir():
            raise UserError(f"Plugin folder {folder} {'is a file' if folder.exists() else 'does not exist'}; give "
                            f"the folder that holds the method files.")
    packages = dict((folder, name) for name, folder in map(_shipped_package, SHIPPED_PACKAGES))
    for folder in (p.resolve() for p in named):
        packages.setdefault(folder, f"unlearnbench_plugins_{hashlib.sha1(str(folder).encode()).hexdigest()[:10]}")
    return [(name, folder) for folder, name in packages.items()]


def import_closure(path: Path, folders: dict[str, Path | list[Path]]) -> list[Path]:
    """The plugin-folder files `path` imports, directly or through other such files, found by reading their
    import statements: relative imports, and absolute ones of a package in `folders` ({package name: its folder,
    or a namespace package's folders})."""
    seen: list[Path] = []
    todo = [path.resolve()]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        try:
            imports = _import_statements(current.read_text(), str(current))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in imports:
            for module in _imported_modules(node, current, folders):
                todo += [f for f in _module_files(module) if f not in seen]
    return sorted(seen[1:])


@functools.lru_cache(maxsize=4096)
def _import_statements(source: str, filename: str) -> tuple[ast.AST, ...]:
    """The import statements of a module's source text. Memoised by the text: a run discovers the methods several
    times (planning, each worker, the report), and parsing every plugin file each time cost ~1 s a run."""
    return tuple(n for n in ast.walk(ast.parse(source, filename)) if isinstance(n, (ast.Import, ast.ImportFrom)))


def _imported_modules(node: ast.AST, current: Path, folders: dict[str, Path | list[Path]]) -> list[Path]:
    """Candidate module paths (without suffix) that an import node refers to."""
    if isinstance(node, ast.ImportFrom) and node.level:
        base = current.parent
        for _ in range(node.level - 1):
            base = base.parent
        target = base.joinpath(*node.module.split(".")) if node.module else base
        return [target, *(target / alias.name for alias in node.names)]
    if isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        return []
    found = []
    for dotted in names:
        for package, folder in folders.items():
            if dotted == package or dotted.startswith(package + "."):
                found += [base.joinpath(*dotted[len(package):].split(".")[1:])
                          for base in (folder if isinstance(folder, list) else [folder])]
    return found


def _module_files(stem: Path) -> list[Path]:
    return [f.resolve() for f in (stem.with_suffix(".py"), stem / "__init__.py") if f.is_file()]


def closure_hash(path: Path, closure: list[Path]) -> str:
    """Hash of the plugin file and its import closure (their code, `store.code_of`, and file names)."""
    digest = hashlib.sha256(code_of(path.read_bytes()))
    for f in closure:
        digest.update(f.name.encode() + b"\0" + code_of(f.read_bytes()))
    return digest.hexdigest()[:16]


def _load(package: str, path: Path) -> list[type[Unlearner]]:
    """The Unlearner subclasses `path` defines."""
    module = importlib.import_module(f"{package}.{path.stem}")
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Unlearner) and obj.__module__ == module.__name__]


def discover(extra_folders: list[str | Path] | None = None) -> tuple[dict[str, MethodInfo], list[PluginError]]:
    """Return {name: MethodInfo} for every method found, and the plugin files that failed to import."""
    methods: dict[str, MethodInfo] = {}
    errors: list[PluginError] = []
    packages = plugin_packages(extra_folders)
    installed = list(entry_points(group=ENTRY_POINT_GROUP))
    # an entry point's package (its module's top level, which its helpers share) is imported again when edited too;
    # never the harness itself
    modules = [(top, Path()) for top in sorted({ep.module.partition(".")[0] for ep in installed} - {__package__})]
    if _import_afresh(packages + modules):
        packages = plugin_packages(extra_folders)  # a shipped package dropped is imported again here
    folders = {name: folder for name, folder in packages}
    found: list[tuple[type[Unlearner], Path]] = []
    for package, folder in packages:
        try:
            _folder_module(package, folder)  # shipped packages are already imported: a no-op for them
        except (Exception, SystemExit) as exc:
            errors.append(PluginError(str(folder / "__init__.py"), f"{exc.__class__.__name__}: {exc}"))
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                classes = _load(package, path)
            except (Exception, SystemExit) as exc:  # a plugin that calls sys.exit() must not end the run
                errors.append(PluginError(str(path), f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"))
                continue
            found += [(cls, path) for cls in classes]
    for ep in installed:
        try:
            cls = ep.load()
        except (Exception, SystemExit) as exc:
            errors.append(PluginError(f"entry point {ep.name}", f"{exc.__class__.__name__}: {exc}"))
            continue
        found.append((cls, Path(inspect.getfile(cls)).resolve()))
    _remember_imports(packages + modules)
    for top, _ in modules:  # an entry point's package: its absolute imports of itself are in the closure too
        folders.setdefault(top, _package_folder(top))
    folders = {name: folder for name, folder in folders.items() if folder is not None}
    bases = {base for cls, _ in found for base in cls.__mro__[1:]}
    for cls, path in found:
        if not cls.name and (inspect.isabstract(cls) or cls in bases):
            continue  # a nameless base of methods (in any plugin file), not a method
        _add(methods, errors, cls, path, folders)
    return dict(sorted(methods.items())), errors


def _package_folder(name: str) -> list[Path] | None:
    """The folders of the installed package `name` (a namespace package's several; None for a plain module, or one
    that cannot be found)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return [Path(location).resolve() for location in locations] or None


def _add(methods: dict[str, MethodInfo], errors: list[PluginError], cls: type[Unlearner], path: Path,
         folders: dict[str, Path]) -> None:
    if not (isinstance(cls.name, str) and cls.name):
        problem = (f"has the name {cls.name!r}; a method's `name` must be a non-empty string" if cls.name else
                   "has no `name`: give it one (a nameless class is skipped as a base of methods when it is "
                   "abstract or a discovered class subclasses it, or when it lives in a file whose name starts with "
                   "'_')")
        errors.append(PluginError(str(path), f"Class {cls.__name__} in {path} {problem}.", "declaration"))
        return
    problem = declaration_problem(cls, {BACKBONES.get(name).family for name in BACKBONES.names()})
    if problem:
        errors.append(PluginError(str(path), f"Method '{cls.name}' in {path}: {problem}", "declaration", cls.name))
        return
    closure = import_closure(path, folders)
    info = MethodInfo(cls.name, cls, str(path), closure_hash(path, closure), tuple(map(str, closure)))
    previous = methods.get(info.name)  # the first found stays: a shipped method, then --plugins order
    if previous and previous.cls is not cls:
        where = (f" (class {cls.__qualname__}) has the name of class {previous.cls.__qualname__} in the same file"
                 if previous.source == info.source else f" has the name of the method in {previous.source}")
        errors.append(PluginError(str(path), f"Method '{cls.name}' in {path}{where}, which is kept; give it another "
                                  f"name.", "declaration", cls.name))
        return
    label = table_label(info.name, cls)
    twin = next((m for m in methods.values() if m.name != info.name and table_label(m.name, m.cls) == label), None)
    if twin:  # tables name methods by label: two rows of one label read as one method's
        errors.append(PluginError(str(path), f"Method '{cls.name}' in {path} has the label {label!r} of method "
                                  f"'{twin.name}' ({twin.source}), which is kept; give it another `label`.",
                                  "declaration", cls.name))
        return
    methods[info.name] = info


def table_label(name: str, cls: type[Unlearner]) -> str:
    """A method's name in tables and figures: the paper's for its methods, else its own `label`, else its name."""
    return PAPER_METHODS.get(name) or cls.card()["label"]


def get_method(methods: dict[str, MethodInfo], name: str, errors: list[PluginError] = ()) -> MethodInfo:
    """Look up a discovered method; an unknown name is a UserError with suggestions. Where `errors` hold that
    method's own error (rejected at discovery), the error says that instead; otherwise it names the plugin files
    whose classes are unknown (failed imports, nameless classes), as the method may be in one."""
    if name not in methods:
        own = [e.message.splitlines()[0] for e in errors if e.method == name]
        if own:
            raise UserError(f"{own[0].rstrip('.')}; fix it to run '{name}', or leave it out of the grid.")
        unread = [f"{e.source} ({e.message.splitlines()[0].rstrip('.')})" for e in errors
                  if e.kind == "import" or (e.kind == "declaration" and e.method is None)]
        hint = f"; it may be in a plugin file that failed: {'; '.join(unread)}" if unread else ""
        raise UserError(f"Unknown method '{name}'{did_you_mean(name, methods)}; discovered: "
                        f"{', '.join(methods)}{hint}.")
    return methods[name]
