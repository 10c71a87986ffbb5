"""The command line: `python run_bench.py [run] [--grid NAME|FILE] …`, `list`, `report RUN_DIR …` and `tune`."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from .errors import UserError

COMMANDS = ("run", "list", "report", "tune")
DEFAULT_COMMAND = "run"


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, as the suite's own are (argparse prints its usage block
    first, up to a dozen lines for `run`); subcommand parsers share the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options).\n")


def _plugins_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--plugins", action="append", default=[], metavar="DIR", help="extra folder of method files")
    return parent


def _grid_options(tuning: bool = False) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("grid")
    group.add_argument("--grid", help="a shipped grid name (smoke, paper, …) or a YAML file (default: smoke)"
                                      + ("; or a run folder's config.yaml, to tune the grid that run ran" if tuning
                                         else ""))
    group.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                       help="only matching studies (dataset, backbone, method, seed; comma = or; the forget classes "
                            "are the tuning: section's)" if tuning else
                       "only matching cells (dataset, backbone, method, seed, forget_class; comma = or)")
    group.add_argument("--methods", metavar="all|NAMES",
                       help="replace the grid's methods: 'all' (every discovered method; the shipped smoke and "
                            "mini grids run a named subset) or comma-separated names")
    return parent


def _data_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("device, data and folders")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--precision", choices=("auto", "float32"), default="auto",
                       help="auto: bf16 autocast on CUDA, float32 on the CPU; float32: float32 everywhere, no "
                            "TF32 (CUDA numbers comparable with the CPU's); caches keep the two apart")
    group.add_argument("--data-root", type=Path,
                       help="folder holding MNIST/, FashionMNIST/, CIFAR-10, ImageFolder trees")
    group.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    group.add_argument("--results-dir", type=Path, default=Path("results"), help="where run folders go")
    group.add_argument("--cache-dir", type=Path, help="model and cell cache (default: <results-dir>/cache)")
    return parent


def _launch_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("launching")
    group.add_argument("--launcher", help="local (this machine; the default, but a rerun of failed cells takes its "
                                          "run's) or slurm (submitit job arrays)")
    group.add_argument("--workers", type=int, help="local worker processes, each with one GPU of --gpus (default: "
                                                   "one per GPU of --gpus, one per CPU core up to 4 on a CPU, else 1); "
                                                   "0 runs the jobs in this process (debugging: a job that ends its "
                                                   "process ends the run)")
    group.add_argument("--gpus", default="", help="comma-separated indices of this machine's GPUs; local worker k "
                                                "uses the k-th (cyclically) for its whole life")
    group.add_argument("--threads", type=int, help="torch CPU threads per worker (default: cores / workers); "
                                                   "CPU results are reproducible for a fixed value")
    group.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                       help="Slurm setting (partition, time_min, gpus_per_task, cpus_per_task, mem_gb, "
                            "array_parallelism, additional: a mapping of further sbatch settings, cluster: local "
                            "runs the array's tasks on this machine); overrides the grid's slurm: section")
    return parent


def _progress_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--quiet", action="store_true", help="no progress bars")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run_bench.py", description="Run, tune and report on class-unlearning benchmark grids.",
        epilog="run is the default command: `run_bench.py --grid smoke` is `run_bench.py run --grid smoke`. "
               "`run_bench.py COMMAND --help` lists a command's options.")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND", required=True)
    shared = [_plugins_options(), _data_options(), _launch_options(), _progress_options()]

    run = commands.add_parser(
        "run", parents=[_grid_options(), *shared], help="run a grid (the default command)",
        description="Run a grid: every cell's unlearning and metrics into one run folder, then its report. "
                    "The default command: `run_bench.py` without a command word runs this.")
    run.add_argument("--out", type=Path, help="run folder (default: <results-dir>/<grid>-<timestamp>)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    run.add_argument("--retry-failed", action="store_true",
                     help="rerun the grid of the existing --out folder: cached cells are kept, failed ones rerun")
    run.add_argument("--no-report", action="store_true",
                     help="write no report/ at the end (the report command writes it later), e.g. for runs "
                          "that each compute part of a grid into one folder")

    commands.add_parser("list", parents=[_plugins_options()],
                        help="list datasets, backbones, methods, metrics and grids",
                        description="List datasets, backbones, methods (also those in --plugins), metrics and grids.")

    report = commands.add_parser("report", help="write the report of one or more run folders",
                                 description="Write the report (tables, figures, index.md) of run folders; "
                                             "several are merged.")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders to report on")
    report.add_argument("--out", type=Path,
                        help="report folder (default: RUN_DIR/report; required with several run folders)")

    tune = commands.add_parser(
        "tune", parents=[_grid_options(tuning=True), *shared],
        help="tune every method of a grid on its validation split",
        description="Tune every method of a grid on its validation split (the grid's tuning: section) and "
                    "write trials.csv and tuned.yaml.")
    tune.add_argument("--out", type=Path, help="tuning folder (default: <results-dir>/tuning/<grid>)")
    return parser


def with_default_command(argv: list[str]) -> list[str]:
    """`argv` with "run" in front unless it starts with a command name or asks for the top-level help."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        return list(argv)
    return [DEFAULT_COMMAND, *argv]


def parse_pairs(items: list[str], flag: str, join_repeats: bool = False) -> dict:
    """KEY=VALUE strings → dict; a malformed one is a UserError naming the flag. A key given twice keeps its last
    value, or with `join_repeats` both, comma-joined (--only method=a --only method=b selects a or b); there a
    value is a comma-separated list whose empty items are dropped, as --methods and --gpus drop them."""
    pairs = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if join_repeats:
            value = ",".join(v.strip() for v in value.split(",") if v.strip())
        if not sep or not key or not value:
            raise UserError(f"{flag} expects KEY=VALUE, got '{item}'.")
        pairs[key] = f"{pairs[key]},{value}" if join_repeats and key in pairs else value
    return pairs


def parse_gpus(text: str) -> tuple[int, ...]:
    try:
        gpus = tuple(int(g) for g in text.split(",") if g.strip())
    except ValueError:
        gpus = (-1,)
    if any(g < 0 for g in gpus) or len(set(gpus)) < len(gpus):  # (a repeated one: two workers on a GPU, unmarked)
        raise UserError(f"--gpus expects distinct comma-separated GPU indices such as 0,1,2, got '{text}'.")
    return gpus


def list_everything(plugins: list[str] | None = None) -> str:
    """The `list` command's text: datasets, backbones, methods (found also in `plugins`), metrics and grids."""
    from .data import DATASETS
    from .discovery import discover
    from .grid import builtin_grids
    from .metrics import METRICS
    from .models import BACKBONES

    methods, errors = discover(plugins)
    lines = ["datasets:"] + [f"  {n:<14} {DATASETS.get(n).description}" for n in DATASETS]
    lines += ["backbones:"] + [f"  {n:<14} {BACKBONES.get(n).family}" for n in BACKBONES]
    lines += ["methods:"] + [
        f"  {n:<20} {'per class' if m.cls.per_class else 'all classes':<11}  "
        f"{'reads D_r' if m.cls.uses_retain else 'no D_r':<9}  {m.cls.venue or '—':<24} {m.source}"
        for n, m in methods.items()]
    lines += [f"  (failed to import: {e.source}: {e.message.splitlines()[0]})" if e.kind == "import"
              else f"  (rejected: {e.message})"
              for e in errors]
    lines += ["metrics:"] + [f"  {n}" for n in METRICS]
    lines += ["grids:"] + [f"  {n}" for n in builtin_grids()]
    return "\n".join(lines)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's time limit), ended as Ctrl-C is: workers stopped, one line, exit 143."""


def _interrupt_once(signum, frame) -> None:
    """SIGINT and SIGTERM handler: a KeyboardInterrupt (Terminated for SIGTERM) the first time; later signals are
    ignored while the run stops its workers (a second Ctrl-C, which a terminal can send within milliseconds, broke
    their shutdown: loky's tracebacks, once a hang), and so are they by the processes stopping them spawns; a
    second SIGTERM ends the command at once."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one kills a shutdown that hangs, as before
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(with_default_command(words))
    if unknown:  # argparse names the top-level parser; the command's own help lists what it takes
        _Parser(prog=f"{parser.prog} {args.command}").error(f"unrecognized arguments: {' '.join(unknown)}")
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # each signal where its disposition is the default (a script's background job ignores SIGINT, not SIGTERM);
    # SIGTERM killed the command at once, its worker left running
    handled = {sig for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))
               if threading.current_thread() is threading.main_thread() and previous[sig] == default}
    for sig in handled:
        signal.signal(sig, _interrupt_once)
    try:
        if args.command == "list":
            print(list_everything(args.plugins))
            return 0
        if args.command == "report":
            from .report import write_report

            print(write_report(args.run_dirs, args.out) / "index.md")
            return 0
        if args.command == "tune":
            return _tune(args, words)
        from .data import scans_files_afresh

        return scans_files_afresh(_run)(args, words)  # its plan and the run's share one scan of the files
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: cells are cached as they finish; workers and Slurm tasks end on the
        kept = ""                     # way out
        if args.command in ("run", "tune"):  # list and report have no cache
            from .planning import RunOptions

            cache = RunOptions(cache_dir=args.cache_dir, results_dir=args.results_dir).cache
            finished = ("cells are" if args.command == "run" else "trials are") + f" kept in the cache {cache}"
            if args.command == "tune":
                finished += " and finished studies in the tuning folder"
            kept = f"; finished {finished}; run the same command again to resume"
        terminated = isinstance(exc, Terminated)
        print(f"{'terminated' if terminated else 'interrupted'}{kept}.", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        # interrupted, the command keeps ignoring Ctrl-C to its exit, which still waits for loky to end the workers
        # (a Ctrl-C killing it there would orphan them; a second SIGTERM is meant to); a caller in-process gets its
        # handlers back
        for sig in handled:
            if argv is not None or signal.getsignal(sig) is _interrupt_once:
                signal.signal(sig, previous[sig])


def _options(args: argparse.Namespace, argv: list[str], grid, data_root, only):
    """The RunOptions and LaunchOptions the flags describe (shared by run and tune)."""
    from .launchers import LaunchOptions, check_launcher, default_workers
    from .planning import RunOptions, on_launcher, slurm_options

    workers, gpus, launcher = args.workers, parse_gpus(args.gpus), args.launcher or "local"
    recorded = getattr(args, "launcher_recorded", None)  # the config.yaml a --retry-failed run took slurm from
    drop = f" (as {recorded} records; add --launcher local to run here)" if recorded else ""
    if args.slurm and launcher != "slurm":  # before: ignored silently
        raise UserError(f"--slurm {args.slurm[0]} sets a Slurm option, but the launcher is {launcher}; add "
                        f"--launcher slurm or drop --slurm.")
    if workers is not None and launcher == "slurm":  # before: ignored silently
        raise UserError(f"--workers sets local worker processes, but the launcher is slurm{drop}, whose tasks are "
                        f"its array's (--slurm array_parallelism caps how many run at once); drop --workers.")
    if gpus and launcher == "slurm":  # before: jobs went to cuda:0, cuda:1, ... of one-GPU tasks
        raise UserError(f"--gpus picks GPUs of this machine for local workers, but the launcher is slurm{drop}, "
                        f"whose tasks compute on their own (--slurm gpus_per_task); drop --gpus.")
    slurm = slurm_options(grid, parse_pairs(args.slurm, "--slurm"), getattr(args, "slurm_recorded", None))
    if recorded:  # before the plan: refused in words of the run it retries
        check_launcher(LaunchOptions(launcher=launcher, slurm=slurm), recorded)
    progress = not args.quiet and sys.stderr.isatty() and not os.environ.get("CI")
    options = on_launcher(RunOptions(
        out=args.out, results_dir=args.results_dir, cache_dir=args.cache_dir, device=args.device,
        data_root=data_root, download=args.download, only=only, plugins=args.plugins,
        progress=progress, command=" ".join(shlex.quote(a) for a in ["run_bench.py", *argv]),
        precision=args.precision, report=args.command == "run" and not args.no_report,
    ), slurm if launcher == "slurm" else None)  # Slurm jobs compute on the tasks' device
    if workers is None:
        workers = len(gpus) if gpus else default_workers(options.run_device().type, launcher)
    launch_options = LaunchOptions(launcher=launcher, workers=workers, gpus=gpus, threads=args.threads,
                                   slurm=slurm)
    return options, launch_options


def _with_methods(grid, methods: str | None):
    from .grid import with_methods

    return grid if methods is None else with_methods(grid, methods)


def _tune_grid(args: argparse.Namespace):
    """The grid `tune` tunes: --grid (a run folder's config.yaml standing for the grid that run ran) with --methods."""
    from .grid import load_grid

    return _with_methods(load_grid("smoke" if args.grid is None else args.grid, run_config=True), args.methods)


def _tune(args: argparse.Namespace, argv: list[str]) -> int:
    from .tuning import tune

    grid = _tune_grid(args)
    options, launch_options = _options(args, argv, grid, args.data_root, parse_pairs(args.only, "--only", join_repeats=True))
    out = args.out or args.results_dir / "tuning" / grid.name
    result = tune(grid, options, launch_options, out)
    for dataset, backbones in result.document.get("tuned", {}).items():
        for backbone, methods in backbones.items():
            for method, entry in methods.items():
                kept = "" if (dataset, backbone, method) in result.studies else " (an earlier tune's, kept)"
                print(f"{dataset}/{backbone}/{method}{kept}: objective {entry['objective']:.3f} (defaults "
                      f"{entry['default_objective']:.3f}), val Acc_r {entry['val_acc_retain']:.3f} Acc_f "
                      f"{entry['val_acc_forget']:.3f}, {entry['tuning_seconds']:.0f} s → {entry['params']}")
    for f in result.failures:
        print(f"  {f['status']}: {f['method']} {f['dataset']}/{f['backbone']}: {f['reason']}")
    failed = [f for f in result.failures if f["status"] != "skipped"]
    print(f"\n{len(result.trials)} trials, {len(failed)} failed studies, {len(result.failures) - len(failed)} "
          f"skipped → {out / 'tuned.yaml'}; a grid runs with these parameters given `tuned: {out}`")
    return 1 if failed else 0


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from .grid import load_grid, parse_grid
    from .planning import describe_plan, metric_names, plan, stage_retrained_counts
    from .runner import check_launch, check_run_folder, check_workers, grid_differences, run
    from .store import Cache

    only = parse_pairs(args.only, "--only", join_repeats=True)
    data_root = args.data_root
    if args.retry_failed:
        if args.methods is not None:
            raise UserError("--methods cannot be combined with --retry-failed, which reruns the run folder's grid "
                            "as it was; pass a new --out to run other methods.")
        if args.grid is not None:  # before: ignored silently, the folder's grid rerun
            raise UserError("--grid cannot be combined with --retry-failed, which reruns the grid recorded in the run "
                            "folder's config.yaml; drop --grid, or pass a new --out to run that grid.")
        config = _previous_config(args.out)
        if "name" not in config["grid"]:  # the run folder holds its runs under the grid's name
            raise UserError(f"The grid in {args.out}/config.yaml has no 'name', which every run writes there, so "
                            f"--retry-failed cannot match its runs; pass a new --out to run the grid afresh.")
        grid = parse_grid(config["grid"], f"{args.out}/config.yaml")
        fields = grid_differences(grid, config["grid"])
        if fields:  # the run would refuse it as another grid's folder, and suggest --retry-failed
            raise UserError(f"The grid in {args.out}/config.yaml is not written in full (its {fields} differ from the "
                            f"grid it reads as: the file was cut short or edited, or another version of the suite "
                            f"wrote it), so --retry-failed cannot rerun it as it was; restore the file or pass a new "
                            f"--out.")
        only = only or config.get("only") or {}
        data_root = data_root or (Path(config["data_root"]) if config.get("data_root") else None)
        args.data_root = data_root  # (and the cache below: as the run reads them, so do the commands it prints)
        # the earlier run's cache, device, precision and plugins unless given again: its finished cells are found
        # in that cache under those keys, so only the failed ones run
        if args.cache_dir is None and config.get("cache_dir"):
            args.cache_dir = Path(config["cache_dir"])
            if not args.cache_dir.is_dir():  # moved or removed: a new cache there would compute every cell again
                raise UserError(f"The cache {args.cache_dir} that {args.out}/config.yaml records does not exist (moved "
                                f"or removed?); pass --cache-dir with the cache the run used, so that only the "
                                f"failed cells run again.")
        if args.device == "auto" and config.get("device"):
            args.device = config["device"]
        if args.precision == "auto" and config.get("precision"):
            args.precision = config["precision"]
        if not args.plugins and config.get("plugins"):
            args.plugins = list(config["plugins"])
        recorded = config.get("launcher") or {}
        if recorded.get("launcher") == "slurm" and args.launcher in (None, "slurm"):
            # as Slurm tasks again, with the run's Slurm settings under any --slurm given now (before: the failed
            # cells ran on this machine, a login node refusing the tasks' device)
            if args.launcher is None:
                args.launcher, args.launcher_recorded = "slurm", args.out / "config.yaml"
            args.slurm_recorded = recorded.get("slurm") or {}
    else:
        grid = _with_methods(load_grid("smoke" if args.grid is None else args.grid), args.methods)
    options, launch_options = _options(args, argv, grid, data_root, only)
    planned = plan(grid, options)
    untuned = untuned_methods(grid, planned)
    if untuned:
        counts = ", ".join(f"{m} ({n} dataset × backbone group{'s' * (n > 1)})" for m, n in untuned.items())
        print(f"warning: grid '{grid.name}' runs with the tuned parameters '{grid.tuned}', which hold none for "
              f"{counts}: they run with their defaults. Add them with {_tune_command(args, grid, untuned)}.",
              file=sys.stderr)
    stale = stale_tuned(grid, planned)
    if stale:
        methods = dict.fromkeys(s.split(" ")[0] for s in stale)
        print(f"warning: the tuned parameters '{grid.tuned}' of {'; '.join(stale)} were searched over other ranges "
              f"than the method declares now (a range changed or a parameter added since), so they were not chosen "
              f"as a fresh study would choose them; re-tune with {_tune_command(args, grid, methods)}.",
              file=sys.stderr)
    refixed = refixed_tuned(grid, planned)
    if refixed:
        print(f"warning: the tuned parameters '{grid.tuned}' of {'; '.join(refixed)} were chosen with another value "
              f"of a parameter their study held fixed, which this grid changes.", file=sys.stderr)
    recoded = recoded_tuned(grid, planned)
    if recoded:
        methods = dict.fromkeys(s.split(" ")[0] for s in recoded)
        print(f"warning: the tuned parameters '{grid.tuned}' of {'; '.join(recoded)} were chosen for another "
              f"version of the method; re-tune with {_tune_command(args, grid, methods)}.", file=sys.stderr)
    if planned.one_round_left_out and args.only and not args.retry_failed:  # the paper's own method is one of them
        value = only["forget_class"]
        print(f"warning: --only forget_class={value} runs no cell of {', '.join(planned.one_round_left_out)}, whose "
              f"cells hold every forget class at once (forget_class=all); add all to the filter "
              f"(--only forget_class={value},all) to run them too.", file=sys.stderr)
    if args.dry_run:  # what the run would refuse before computing anything, refused here too
        check_launch(launch_options, options.run_device())
        if options.out is not None and options.out.exists() and not options.out.is_dir():
            raise UserError(f"--out {options.out} is a file; give a folder for the run.")
        if options.out is not None and options.out.is_dir():
            check_run_folder(options.out, grid, planned)
        if Path(options.cache).exists() and not Path(options.cache).is_dir():
            raise UserError(f"The cache folder {options.cache} is a file; pass a folder.")
        crowded = check_workers(grid, planned.cells, stage_retrained_counts(planned.cells, grid, metric_names(grid)),
                                launch_options, planned.device, options.data_root, Path(options.cache))
        print(describe_plan(grid, planned, Cache(options.cache), metric_names(grid), options.data_root))
        if crowded:
            print(f"warning: {crowded}.", file=sys.stderr)
        return 1 if planned.plugin_errors or (planned.skipped and not planned.cells) else 0  # as the run would exit
    result = run(grid, options, launch_options, planned)
    from .report.run_summary import current_records, format_summary

    table = format_summary(current_records(result))
    if table:
        print(table)
    index = result.run_dir / "report" / "index.md"
    if result.report_error:  # an index.md there is an earlier run's
        print(f"report failed: {result.report_error} (details in {result.run_dir / 'log.txt'}); once mended, "
              f"`run_bench.py report {result.run_dir}` writes it")
    elif not options.report:
        earlier = " (the report/ there is an earlier run's)" if index.is_file() else ""
        print(f"report: not written (--no-report){earlier}; `run_bench.py report {result.run_dir}` writes it")
    elif index.is_file():
        print(f"report: {index}")
    failed = [f for f in result.failures if f["status"] == "failed"]
    broken = [f for f in result.failures if f["status"] == "plugin-error"]
    skipped = [f for f in result.failures if f["status"] == "skipped"]
    print(f"\n{result.counts()}, {len(failed)} failed, "
          f"{len(skipped)} skipped, {len(broken)} plugin errors → {result.run_dir}")
    for status, cells in (("failed", failed), ("skipped", skipped)):
        for f in cells[:10]:
            where = "every class" if f["forget_class"] is None else f"class {f['forget_class']}"
            print(f"  {status}: {f['method']} {f['dataset']}/{f['backbone']} {where}: {f['reason']}")
    for f in broken:
        print(f"  plugin {f['method']}: {f['reason']}")
    nothing_ran = skipped and not result.computed and not result.cached
    return 1 if failed or broken or nothing_ran or result.report_error else 0


def untuned_methods(grid, p) -> dict[str, int]:
    """Method → number of dataset × backbone groups where a grid that names tuned parameters runs a method with a
    search space but no tuned entry (so it silently runs with its defaults)."""
    from .grid import tuned_parameters
    from .tuning import searched_space

    if not grid.tuned:
        return {}
    tuned = tuned_parameters(grid.tuned)
    missing = {(c.method, c.dataset.label, c.backbone.label) for c in p.cells
               if searched_space(p.methods[c.method].cls(), c, grid)
               and c.method not in tuned.get(c.dataset.label, {}).get(c.backbone.label, {})}
    counts: dict[str, int] = {}
    for method, *_ in sorted(missing):
        counts[method] = counts.get(method, 0) + 1
    return counts


def stale_tuned(grid, p) -> list[str]:
    """'method on dataset/backbone (parameters)' for each tuned entry the grid applies whose recorded search space
    is not the one the method declares now for that cell (a range changed or a parameter added since it was
    tuned): its parameters were chosen over other ranges than a fresh study would search."""
    from .grid import tuned_parameters
    from .search_space import describe
    from .tuning import searched_space

    tuned = tuned_parameters(grid.tuned) if grid.tuned else {}
    stale: dict = {}
    for c in p.cells:
        recorded = tuned.get(c.dataset.label, {}).get(c.backbone.label, {}).get(c.method, {}).get("search_space")
        if isinstance(recorded, dict) and (c.method, c.dataset.label, c.backbone.label) not in stale:
            now = describe(searched_space(p.methods[c.method].cls(), c, grid))
            stale[(c.method, c.dataset.label, c.backbone.label)] = [k for k in now if recorded.get(k) != now[k]]
    return [f"{m} on {d}/{b} ({', '.join(keys)})" for (m, d, b), keys in stale.items() if keys]


def refixed_tuned(grid, p) -> list[str]:
    """'method on dataset/backbone (parameter: value there, value here)' for each tuned entry the grid applies that
    recorded the parameters its study held fixed, where the grid runs another value of one (its parameters were
    chosen for the value held then)."""
    from .grid import tuned_parameters

    tuned = tuned_parameters(grid.tuned) if grid.tuned else {}
    changed: dict = {}
    for c in p.cells:
        fixed = tuned.get(c.dataset.label, {}).get(c.backbone.label, {}).get(c.method, {}).get("fixed")
        if isinstance(fixed, dict):
            differ = [f"{k}: {v!r} there, {c.params_dict.get(k)!r} here" for k, v in fixed.items()
                      if c.params_dict.get(k) != v]
            if differ:
                changed.setdefault((c.method, c.dataset.label, c.backbone.label), differ)
    return [f"{m} on {d}/{b} ({'; '.join(differ)})" for (m, d, b), differ in changed.items()]


def _tune_command(args, grid, methods) -> str:
    """The `tune` command that adds `methods`' studies to the tuned result the grid reads (its own tuning folder;
    for a shipped result, reports/tuning/<name> and then the copy into the package), with the run's plugins (a
    plugin's method is unknown without them)."""
    from .grid import tuned_file
    from .store import PACKAGE_DIR

    source = tuned_file(grid.tuned)
    # a shipped result is a copy of reports/tuning/<name>/tuned.yaml; any other lies in its own tuning folder
    shipped = source.resolve().parent == PACKAGE_DIR / "configs" / "tuned"
    folder = Path("reports/tuning") / grid.tuned if shipped else source.parent
    plugins = "".join(f" --plugins {shlex.quote(str(p))}" for p in args.plugins or [])
    # the data and the cache of the run: without the first a dataset under --data-root is skipped ("every study is
    # skipped"); with the second the run's cached original and retrained models are scored against, not retrained
    folders = "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in (("--data-root", args.data_root),
                                                                              ("--cache-dir", args.cache_dir)) if value)
    # the grid the run ran: a --retry-failed run's is the one its folder's config.yaml records (which tune reads);
    # otherwise the grid as given, with the methods --methods put in it
    ran = (shlex.quote(str(args.out / "config.yaml")) if args.retry_failed else
           shlex.quote(args.grid or "smoke") + (f" --methods {shlex.quote(args.methods)}" if args.methods else ""))
    command = (f"`run_bench.py tune --grid {ran} --only method={','.join(methods)} "
               f"--out {shlex.quote(str(folder))}{folders}{plugins}`")
    return command + (f", then copy {folder}/tuned.yaml to unlearnbench/configs/tuned/{grid.tuned}.yaml"
                      if shipped else "")


def recoded_tuned(grid, p) -> list[str]:
    """'method on dataset/backbone (what changed)' for each tuned entry the grid applies that was chosen for another
    version of the method: its code's hash is other now (where the study recorded it), or it has a parameter the
    study neither searched nor held fixed (where it recorded those it held)."""
    from .grid import tuned_parameters

    tuned = tuned_parameters(grid.tuned) if grid.tuned else {}
    recoded: dict = {}
    for c in p.cells:
        entry = tuned.get(c.dataset.label, {}).get(c.backbone.label, {}).get(c.method, {})
        known = {*entry.get("params", {}), *entry["fixed"]} if isinstance(entry.get("fixed"), dict) else None
        what = [f"{k} added since" for k in c.params_dict if known is not None and k not in known]
        if entry.get("method_code") not in (None, p.methods[c.method].source_hash):
            what.append("its code changed since")
        if what:
            recoded.setdefault((c.method, c.dataset.label, c.backbone.label), what)
    return [f"{m} on {d}/{b} ({'; '.join(what)})" for (m, d, b), what in recoded.items()]


def _previous_config(out: Path | None) -> dict:
    from .store import read_run_config

    config = read_run_config(out) if out is not None else None
    if config is None:
        raise UserError("--retry-failed needs --out pointing at an earlier run folder (one holding config.yaml).")
    return config


if __name__ == "__main__":
    sys.exit(main())
