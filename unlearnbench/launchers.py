"""Launchers: run the same job function in this process, in joblib worker processes, or as Slurm job arrays."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shutil
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterator, Sequence, TypeVar

from .errors import UserError

J = TypeVar("J")
R = TypeVar("R")

LAUNCHERS = ("local", "slurm")
SLURM_POLL_SECONDS = 1.0
# submitit executors the slurm launcher runs on: Slurm itself, or "local", the array's tasks as processes of this
# machine (to try a Slurm setup out, and the tests)
SLURM_CLUSTERS = ("slurm", "local")


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm settings for submitit job arrays (grid YAML `slurm:` or CLI flags). Each array task has
    `gpus_per_task` GPUs; `array_parallelism` caps the tasks running at once and sizes the bundles of jobs a task
    runs (see `slurm_bundles`); `time_min` limits a task, so a bundle's jobs share it."""

    partition: str | None = None
    time_min: int = 120
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    array_parallelism: int = 64
    additional: dict = field(default_factory=dict)
    cluster: str | None = None  # None or "slurm": Slurm (its sbatch on PATH); "local" runs the array on this machine

    def __post_init__(self) -> None:
        if self.cluster is not None and self.cluster not in SLURM_CLUSTERS:  # (before: submitit's ValueError, after
            raise UserError(f"Unknown Slurm cluster '{self.cluster}'; choose slurm (the default) or local (the "
                            f"array's tasks as processes of this machine).")  # the run had started)
        # (a task of 0 minutes or 0 GB is submitted, then dies with submitit's UncompletedJobError in every job)
        for name, least in (("array_parallelism", 1), ("time_min", 1), ("cpus_per_task", 1), ("mem_gb", 1),
                            ("gpus_per_task", 0)):
            if getattr(self, name) < least:
                raise UserError(f"{name} must be at least {least}, got {getattr(self, name)}.")


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "local"
    workers: int = 0  # local worker processes; 0 runs the jobs in this process (the API's default, for debugging)
    gpus: tuple[int, ...] = ()
    threads: int | None = None  # torch CPU threads per worker (default: cores / workers); results depend on it
    slurm: SlurmOptions = SlurmOptions()
    folder: Path = Path(".")

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise UserError(f"Unknown launcher '{self.launcher}'; choose one of: {', '.join(LAUNCHERS)}.")
        if self.workers < 0:
            raise UserError(f"--workers must be at least 0 (0 runs the jobs in this process), got {self.workers}.")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}.")


MAX_DEFAULT_CPU_WORKERS = 4  # each worker holds its own copy of the data and models


def default_workers(device_type: str, launcher: str = "local") -> int:
    """Local worker processes when `--workers` is not given: on a CPU one per core (at most
    MAX_DEFAULT_CPU_WORKERS, one torch thread each), since for these small models separate processes beat
    threads within one; one otherwise (one GPU, or Slurm, which parallelises by array tasks)."""
    if device_type != "cpu" or launcher != "local":
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_CPU_WORKERS))


def assign_devices(jobs: Sequence[J], gpus: Sequence[int], with_device: Callable[[J, str], J]) -> list[J]:
    """Bind job k to GPU gpus[k % len(gpus)] (round-robin; Slurm tasks, one GPU each); unchanged when no GPU list
    is given. Local workers re-bind each job to their own GPU (`slot_device`) when they take it."""
    if not gpus:
        return list(jobs)
    return [with_device(job, f"cuda:{gpus[k % len(gpus)]}") for k, job in enumerate(jobs)]


def slot_device(gpus: Sequence[int], slot: int) -> str:
    """The one GPU local worker `slot` uses for its whole life: gpus[slot % len(gpus)]."""
    return f"cuda:{gpus[slot % len(gpus)]}"


def _on_device(job: J, device: str) -> J:
    return dataclasses.replace(job, device=device) if getattr(job, "device", device) != device else job


def job_group(job) -> Hashable:
    """The (dataset, backbone, seed) group of a job whose `cell` has one (runs and tuning), else None."""
    return getattr(getattr(job, "cell", None), "group", None)


def launch(fn: Callable[[J], R], jobs: Sequence[J], options: LaunchOptions,
           on_crash: Callable[[J, BaseException], R], slots: WorkerSlots | None = None) -> Iterator[R]:
    """Yield fn(job) for every job (in completion order). `fn` must catch its own errors; a worker that dies
    (killed, out of host memory, os._exit) is attributed to its job through `on_crash` and the other jobs go on,
    one worker included. Local workers come from `slots` (a run passes one for all its phases); without it, from
    slots of this launch only. Zero workers run the jobs in this process, which a dying job ends."""
    if not jobs:
        return iter(())
    if options.launcher == "slurm":
        return _slurm(fn, jobs, options, on_crash)
    if options.workers == 0:
        return (fn(_on_device(job, slot_device(options.gpus, 0)) if options.gpus else job) for job in jobs)
    return _pool(fn, jobs, options.workers, on_crash, slots, options.gpus)


IDLE_WORKER_SECONDS = 300  # a worker idle this long exits; the next job of its slot starts a fresh one


class WorkerSlots:
    """The worker processes of one run: each slot a one-process loky pool, kept from launch to launch (phase to
    phase) so a worker's loaded data and models (execution.KeptGroup) serve the next phase too; `close` (or the
    end of a `with` block) ends them."""

    def __init__(self) -> None:
        self.pools: list = []
        self.groups: dict[int, Hashable] = {}  # slot → the group of the last job it ran (its kept stages)

    def ensure(self, count: int) -> None:
        self.pools.extend(_worker_pool() for _ in range(count - len(self.pools)))

    def renew(self, slot: int):
        """A fresh process for `slot` (its old one is killed); returns the slot's pool."""
        self.pools[slot].shutdown(wait=False, kill_workers=True)
        self.pools[slot] = _worker_pool()
        return self.pools[slot]

    def close(self) -> None:
        """End the workers; they are idle here (a stopped launch already replaced any busy one), so they exit
        cleanly rather than being killed."""
        for pool in self.pools:
            pool.shutdown(wait=True)
        self.pools = []

    def __enter__(self) -> WorkerSlots:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def _worker_pool():
    """A one-process loky pool (its worker set up by `_worker_setup`)."""
    from joblib.externals.loky import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=1, timeout=IDLE_WORKER_SECONDS, initializer=_worker_setup)


def _worker_setup() -> None:
    """A worker ignores SIGINT: a terminal's Ctrl-C reaches it too, and it printed a KeyboardInterrupt traceback
    from wherever it was; the main process ends it. Its progress bars take a thread lock: tqdm's default one is a
    named semaphore, which a worker killed mid-job (a stopped run, a crash) leaks, and the resource tracker then
    warns. It exits when the run's process is gone (SIGKILL, out of memory): it went on computing its job, then
    idled for IDLE_WORKER_SECONDS, beside (and slowing, on a GPU crowding) the run started again to resume."""
    import signal
    import threading

    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:  # an orphan is adopted by another process
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


PARENT_POLL_SECONDS = 0.5


def _tier(job) -> bool:
    """False for the jobs a phase runs first: one-round (all-class) cells, the longest (no forget class)."""
    return getattr(getattr(job, "cell", None), "forget_class", None) is not None


def _next_job(todo: list[int], jobs: Sequence, kept: Hashable, taken: set) -> int:
    """The position in `todo` (job indices, next last) of the job a free worker takes, among the jobs of the next
    job's tier (one-round cells before per-class ones): the next of the group it holds (`kept`), else the next
    of a group no other worker runs or holds (`taken`), else the next job."""
    tier = _tier(jobs[todo[-1]])
    for wanted in (lambda g: g == kept and kept is not None, lambda g: g not in taken, lambda g: True):
        for pos in range(len(todo) - 1, -1, -1):
            job = jobs[todo[pos]]
            if _tier(job) == tier and wanted(job_group(job)):
                return pos
    raise IndexError("no job left")


def _pool(fn, jobs, workers, on_crash, slots: WorkerSlots | None, gpus: Sequence[int] = ()) -> Iterator:
    """Run jobs in `workers` worker processes, never in this one. Each worker is its own slot, so its process
    serves job after job; a worker that dies fails only the job it was running (through `on_crash`, with a
    WorkerDied saying how it died) and its slot gets a fresh process, while the other workers go on untouched.
    With `gpus`, slot k runs every job on GPU `slot_device(gpus, k)` for its whole life; a free worker takes the
    next job of the group whose stages it holds, so a group's stages are built once per worker."""
    from joblib.externals.loky.process_executor import BrokenProcessPool, TerminatedWorkerError

    own = slots is None
    slots = WorkerSlots() if own else slots
    count = min(workers, len(jobs))
    slots.ensure(count)
    todo = list(range(len(jobs)))[::-1]  # pop() hands them out in order
    running: dict = {}  # future -> (slot, job as submitted)
    try:
        while todo or running:
            busy = {slot for slot, _ in running.values()}
            for slot in range(count):
                if todo and slot not in busy:
                    taken = {job_group(j) for _, j in running.values()}
                    taken |= {g for s, g in slots.groups.items() if s != slot and s < count}
                    job = jobs[todo.pop(_next_job(todo, jobs, slots.groups.get(slot), taken))]
                    job = _on_device(job, slot_device(gpus, slot)) if gpus else job
                    slots.groups[slot] = job_group(job)
                    try:
                        future = slots.pools[slot].submit(fn, job)
                    except BrokenProcessPool:  # its process died while idle
                        future = slots.renew(slot).submit(fn, job)
                    running[future] = slot, job
            for future in wait(running, return_when=FIRST_COMPLETED).done:
                slot, job = running.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool as exc:  # this slot's process is gone or unusable: a fresh one replaces it
                    slots.renew(slot)
                    outcome = on_crash(job, _died(exc) if isinstance(exc, TerminatedWorkerError) else exc)
                except Exception as exc:  # the job or its result could not cross between processes
                    outcome = on_crash(job, exc)
                yield outcome
    finally:
        for slot, _ in running.values():  # the caller stopped early: end the jobs still running
            slots.renew(slot)
        if own:
            slots.close()


class WorkerDied(RuntimeError):
    """The worker process running a job ended without returning its result."""


def _died(exc: BaseException) -> WorkerDied:
    """A one-sentence WorkerDied from loky's TerminatedWorkerError, whose text ends with the exit codes."""
    codes = re.findall(r"\w+\((-?\d+)\)", str(exc))
    code = int(codes[-1]) if codes else 0
    how = (f"killed by signal {-code}, {signal.Signals(-code).name}" if -code in signal.valid_signals()
           else f"exit code {code}" if code else "no exit code known")
    died = WorkerDied(f"worker process died ({how}) while running this job")
    died.__cause__ = exc
    return died


def slurm_bundles(jobs: Sequence[J], parallelism: int) -> list[list[J]]:
    """The jobs cut into bundles, one Slurm array task each, whose process runs them one after another. A bundle
    holds jobs of one group (`job_group`) only, in their order (one-round cells before per-class ones), so the
    task loads the group's data and stage models once for all of them (execution.KeptGroup). To keep about
    `parallelism` tasks busy, a group of more than ceil(len(jobs) / parallelism) jobs is split into near-equal
    bundles of at most that many; a job without a group (nothing to share) is a bundle of its own. Bundles come in
    the order of their first job."""
    size = math.ceil(len(jobs) / parallelism)
    groups: dict[Hashable, list[int]] = {}
    for k, job in enumerate(jobs):
        group = job_group(job)
        groups.setdefault(object() if group is None else group, []).append(k)
    bundles = []
    for members in groups.values():
        count = math.ceil(len(members) / size)
        bundles += [members[i * len(members) // count:(i + 1) * len(members) // count] for i in range(count)]
    return [[jobs[k] for k in bundle] for bundle in sorted(bundles)]


def check_launcher(options: LaunchOptions, recorded: Path | None = None) -> None:
    """What the slurm launcher needs, refused before a run starts: submitit, and Slurm's sbatch and srun on PATH
    unless `cluster: local` is asked for (submitit otherwise fell back to running every task on this machine at
    once). `recorded`: the config.yaml a --retry-failed run took the launcher from, which the refusal names."""
    if options.launcher != "slurm":
        return
    import importlib.util

    if importlib.util.find_spec("submitit") is None:
        raise UserError("The slurm launcher needs submitit: pip install 'unlearnbench[slurm]'.")
    missing = " and ".join(c for c in ("sbatch", "srun") if shutil.which(c) is None)  # submitit submits, tasks run
    if options.slurm.cluster == "local" or not missing:
        return
    if recorded:
        raise UserError(f"The run ran on Slurm (as {recorded} records), whose {missing} this machine lacks on PATH; "
                        f"retry on a Slurm login node, or add --launcher local to rerun its failed cells here.")
    raise UserError(f"--launcher slurm needs Slurm's {missing}, not on PATH here; run on a Slurm login node, or add "
                    f"--slurm cluster=local to run the array's tasks on this machine.")


def _slurm(fn, jobs, options: LaunchOptions, on_crash) -> Iterator:
    """Run the jobs as a submitit job array, one task (with its own GPU) per bundle of `slurm_bundles`, and yield
    every job's outcome, bundle by bundle in the order the tasks finish. A task that dies (killed, out of memory,
    out of requeues) yields the outcomes of the jobs it had finished and fails the rest through `on_crash`
    (`_died_in_task`); a re-run or --retry-failed finds what they computed in the cache."""
    check_launcher(options)
    import submitit
    from submitit.core.utils import FailedJobError

    from .store import LogFile

    s = options.slurm
    executor = submitit.AutoExecutor(folder=options.folder / "slurm" / "%j", cluster=s.cluster or "slurm")
    params = {"timeout_min": s.time_min, "slurm_array_parallelism": s.array_parallelism,
              "cpus_per_task": s.cpus_per_task, "mem_gb": s.mem_gb}
    if executor.cluster == "slurm":  # gpus_per_task 0 writes no GPU line (some Slurm versions refuse =0)
        params.update(slurm_partition=s.partition, gpus_per_node=s.gpus_per_task or None,
                      slurm_additional_parameters=dict(s.additional))
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    bundles = slurm_bundles(jobs, s.array_parallelism)
    try:
        running = dict(zip(executor.map_array(RequeueableBundle(fn), bundles), bundles))
    except FailedJobError as exc:  # sbatch refused the array (a partition, an account, a limit): its own words
        said = [line for line in str(exc).splitlines() if line.strip()]
        raise UserError(f"Slurm refused the job array: {said[-1].strip() if said else 'sbatch failed'}; --slurm "
                        f"KEY=VALUE overrides the setting it rejects.") from None
    tasks = f"{len(bundles)} task{'s' * (len(bundles) > 1)}"
    if executor.cluster == "slurm":  # (before: no word of the array while a user waited on the queue)
        array = next(iter(running)).job_id.split("_")[0]  # (submitit writes task k's logs under <array>_<k>/)
        said = f"submitted Slurm job array {array} ({tasks}); its logs: {options.folder / 'slurm' / array}_<task>/"
    else:
        said = f"started {tasks} on this machine (--slurm cluster=local); their logs: {options.folder / 'slurm'}"
    print(said, file=sys.stderr)
    LogFile(options.folder / "log.txt")(said)
    try:
        while running:  # completion order: poll the array, yield whatever finished
            finished = [handle for handle in running if handle.done()]
            if not finished:
                time.sleep(SLURM_POLL_SECONDS)
            for handle in finished:
                bundle = running.pop(handle)
                try:
                    outcomes = handle.result()
                except Exception as exc:
                    outcomes = _died_in_task(handle, bundle, exc, on_crash)
                _progress_path(handle.paths.result_pickle).unlink(missing_ok=True)
                yield from outcomes
    finally:  # stopped early (Ctrl-C, the caller's error): the tasks not yet finished are cancelled, not left to
        for handle in running:  # compute cells a re-run would submit again
            handle.cancel(check=False)
        with contextlib.suppress(OSError):  # the folder submitit makes of the pattern itself, left empty
            (options.folder / "slurm" / "%j").rmdir()


def _died_in_task(handle, bundle: list, exc: BaseException, on_crash) -> list:
    """The outcomes of a bundle whose task ended without a result: those of the jobs it had finished (saved as it
    went, `RequeueableBundle`), the job it was running failed with how the task ended and where its log is, and
    the jobs after it failed as never run (before: every job failed alike, with submitit's message cut mid-sentence,
    hiding the finished jobs' own failures for good when one job kills its task on every try)."""
    import pickle

    try:
        done = pickle.loads(_progress_path(handle.paths.result_pickle).read_bytes())
    except Exception:  # none, or unreadable: every job of the bundle fails
        done = []
    if not isinstance(done, list) or len(done) > len(bundle) or any(
            getattr(getattr(o, "job", job), "cell", None) != getattr(job, "cell", None)
            for o, job in zip(done, bundle)):  # another task's (its id reused)
        done = []
    try:  # Slurm's (OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, ...); the local executor's says FINISHED
        state = "" if handle.state in ("FINISHED", "UNKNOWN") else f" ({handle.state})"
    except Exception:  # Slurm's accounting may not answer
        state = ""
    died = WorkerDied(f"its Slurm task {handle.job_id} ended without a result{state} while running this job; its "
                      f"log: {handle.paths.stderr}")
    died.__cause__ = exc
    running, *after = bundle[len(done):] or [None]
    never = WorkerDied(f"not run: its Slurm task {handle.job_id} ended while running an earlier job of its bundle")
    return done + ([on_crash(running, died)] if running is not None else []) + [on_crash(job, never) for job in after]


def _progress_path(result_pickle: Path) -> Path:
    """Where a task keeps the outcomes of the jobs of its bundle it has finished: beside its result pickle."""
    return result_pickle.with_name(result_pickle.name.replace("_result.pkl", "_done.pkl"))


class RequeueableBundle:
    """A submitit callable running a bundle's jobs in turn, which asks to be requeued with the same bundle when
    preempted or timed out. The outcomes of the jobs it finished travel with the requeued task, which starts again
    at the job that was running (whose stage models already trained come from the cache), and are saved after every
    job, for the submitting process to read where the task dies (`_died_in_task`)."""

    def __init__(self, fn, done: Sequence = ()) -> None:
        self.fn = fn
        self.done = list(done)

    def __call__(self, bundle: list) -> list:
        import cloudpickle
        import submitit

        from .store import atomic_write

        progress = _progress_path(submitit.JobEnvironment().paths.result_pickle)
        if not self.done:  # a file of the same task id is an earlier run's (the local executor's ids are pids)
            progress.unlink(missing_ok=True)
        for job in bundle[len(self.done):]:
            self.done.append(self.fn(job))
            try:  # by value, as submitit pickles the results (plain pickle refused outcomes of local classes)
                atomic_write(progress, cloudpickle.dumps(self.done))
            except Exception:  # best effort: a task that cannot save its progress still finishes its bundle
                pass
        return self.done

    def checkpoint(self, bundle: list):
        import submitit

        return submitit.helpers.DelayedSubmission(RequeueableBundle(self.fn, self.done), bundle)
