"""Where results live: a content-addressed cache (models, cell records) and a run folder (config, log, records.csv)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .config import read_yaml
from .errors import UserError
from .seeds import derive_seed, file_digest, stable_hash  # noqa: F401  (their home before; imported from here too)

RECORD_COLUMNS = ["dataset", "backbone", "method", "params", "seed", "forget_class", "split", "metric", "value"]
FAILURE_COLUMNS = ["dataset", "backbone", "method", "params", "seed", "forget_class", "status", "reason", "traceback"]
PACKAGE_DIR = Path(__file__).resolve().parent


# Files and folders being written are named `.partial-<host>-<pid>-…` until renamed into place, so that what a
# process killed mid-write left (loky ends workers outright: their own cleanup never runs) can be told from what a
# live process is writing, and removed (`remove_dead_partials`).
PARTIAL = ".partial"
LEFT_FOR_SECONDS = 600  # a partial of a dead process is removed once unchanged this long: a pid in another pid
# namespace (containers sharing a host name and a cache) reads as dead, while a live writer changes its file


def _umask() -> int:
    try:  # Linux says it; elsewhere it is read by setting it, which changes it for a moment
        return int(re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.M)[1], 8)
    except (OSError, TypeError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


UMASK = _umask()


def partial_prefix() -> str:
    """The name prefix of a temporary file or folder this process writes (tempfile's prefix=)."""
    return f"{PARTIAL}-{socket.gethostname()}-{os.getpid()}-"


def give_umask_mode(path: str | Path) -> None:
    """Give `path` the mode a plain open() or mkdir() would have (temporary files and folders are made 0600 / 0700:
    a cache or run folder shared by a group was unreadable to its other members); left as it is where the file
    system refuses (vfat, some FUSE mounts)."""
    try:
        os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~UMASK)
    except OSError:
        pass


def publish(tmp: str | Path, path: Path) -> None:
    """Rename the finished temporary file `tmp` onto `path`, with the umask's mode (`give_umask_mode`)."""
    give_umask_mode(tmp)
    os.replace(tmp, path)


def remove_dead_partials(folder: Path) -> list[Path]:
    """Remove the temporary files and folders in `folder` and two levels below (a cache's models/<kind>/: not into
    an extracted dataset's 60,000 files) that processes of this host which no longer run left half-written (a decode
    of ImageNet killed midway leaves as much as the decoded set), once unchanged for LEFT_FOR_SECONDS; return those
    removed (one that cannot be, e.g. another user's, is left)."""
    removed = []
    for path in (p for depth in ("", "*/", "*/*/") for p in Path(folder).glob(f"{depth}{PARTIAL}-*")):
        match = re.fullmatch(rf"{re.escape(PARTIAL)}-(.+)-(\d{{1,9}})-.*", path.name)
        if not match or match[1] != socket.gethostname() or _alive(int(match[2])):
            continue  # another host's (a cache shared over the network), or still being written
        try:
            if time.time() - path.stat().st_mtime < LEFT_FOR_SECONDS:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=partial_prefix(), delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    publish(tmp.name, path)


PRESENTATION_ONLY = ("report", "cli.py", "launchers.py")  # code that cannot change a computed value
# Method packages a wheel installs inside unlearnbench/: each method's cells hash its own import closure instead
# (discovery.closure_hash), so editing one method never invalidates another's cells.
PLUGIN_PACKAGES = ("methods", "baselines")


@lru_cache(maxsize=None)
def code_hash(*modules: str, without: tuple[str, ...] = ()) -> str:
    """Hash of the named unlearnbench modules, a module file or a subpackage's every file (when none is named: all
    that can change results, less the top-level modules or subpackages named in `without`). Computed once per
    process: the code a process runs is the code it imported, whatever is edited on disk later."""
    if modules:
        files = [f for m in modules for f in (sorted((PACKAGE_DIR / m).rglob("*.py")) if (PACKAGE_DIR / m).is_dir()
                                              else [PACKAGE_DIR / f"{m}.py"])]
    else:
        skipped = set(PRESENTATION_ONLY + PLUGIN_PACKAGES) | set(without) | {f"{m}.py" for m in without}
        files = sorted(f for f in PACKAGE_DIR.rglob("*.py") if f.relative_to(PACKAGE_DIR).parts[0] not in skipped)
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(PACKAGE_DIR)).encode())
        digest.update(code_of(f.read_bytes()))
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1024)
def code_of(source: bytes) -> bytes:
    """A Python file's text without its comments and docstrings (whole lines of them dropped, a comment after code
    cut off), what the code hashes (`code_hash`, a method's `closure_hash`) cover: documenting code changes no key
    and no recorded method hash. Everything else counts as written, blank lines and string literals included; a file
    that does not parse counts by its bytes. A comment starts at the first '#' outside the string literals the syntax
    tree locates (tokenize took twice the time: ~0.5 s a process over the harness and methods); one between the parts
    of a string written over several lines ("a"  # note / "b") counts as code."""
    import ast

    try:
        tree = ast.parse(source.decode("utf-8"))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return source
    lines = re.split(rb"\r\n|\r|\n", source)  # as Python numbers lines (splitlines also breaks at \f, \v…)
    if lines[-1] == b"":
        lines.pop()
    inside: dict[int, list[tuple[int, int]]] = {}  # line index → byte spans of the string literals on it
    docstrings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))):
            for row in range(node.lineno - 1, node.end_lineno):
                start = node.col_offset if row == node.lineno - 1 else 0
                inside.setdefault(row, []).append((start, node.end_col_offset if row == node.end_lineno - 1 else
                                                   len(lines[row])))
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            doc = body[0]
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                docstrings.append(doc)
    for row, line in enumerate(lines):
        at = line.find(b"#")
        while at >= 0 and any(start <= at < end for start, end in inside.get(row, ())):
            at = line.find(b"#", at + 1)
        if at >= 0:
            lines[row] = line[:at].rstrip() or None  # a line of only a comment goes
    for doc in docstrings:
        first, last = lines[doc.lineno - 1] or b"", lines[doc.end_lineno - 1] or b""
        if not first[:doc.col_offset].strip() and not last[doc.end_col_offset:].strip():  # alone on its lines
            lines[doc.lineno - 1:doc.end_lineno] = [None] * (doc.end_lineno - doc.lineno + 1)
    return b"\n".join(line for line in lines if line is not None)


@lru_cache(maxsize=None)
def versions() -> dict:
    """Versions of the libraries that change results."""
    import numpy
    import timm
    import torchvision

    from . import __version__

    return {"unlearnbench": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "timm": timm.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def key_versions() -> dict:
    """The library versions in every cell's and stage model's key: those whose kernels and random streams make the
    values (numpy draws the validation carve, subsets and attacks' samples)."""
    return {k: versions()[k] for k in ("torch", "torchvision", "timm", "numpy")}


@lru_cache(maxsize=None)
def metric_library_versions() -> dict:
    """Versions of the libraries only metrics use (the probe's and membership attacks' fits), for the metric keys;
    read from the installed metadata, so a worker does not import them to key a cell."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"scikit-learn": version("scikit-learn")}
    except PackageNotFoundError:
        return {"scikit-learn": "absent"}


@lru_cache(maxsize=None)
def git_commit() -> str:
    """The project's git commit (with '-dirty' for uncommitted changes), or 'unknown' outside a checkout."""
    try:
        root = PACKAGE_DIR.parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device, threads: int | None = None) -> str:
    """The CUDA device's name, or 'cpu (N threads, model, instructions)' with the torch threads each worker used:
    CPU results depend on all three (reports/sota-spread: a Xeon and an EPYC train another VGG)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads or torch.get_num_threads()} threads, {cpu_model()})"


def same_device(recorded: str, now: str) -> bool:
    """Whether a device name a cache recorded names `now`: equal, or written before names held the CPU's model
    ('cpu (N threads, x86_64)'), which counts as this CPU at the same thread count."""
    older = re.fullmatch(r"cpu \((\d+) threads, [^,]*\)", recorded)
    return recorded == now or (older is not None and now.startswith(f"cpu ({older[1]} threads, "))


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; else the platform's word) and the vector instructions torch's CPU
    kernels dispatch to (AVX2, AVX512, NEON, …)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            name = _cpuinfo_name(cpuinfo.read())
    except OSError:
        name = ""
    return f"{name or platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}"


def _cpuinfo_name(text: str) -> str:
    """The first 'model name' (or 'Hardware', on some ARM boards) of a /proc/cpuinfo text, spaces collapsed; ''."""
    return next((" ".join(line.split(":", 1)[1].split()) for line in text.splitlines()
                 if line.lower().startswith(("model name", "hardware")) and ":" in line), "")


def writable_folder(path: str | Path, what: str) -> Path:
    """Create folder `path` if needed and return it; a path where files cannot be written is a UserError
    naming it as `what` (e.g. 'output folder')."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except FileExistsError:
        raise UserError(f"The {what} {path} is a file; pass a folder.") from None
    except NotADirectoryError:  # a folder above it is a file (e.g. --results-dir naming a file)
        above = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise UserError(f"Cannot make the {what} {path}: {above} above it is a file; pass a folder.") from None
    except OSError as exc:
        raise UserError(f"Cannot write to the {what} {path}: {exc.strerror or exc}.") from None
    return path


# metric settings that choose which values are recorded (their split, whether one is, extra rows beside the same
# values: ZRF's legacy rows, the SVC attack's per-feature rows), not how one is computed; relearn's max_epochs:
# merged runs keep each cap apart (at_largest_cap) and the captions say which
_SELECTING_SETTINGS = {"splits", "split", "eval_split", "train_missing", "legacy", "features"}


def config_differences(a: dict, b: dict, dataset: str) -> list[str]:
    """What two run configs (config.yaml) computed `dataset`'s values under differently, as far as both recorded
    it: device type and precision, the dataset's files (wherever they lie), the values applied of a tuned result,
    each metric's settings that change a value; what keeps a run folder, or a merged report, from pooling their
    results."""
    said = []
    ca, cb = (c.get("compute") if isinstance(c.get("compute"), dict) else {} for c in (a, b))
    shown = [k for k in ("device_type", "precision") if k in ca and k in cb]
    if any(ca[k] != cb[k] for k in shown):
        said.append(f"device and precision ({', '.join(str(ca[k]) for k in shown)} against "
                    f"{', '.join(str(cb[k]) for k in shown)})")
    fa, fb = ({k: v for k, v in c["files"].get(dataset).items() if k != "tree"}
              if isinstance(c.get("files"), dict) and isinstance(c["files"].get(dataset), dict) else {} for c in (a, b))
    if fa and fb and fa != fb:
        same_files = {k: v for k, v in fa.items() if k != "decoder"} == {k: v for k, v in fb.items() if k != "decoder"}
        said.append("image decoder (the decoding code, or Pillow's or torchvision's version)" if same_files else
                    "data files (other images, or their files changed between the runs)")
    ta, tb = (c.get("tuned_values") if isinstance(c.get("tuned_values"), dict) else {} for c in (a, b))
    retuned = sorted({k.split("/", 2)[-1] for k in ta.keys() & tb.keys()
                      if k.startswith(f"{dataset}/") and ta[k] != tb[k]})
    if retuned:  # 'dataset/backbone/method' → the values a run applied of its tuned result (runner.tuned_values)
        said.append(f"tuned parameters of {', '.join(retuned)} (tuned again between the runs)")
    ma, mb = (c.get("metric_settings") if isinstance(c.get("metric_settings"), dict) else {} for c in (a, b))
    for metric in sorted(ma.keys() & mb.keys()):
        sa, sb = (_value_settings(metric, m[metric]) for m in (ma, mb))
        other = [f"{k} {sa[k]!r} against {sb[k]!r}" for k in sorted(sa.keys() & sb.keys()) if sa[k] != sb[k]]
        if other:
            said.append(f"{metric} settings ({', '.join(other)})")
    return said


def _value_settings(metric: str, settings) -> dict:
    """A metric's recorded settings that change the values it records (see _SELECTING_SETTINGS); insertion/
    deletion's ranking 'both' records the per-matrix values under their names (the global ones under others)."""
    kept = {k: v for k, v in (settings if isinstance(settings, dict) else {}).items() if k not in _SELECTING_SETTINGS
            and not (metric == "relearn" and k == "max_epochs")}
    if metric == "insertion_deletion" and kept.get("ranking") == "both":
        kept["ranking"] = "per_matrix"
    return kept


def read_run_config(folder: str | Path) -> dict | None:
    """The config.yaml of the run in `folder`, or None when it has none; any other file is a UserError."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    config = read_yaml(path)
    if not isinstance(config, dict) or not isinstance(config.get("grid"), dict):
        raise UserError(f"{path} is not an unlearnbench run config: it has no 'grid' mapping.")
    for field, (valid, what) in _CONFIG_FIELDS.items():
        if config.get(field) is not None and not valid(config[field]):
            raise UserError(f"{path} is not an unlearnbench run config: its '{field}' must be {what}, got "
                            f"{config[field]!r}; fix or delete that field.")
    return config


def _mapping_of(valid):
    """A check: the value is a mapping of text keys to values that pass `valid`."""
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and valid(v) for k, v in value.items())


def _is_text(value) -> bool:
    return isinstance(value, str)


_filters = _mapping_of(lambda v: isinstance(v, (str, int, float)))  # --only key: values ("0,1", or 0 from the API)
# the fields --retry-failed and report read from a run's config.yaml → (check, what it must be)
_CONFIG_FIELDS = {
    **{f: (_is_text, "text") for f in ("command", "device", "data_root", "cache_dir", "precision", "git_commit")},
    "plugins": (lambda v: isinstance(v, list) and all(map(_is_text, v)), "a list of paths"),
    "only": (lambda v: _filters(v) or isinstance(v, list) and all(map(_filters, v)),
             "a mapping of --only key: values, or a list of them"),
    "versions": (_mapping_of(lambda v: isinstance(v, (str, int, float))), "a mapping of library: version"),
    "metric_settings": (_mapping_of(lambda v: isinstance(v, dict)), "a mapping of metric: its settings"),
    "methods": (_mapping_of(lambda v: isinstance(v, dict)), "a mapping of method: its card"),
}


class BoundedMemo:
    """Values computed once and kept in memory, least recently used first out, within `max_bytes` (each value's
    size as its caller states it); a value larger than the whole budget is returned but never kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._items: dict = {}  # key → (value, bytes), oldest use first

    def get(self, key, compute, size):
        """The value for `key`, from memory or `compute()` (kept when `size(value)` fits the budget)."""
        if key in self._items:
            self._items[key] = self._items.pop(key)  # now the most recently used
            return self._items[key][0]
        value = compute()
        nbytes = size(value)
        if nbytes <= self.max_bytes:
            while self.bytes + nbytes > self.max_bytes:
                self.bytes -= self._items.pop(next(iter(self._items)))[1]
            self._items[key] = (value, nbytes)
            self.bytes += nbytes
        return value

    def __len__(self) -> int:
        return len(self._items)


class Cache:
    """Content-addressed artefacts shared by all runs: trained models and finished cells' records."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.damaged_artifacts: set[str] = set()  # keys of cells whose artifacts file was found damaged and deleted

    def _model_paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.root / "models" / kind / key
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    def has_model(self, kind: str, key: str) -> bool:
        """Whether model `kind`/`key` has files in the cache (whether or not they load)."""
        return any(path.is_file() for path in self._model_paths(kind, key))

    def load_model(self, kind: str, key: str, model: nn.Module) -> dict | None:
        """Load the cached weights `kind`/`key` into `model` and return their metadata; None when absent,
        truncated, tampered with or not loadable (the caller then recomputes)."""
        weights, meta = self._model_paths(kind, key)
        if not (weights.is_file() and meta.is_file()):
            return None
        from safetensors.torch import load_model

        try:
            info = json.loads(meta.read_text())
            if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
                return None
            load_model(model, str(weights))
        except Exception:  # unreadable, truncated, foreign or another architecture: recompute, never trust
            return None
        return info

    @contextlib.contextmanager
    def model_lock(self, kind: str, key: str):
        """Hold the exclusive lock of model `kind`/`key` (blocking): processes about to train the same model take it
        in turn, and the later ones find it cached instead of training it again."""
        path = self._model_paths(kind, key)[0].with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def save_model(self, kind: str, key: str, model: nn.Module, meta: dict) -> int:
        """Store `model`'s weights as safetensors with a sidecar holding `meta` and the file hash; return bytes."""
        from safetensors.torch import save_model

        weights, meta_path = self._model_paths(kind, key)
        weights.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=partial_prefix(), suffix=".safetensors")
        os.close(fd)
        save_model(model, tmp)
        data = Path(tmp).read_bytes()
        publish(tmp, weights)
        atomic_write(meta_path, json.dumps({**meta, "sha256": hashlib.sha256(data).hexdigest()}, indent=1, default=str))
        return len(data)

    def artifact_path(self, key: str) -> Path:
        """Where a cell's artifacts (e.g. WF-Net's α) are kept, as safetensors."""
        return self.root / "artifacts" / f"{key}.safetensors"

    def _cell_path(self, key: str, folder: str = "cells") -> Path:
        return self.root / folder / f"{key}.json"

    def cell_entry(self, key: str, folder: str = "cells") -> tuple[list[dict], str | None] | None:
        """The records cached under `key` (a cell's unlearning: its cost and diagnostics rows; a tuning trial; with
        folder 'metric-records', one metric's rows of a cell) and the fingerprint of the model they were computed
        on (None for entries written before fingerprints), read once; None when absent or unreadable."""
        try:
            payload = json.loads(self._cell_path(key, folder).read_text())
            if not isinstance(payload, dict) or payload.get("sha256") != stable_hash(payload["records"]):
                return None
            if folder == "cells" and not self._artifact_intact(key, payload.get("artifact")):
                self.artifact_path(key).unlink(missing_ok=True)  # never copied into a run, even if the cell fails
                self.damaged_artifacts.add(key)
                return None  # its unlearning runs again and writes them anew
            return payload["records"], payload.get("model")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _artifact_intact(self, key: str, digest: str | None) -> bool:
        """Whether the artifacts file a cell wrote (e.g. WF-Net's α) is as written: of SHA-256 `digest`, or, for
        entries written before digests were, absent or a readable safetensors file."""
        path = self.artifact_path(key)
        try:
            if digest is not None:  # (read once a process while the file's size and modification time hold)
                return file_digest(path) == digest
            if not path.exists():
                return True
            from safetensors import safe_open

            with safe_open(str(path), "pt") as artifacts:
                for name in artifacts.keys():
                    artifacts.get_slice(name)
            return True
        except Exception:  # unreadable, truncated, not safetensors: recomputed, never copied into a run
            return False

    def load_cell(self, key: str, folder: str = "cells") -> list[dict] | None:
        """`cell_entry`'s records alone (None: recomputed)."""
        entry = self.cell_entry(key, folder)
        return None if entry is None else entry[0]

    def save_cell(self, key: str, records: list[dict], folder: str = "cells", fingerprint: str | None = None,
                  artifact: str | None = None) -> None:
        """Cache `records` under `key`; a cell's unlearning entry also holds its model's fingerprint and the SHA-256
        of the artifacts file it wrote."""
        payload = {"records": records, "sha256": stable_hash(records), **({"model": fingerprint} if fingerprint else {}),
                   **({"artifact": artifact} if artifact else {})}
        atomic_write(self._cell_path(key, folder), json.dumps(payload, default=str))

    def drop_cell(self, key: str) -> None:
        self._cell_path(key).unlink(missing_ok=True)

    def metric_records(self, metric_keys: dict[str, str], fingerprint: str | None) -> dict[str, list[dict] | None]:
        """Each metric's cached records, None where absent, damaged or computed on another model than the one
        `fingerprint` names (a later unlearning of the cell replaced it)."""
        entries = {name: self.cell_entry(k, "metric-records") for name, k in metric_keys.items()}
        return {name: e[0] if e is not None and e[1] == fingerprint else None for name, e in entries.items()}

    def cell_records(self, key: str, cell, metric_keys: dict[str, str]) -> list[dict] | None:
        """A finished cell's records from the cache, or None unless its unlearning (`key`) and every metric of
        `metric_keys` (name → metric_key, in the grid's order) are there: the cost and diagnostics rows, then per
        evaluated class each metric's rows, the order `execution.run_cell` computes them in."""
        entry = self.cell_entry(key)
        by_metric = self.metric_records(metric_keys, entry[1]) if entry is not None else {}
        return None if entry is None or None in by_metric.values() else cell_order(cell, entry[0], by_metric)


def cell_order(cell, whole: list[dict], by_metric: dict[str, list[dict]]) -> list[dict]:
    """A cell's records in the order `execution.run_cell` computes them: the cost and diagnostics rows, then per
    evaluated class each metric's rows (`by_metric` in the grid's metric order)."""
    return whole + [r for c in cell.evaluated_classes for rows in by_metric.values() for r in rows
                    if r.get("forget_class") == c]


class LogFile:
    """Appends time-stamped lines to a log file (one write per line, so several processes can share it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __call__(self, message: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.path, "a") as f:
            f.write(f"{stamp} {message}\n")


class RunFolder:
    """One run's folder: the resolved config, a log, records.csv and failures.csv."""

    def __init__(self, path: str | Path) -> None:
        self.path = writable_folder(path, "output folder")

    @staticmethod
    def default_path(results: str | Path, grid_name: str) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(results) / f"{grid_name}-{stamp}"

    def log(self, message: str) -> None:
        LogFile(self.path / "log.txt")(message)

    @contextlib.contextmanager
    def lock(self, user: str = "run"):
        """Hold an exclusive lock on the folder; a second `user` (run, tune, report) writing the same folder is
        refused."""
        handle = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            kind = {"run": "Run", "tune": "Tuning", "report": "Report"}[user]
            raise UserError(f"{kind} folder {self.path} is in use by another {user}; wait for it to finish or pass "
                            f"another --out.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def write_config(self, config: dict) -> None:
        import yaml

        plain = json.loads(json.dumps(config, default=str))
        atomic_write(self.path / "config.yaml", yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))

    def write_records(self, records: list[dict], provenance: dict, kept: pd.DataFrame | None = None) -> pd.DataFrame:
        """Write records.csv (one metric value per row, provenance columns appended where a record does not carry
        its own: a cell's records name the commit that computed them), followed by the `kept` rows of an earlier
        run in this folder (each with its own provenance); return the table."""
        frame = pd.DataFrame(records, columns=RECORD_COLUMNS + [c for c in _extra_columns(records)])
        frame["forget_class"] = frame["forget_class"].astype("Int64")
        for key, value in provenance.items():
            frame[key] = frame[key].fillna(value) if key in frame else value
        if kept is not None and not kept.empty:
            frame = pd.concat([frame, kept], ignore_index=True) if len(frame) else kept.reset_index(drop=True)
        atomic_write(self.path / "records.csv", frame.to_csv(index=False))
        return frame

    def write_failures(self, failures: list[dict], kept: pd.DataFrame | None = None) -> None:
        """Write failures.csv: this run's failures, then the `kept` ones of an earlier run in this folder."""
        frame = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
        if kept is not None and not kept.empty:
            frame = pd.concat([frame, kept[frame.columns]], ignore_index=True) if len(frame) else kept[frame.columns]
        atomic_write(self.path / "failures.csv", frame.to_csv(index=False))


def _extra_columns(records: list[dict]) -> list[str]:
    seen = dict.fromkeys(k for r in records for k in r)
    return [k for k in seen if k not in RECORD_COLUMNS]
