"""Launchers: run the same job function in this process, in joblib worker processes, or as Slurm job arrays."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from .errors import UserError

J = TypeVar("J")
R = TypeVar("R")

LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm settings for submitit job arrays (grid YAML `slurm:` or CLI flags)."""

    partition: str | None = None
    time_min: int = 120
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    array_parallelism: int = 64
    additional: dict = field(default_factory=dict)
    cluster: str | None = None  # None: Slurm when available; "local" runs the array on this machine (tests)


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "local"
    workers: int = 1
    gpus: tuple[int, ...] = ()
    threads: int | None = None  # torch CPU threads per worker (default: cores / workers); results depend on it
    slurm: SlurmOptions = SlurmOptions()
    folder: Path = Path(".")

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise UserError(f"Unknown launcher '{self.launcher}'; choose one of: {', '.join(LAUNCHERS)}.")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}.")
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
    """Bind job k to GPU gpus[k % len(gpus)] (round-robin); unchanged when no GPU list is given."""
    if not gpus:
        return list(jobs)
    return [with_device(job, f"cuda:{gpus[k % len(gpus)]}") for k, job in enumerate(jobs)]


def launch(fn: Callable[[J], R], jobs: Sequence[J], options: LaunchOptions,
           on_crash: Callable[[J, BaseException], R]) -> Iterator[R]:
    """Yield fn(job) for every job (in completion order). `fn` must catch its own errors; a worker that dies
    (killed, out of host memory) is attributed to its job through `on_crash` and the other jobs go on."""
    if not jobs:
        return iter(())
    if options.launcher == "slurm":
        return _slurm(fn, jobs, options, on_crash)
    if options.workers == 1:
        return (fn(job) for job in jobs)
    return _joblib(fn, jobs, options.workers, on_crash)


def _joblib(fn, jobs, workers, on_crash) -> Iterator:
    from joblib import Parallel, delayed

    remaining = list(range(len(jobs)))
    try:
        parallel = Parallel(n_jobs=min(workers, len(jobs)), return_as="generator_unordered")
        # joblib consumes the task generator lazily: iterate a fixed range, not the list shrinking below
        for index, result in parallel(delayed(_indexed)(fn, i, jobs[i]) for i in range(len(jobs))):
            remaining.remove(index)
            yield result
    except Exception:  # a worker died: rerun what is left one job per pool so a crash is attributable
        for i in list(remaining):
            try:
                yield Parallel(n_jobs=1)([delayed(fn)(jobs[i])])[0]
            except Exception as exc:
                yield on_crash(jobs[i], exc)


def _indexed(fn, index, job):
    return index, fn(job)


def _slurm(fn, jobs, options: LaunchOptions, on_crash) -> Iterator:
    try:
        import submitit
    except ImportError:
        raise UserError("The slurm launcher needs submitit: pip install 'unlearnbench[slurm]'.") from None
    s = options.slurm
    executor = submitit.AutoExecutor(folder=options.folder / "slurm" / "%j", cluster=s.cluster)
    params = {"timeout_min": s.time_min, "slurm_array_parallelism": s.array_parallelism,
              "cpus_per_task": s.cpus_per_task, "mem_gb": s.mem_gb}
    if executor.cluster == "slurm":
        params.update(slurm_partition=s.partition, gpus_per_node=s.gpus_per_task,
                      slurm_additional_parameters=dict(s.additional))
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    submitted = executor.map_array(RequeueableJob(fn), jobs)
    for job, handle in zip(jobs, submitted):
        try:
            yield handle.result()
        except Exception as exc:
            yield on_crash(job, exc)


class RequeueableJob:
    """A submitit callable that asks to be requeued with the same arguments when preempted or timed out;
    finished cells are cached, so the requeued job resumes where the grid stopped."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, job):
        return self.fn(job)

    def checkpoint(self, job):
        import submitit

        return submitit.helpers.DelayedSubmission(RequeueableJob(self.fn), job)
