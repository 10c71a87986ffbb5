"""The command line: `python run_bench.py [--grid NAME|FILE] …` and `unlearnbench list`."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py", description="Run an unlearning benchmark grid.")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "list", "report", "tune"],
                        help="run a grid (default), list datasets, backbones, methods, metrics and grids, "
                             "report on run folders, or tune every method of a grid on its validation split "
                             "(into --out, default <results-dir>/tuning/<grid>)")
    parser.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR",
                        help="report: run folders to report on (several are merged; the report goes to --out, "
                             "default RUN_DIR/report)")
    parser.add_argument("--grid", default="smoke", help="a shipped grid name (smoke, paper, …) or a YAML file")
    parser.add_argument("--out", type=Path, help="run folder (default: <results-dir>/<grid>-<timestamp>)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="where run folders go")
    parser.add_argument("--cache-dir", type=Path, help="model and cell cache (default: <results-dir>/cache)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--data-root", type=Path, help="folder holding MNIST/, FashionMNIST/, CIFAR-10, ImageFolder trees")
    parser.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help="run only matching cells (dataset, backbone, method, seed, forget_class; comma = or)")
    parser.add_argument("--plugins", action="append", default=[], metavar="DIR", help="extra folder of method files")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--launcher", default="local", help="local (this machine) or slurm (submitit job arrays)")
    parser.add_argument("--workers", type=int, help="local worker processes, each with one GPU of --gpus (default: "
                                                    "one per CPU core up to 4 on a CPU, else 1)")
    parser.add_argument("--gpus", default="", help="comma-separated GPU indices shared round-robin by the workers")
    parser.add_argument("--threads", type=int, help="torch CPU threads per worker (default: cores / workers); "
                                                    "CPU results are reproducible for a fixed value")
    parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                        help="Slurm setting (partition, time_min, gpus_per_task, cpus_per_task, mem_gb, "
                             "array_parallelism, cluster); overrides the grid's slurm: section")
    parser.add_argument("--retry-failed", action="store_true",
                        help="rerun the grid of the existing --out folder: cached cells are kept, failed ones rerun")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_pairs(items: list[str], flag: str) -> dict:
    """KEY=VALUE strings → dict; a malformed one is a UserError naming the flag."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"{flag} expects KEY=VALUE, got '{item}'.")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_gpus(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(g) for g in text.split(",") if g.strip())
    except ValueError:
        raise UserError(f"--gpus expects comma-separated GPU indices such as 0,1,2, got '{text}'.") from None


def list_everything(plugins: list[str] | None = None) -> str:
    """The `list` command's text: datasets, backbones, methods (found also in `plugins`), metrics and grids."""
    from . import datasets  # noqa: F401
    from .data import DATASETS
    from .discovery import discover
    from .grid import builtin_grids
    from .metrics import METRICS
    from .models import BACKBONES

    methods, errors = discover(plugins)
    lines = ["datasets:"] + [f"  {n:<14} {DATASETS.get(n).description}" for n in DATASETS]
    lines += ["backbones:"] + [f"  {n:<14} {BACKBONES.get(n).family}" for n in BACKBONES]
    lines += ["methods:"] + [f"  {n:<22} {'per class' if m.cls.per_class else 'all classes'}  {m.source}" for n, m in methods.items()]
    lines += [f"  (failed to import: {e.source})" for e in errors]
    lines += ["metrics:"] + [f"  {n}" for n in METRICS]
    lines += ["grids:"] + [f"  {n}" for n in builtin_grids()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            print(list_everything(args.plugins))
            return 0
        if args.run_dirs and args.command != "report":
            raise UserError(f"Unexpected argument '{args.run_dirs[0]}'; only the report command takes run folders.")
        if args.command == "report":
            from .report import write_report

            if not args.run_dirs:
                raise UserError("The report command needs at least one run folder: run_bench.py report RUN_DIR.")
            print(write_report(args.run_dirs, args.out) / "index.md")
            return 0
        if args.command == "tune":
            return _tune(args, argv)
        return _run(args, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _options(args: argparse.Namespace, argv: list[str] | None, grid, data_root, only):
    """The RunOptions and LaunchOptions the flags describe (shared by run and tune)."""
    from .launchers import LaunchOptions, default_workers
    from .runner import RunOptions, resolve_device, slurm_options

    progress = not args.quiet and sys.stderr.isatty() and not os.environ.get("CI")
    options = RunOptions(
        out=args.out, results_dir=args.results_dir, cache_dir=args.cache_dir, device=args.device,
        data_root=data_root, download=args.download, only=only, plugins=args.plugins,
        progress=progress, command=" ".join(shlex.quote(a) for a in ["run_bench.py", *(sys.argv[1:] if argv is None else argv)]),
    )
    workers = args.workers
    if workers is None:
        workers = default_workers(resolve_device(options.device).type, args.launcher)
    launch_options = LaunchOptions(launcher=args.launcher, workers=workers, gpus=parse_gpus(args.gpus),
                                   threads=args.threads,
                                   slurm=slurm_options(grid, parse_pairs(args.slurm, "--slurm")))
    return options, launch_options


def _tune(args: argparse.Namespace, argv: list[str] | None) -> int:
    from .grid import load_grid
    from .tuning import tune

    grid = load_grid(args.grid)
    options, launch_options = _options(args, argv, grid, args.data_root, parse_pairs(args.only, "--only"))
    out = args.out or args.results_dir / "tuning" / grid.name
    result = tune(grid, options, launch_options, out)
    for dataset, backbones in result.document.get("tuned", {}).items():
        for backbone, methods in backbones.items():
            for method, entry in methods.items():
                print(f"{dataset}/{backbone}/{method}: objective {entry['objective']:.3f} (defaults "
                      f"{entry['default_objective']:.3f}), val Acc_r {entry['val_acc_retain']:.3f} Acc_f "
                      f"{entry['val_acc_forget']:.3f}, {entry['tuning_seconds']:.0f} s → {entry['params']}")
    for f in result.failures:
        print(f"  failed: {f['method']} {f['dataset']}/{f['backbone']}: {f['reason']}")
    print(f"\n{len(result.trials)} trials, {len(result.failures)} failed studies → {out / 'tuned.yaml'}")
    return 1 if result.failures else 0


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from .grid import load_grid, parse_grid
    from .runner import describe_plan, metric_names, plan, resolve_device, run, summary
    from .store import Cache

    only = parse_pairs(args.only, "--only")
    data_root = args.data_root
    if args.retry_failed:
        config = _previous_config(args.out)
        grid = parse_grid(config["grid"], f"{args.out}/config.yaml")
        only = only or config.get("only") or {}
        data_root = data_root or (Path(config["data_root"]) if config.get("data_root") else None)
    else:
        grid = load_grid(args.grid)
    options, launch_options = _options(args, argv, grid, data_root, only)
    if args.dry_run:
        resolve_device(options.device)
        print(describe_plan(grid, plan(grid, options), Cache(options.cache), metric_names(grid)))
        return 0
    result = run(grid, options, launch_options)
    table = summary(result.records)
    if not table.empty:
        print(table.to_string())
    failed = [f for f in result.failures if f["status"] == "failed"]
    broken = [f for f in result.failures if f["status"] == "plugin-error"]
    skipped = [f for f in result.failures if f["status"] == "skipped"]
    print(f"\n{result.computed} cells computed, {result.cached} from cache, {len(failed)} failed, "
          f"{len(skipped)} skipped, {len(broken)} plugin files failed to import → {result.run_dir}")
    for status, cells in (("failed", failed), ("skipped", skipped)):
        for f in cells[:10]:
            print(f"  {status}: {f['method']} {f['dataset']}/{f['backbone']} class {f['forget_class']}: {f['reason']}")
    for f in broken:
        print(f"  plugin {f['method']} failed to import: {f['reason']}")
    nothing_ran = skipped and not result.computed and not result.cached
    return 1 if failed or broken or nothing_ran else 0


def _previous_config(out: Path | None) -> dict:
    from .store import read_run_config

    config = read_run_config(out) if out is not None else None
    if config is None:
        raise UserError("--retry-failed needs --out pointing at an earlier run folder (one holding config.yaml).")
    return config


if __name__ == "__main__":
    sys.exit(main())
