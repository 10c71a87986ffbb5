"""Slurm arrays route a group's jobs to the same task: bundles never mix groups, keep their jobs' order, and come
back one outcome per job, whether a task finishes, dies or is requeued (submitit's local executor runs the array)."""
import dataclasses
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from test_fault_tolerance import fake_jobs  # jobs shaped like the runner's, pickled by value
from unlearnbench import UserError
from unlearnbench.launchers import LaunchOptions, SlurmOptions, job_group, launch, slurm_bundles


def test_bundles_hold_one_group_each_in_order_and_number_about_the_array_parallelism():
    jobs = fake_jobs([f"g{n % 3}" for n in range(100)]) + [7, 8]  # three interleaved groups; two jobs without one
    bundles = slurm_bundles(jobs, 8)
    assert sorted(id(j) for b in bundles for j in b) == sorted(id(j) for j in jobs)  # every job exactly once
    assert all(len({job_group(j) for j in b}) == 1 for b in bundles)  # groups never mixed
    assert [7] in bundles and [8] in bundles  # a job without a group is alone
    assert max(map(len, bundles)) <= 13  # ceil(102 / 8)
    assert 8 <= len(bundles) <= 8 + 3 + 2
    for g in ("g0", "g1", "g2"):
        assert [j for b in bundles for j in b if job_group(j) == g] == [j for j in jobs if job_group(j) == g]
    firsts = [jobs.index(b[0]) for b in bundles]
    assert firsts == sorted(firsts)  # in the order of their first job

    few = fake_jobs(["a", "b", "a", "b", "a"])
    for parallelism in (1, 2):  # bundles of up to 5 or 3 jobs: one per group
        assert slurm_bundles(few, parallelism) == [few[0::2], few[1::2]]
    assert slurm_bundles(few, 64) == [[j] for j in few]  # more tasks than jobs: one job each
    with pytest.raises(UserError, match="^array_parallelism must be at least 1, got 0.$"):
        SlurmOptions(array_parallelism=0)
    for name, least, bad in (("time_min", 1, 0), ("mem_gb", 1, -1), ("cpus_per_task", 1, 0), ("gpus_per_task", 0, -1)):
        with pytest.raises(UserError, match=f"^{name} must be at least {least}, got {bad}.$"):
            SlurmOptions(**{name: bad})
    assert SlurmOptions(gpus_per_task=0).gpus_per_task == 0  # a CPU partition


def local_array(tmp_path, parallelism: int) -> LaunchOptions:
    return LaunchOptions(launcher="slurm", folder=tmp_path,
                         slurm=SlurmOptions(cluster="local", time_min=5, array_parallelism=parallelism))


def test_a_groups_jobs_run_in_the_processes_of_its_bundles(tmp_path, capsys):
    """Six jobs of two groups, array_parallelism 2 (bundles of at most 3): group a's four jobs run two by two in
    two processes, group b's two in one; every outcome comes back once. The launch says where the tasks' logs are."""
    def record(job) -> tuple:  # nested, so pickled by value
        import os
        return job.n, job.cell.group, os.getpid()

    jobs = fake_jobs(["a", "b", "a", "a", "b", "a"])
    out = list(launch(record, jobs, local_array(tmp_path, 2), lambda job, exc: ("crashed", job.n, exc)))
    assert sorted(o[0] for o in out) == list(range(6))
    pid = {n: p for n, _, p in out}
    assert pid[0] == pid[2] and pid[3] == pid[5] and pid[1] == pid[4]
    assert len(set(pid.values())) == 3
    said = f"started 3 tasks on this machine (--slurm cluster=local); their logs: {tmp_path / 'slurm'}"
    assert not (tmp_path / "slurm" / "%j").exists()  # submitit's folder of the pattern itself, left empty
    assert capsys.readouterr().err == said + "\n" and (tmp_path / "log.txt").read_text().endswith(said + "\n")


def test_what_slurm_cannot_run_is_one_sentence_before_anything_runs(tmp_path, monkeypatch, capsys):
    """Without Slurm's commands on PATH, submitit ran every task on this machine at once (with --device auto on
    the tasks' cuda, every cell then failed saying CUDA is missing); an unknown cluster and an sbatch that refuses
    the array (a partition) ended in tracebacks. Each is one sentence now, the first two in a dry run too."""
    from conftest import write_grid
    from unlearnbench.cli import main

    with pytest.raises(UserError, match="^Unknown Slurm cluster 'bogus'; choose slurm"):
        SlurmOptions(cluster="bogus")
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    refused = ("--launcher slurm needs Slurm's sbatch and srun, not on PATH here; run on a Slurm login node, or add "
               "--slurm cluster=local to run the array's tasks on this machine.")
    with pytest.raises(UserError, match=f"^{re.escape(refused)}$"):
        list(launch(lambda j: j.n, fake_jobs(["a"]), LaunchOptions(launcher="slurm", folder=tmp_path), None))
    grid = str(write_grid(tmp_path))
    argv = ["--grid", grid, "--launcher", "slurm", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    for extra, said in ((["--dry-run"], refused), ([], refused),
                        (["--dry-run", "--slurm", "cluster=bogus"], "Unknown Slurm cluster 'bogus'")):
        assert main([*argv, *extra]) == 2 and capsys.readouterr().err.startswith(f"error: {said}")
        assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()  # refused before anything is made
    for command, script in (("srun", "exit 0"), ("sbatch", f"cp \"$1\" {tmp_path}/sbatch-$$.sh; echo 'sbatch: error: "
                                                           f"Batch job submission failed: Invalid partition name "
                                                           f"specified' >&2; exit 1")):
        (bare / command).write_text(f"#!/bin/sh\n{script}\n")
        (bare / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bare}:/usr/bin:/bin")
    for gpus in (1, 0):
        options = LaunchOptions(launcher="slurm", folder=tmp_path,
                                slurm=SlurmOptions(partition="bogus", gpus_per_task=gpus))
        with pytest.raises(UserError, match="^Slurm refused the job array: sbatch: error: Batch job submission "
                                            "failed: Invalid partition name specified; --slurm KEY=VALUE overrides "
                                            "the setting it rejects.$"):
            list(launch(lambda j: j.n, fake_jobs(["a"]), options, None))
        [script] = tmp_path.glob("sbatch-*.sh")
        lines = script.read_text().splitlines()
        script.unlink()
        assert "#SBATCH --partition=bogus" in lines
        # a CPU partition's tasks ask for no GPU, rather than for 0 (which some Slurm versions refuse)
        assert [line for line in lines if "gpus" in line] == (["#SBATCH --gpus-per-node=1"] if gpus else [])


def test_retry_failed_runs_on_the_launcher_and_slurm_settings_the_run_used(tmp_path, monkeypatch, capsys):
    """--retry-failed took the cache, device, precision and plugins from config.yaml but not the launcher: after a
    Slurm run its failed cells ran on this machine (a login node: "Device 'cuda' ... use --device cpu")."""
    import yaml

    from conftest import write_grid
    from unlearnbench import runner
    from unlearnbench.cli import main

    out = tmp_path / "run"
    base = ["--out", str(out), "--no-report"]
    assert main(["--grid", str(write_grid(tmp_path, methods=["original"])), "--cache-dir", str(tmp_path / "c"),
                 "--workers", "0", *base]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    slurm = SlurmOptions(cluster="local", time_min=7, partition="123", additional={"qos": "high"})
    config["launcher"] = {"launcher": "slurm", "workers": 0, "gpus": [], "threads": None, "folder": str(out),
                          "slurm": dataclasses.asdict(slurm)}  # as a Slurm run records it
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    seen = []
    monkeypatch.setattr(runner, "run", lambda grid, options, launch, planned: seen.append(launch) or
                        runner.RunResult(out, None, [], 0, 0))
    for extra in ([], ["--slurm", "time_min=9"], ["--launcher", "slurm"], ["--launcher", "local"],
                  ["--launcher=local"], ["--launch", "local"]):
        assert main([*base, "--retry-failed", *extra]) == 0
    assert [(launch.launcher, launch.slurm) for launch in seen] == [
        ("slurm", slurm), ("slurm", dataclasses.replace(slurm, time_min=9)), ("slurm", slurm),
        ("local", SlurmOptions()), ("local", SlurmOptions()), ("local", SlurmOptions())]
    # refusals name the config.yaml the launcher came from, not flags never typed
    config["launcher"]["slurm"]["cluster"] = None
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("PATH", str(tmp_path))
    recorded = out / "config.yaml"
    for extra, said in (([], f"The run ran on Slurm (as {recorded} records), whose sbatch and srun this machine "
                             f"lacks on PATH; retry on a Slurm login node, or add --launcher local to rerun its "
                             f"failed cells here."),
                        (["--workers", "2"], f"--workers sets local worker processes, but the launcher is slurm (as "
                                             f"{recorded} records; add --launcher local to run here)")):
        capsys.readouterr()
        assert main([*base, "--retry-failed", *extra]) == 2 and capsys.readouterr().err.startswith(f"error: {said}")


def test_slurm_names_are_kept_as_written():
    """--slurm partition=123 or partition=on was read as YAML: a number, a boolean, refused as 'expected text'."""
    from unlearnbench.grid import load_grid
    from unlearnbench.planning import slurm_options

    grid = load_grid("smoke")
    assert slurm_options(grid, {"partition": "123", "cluster": "local"}).partition == "123"
    assert slurm_options(grid, {"partition": "on", "time_min": "30"}) == SlurmOptions(partition="on", time_min=30)


def test_a_task_that_dies_fails_the_job_it_was_running_and_keeps_what_it_had_finished(tmp_path, monkeypatch):
    """Group a's middle job ends its process: a's first job comes back as it finished (before: failed with the
    bundle, its own outcome lost), the middle one fails saying which task died and where its log is, the last one
    as never run; group b's bundle comes back normally."""
    import submitit

    monkeypatch.setattr(submitit.local.local.LocalJob, "_results_timeout_s", 1)  # no result pickle to wait for

    class Done(tuple):  # an outcome of a class defined here (the runner's are module-level), pickled by value
        pass

    def job(j) -> tuple:  # nested, so pickled by value
        import os
        if j.n == 2:
            os._exit(3)
        return Done(("ok", j.n))

    jobs = fake_jobs(["a", "b", "a", "b", "a"])
    out = list(launch(job, jobs, local_array(tmp_path, 2), lambda j, exc: ("crashed", j.n, str(exc))))
    assert sorted(tuple(o[:2]) for o in out) == [("crashed", 2), ("crashed", 4), ("ok", 0), ("ok", 1), ("ok", 3)]
    reasons = {o[1]: o[2] for o in out if o[0] == "crashed"}
    said = re.fullmatch(r"its Slurm task (\S+) ended without a result while running this job; its log: (\S+)",
                        reasons[2])
    assert said and Path(said[2]).is_file() and Path(said[2]).parent.parent == tmp_path / "slurm", reasons[2]
    assert reasons[4] == f"not run: its Slurm task {said[1]} ended while running an earlier job of its bundle"


def test_a_dead_tasks_saved_outcomes_count_only_where_they_are_its_bundles_jobs(tmp_path):
    """What a task saved of the jobs it finished comes back with its bundle's failures; a file that is not its
    bundle's (another run's task of the same id: the local executor's ids are process ids), or unreadable, is not
    taken for it: every job fails."""
    import types

    import cloudpickle

    from unlearnbench.launchers import _died_in_task

    jobs = fake_jobs(["x", "y", "z"])
    paths = types.SimpleNamespace(result_pickle=tmp_path / "7_0_result.pkl", stderr=tmp_path / "7_0_0_log.err")
    handle = types.SimpleNamespace(job_id="7_0", state="OUT_OF_MEMORY", paths=paths)

    def outcomes(saved: bytes) -> list:
        (tmp_path / "7_0_done.pkl").write_bytes(saved)
        return _died_in_task(handle, jobs, RuntimeError("gone"), lambda job, exc: (job.n, str(exc)))

    finished = types.SimpleNamespace(job=jobs[0], records=["rows"])
    first, *failed = outcomes(cloudpickle.dumps([finished]))
    assert first.job == jobs[0] and first.records == ["rows"]
    assert failed == [(1, f"its Slurm task 7_0 ended without a result (OUT_OF_MEMORY) while running this job; "
                          f"its log: {tmp_path / '7_0_0_log.err'}"),
                      (2, "not run: its Slurm task 7_0 ended while running an earlier job of its bundle")]
    for saved in (cloudpickle.dumps([types.SimpleNamespace(job=jobs[1])]), cloudpickle.dumps([finished] * 4),
                  cloudpickle.dumps({"a": 1}), b"not a pickle"):
        assert [o[0] for o in outcomes(saved)] == [0, 1, 2]


def test_a_preempted_bundle_is_requeued_and_resumes_at_the_job_it_was_running(tmp_path):
    """The second job of a three-job bundle is preempted (SIGUSR2, as Slurm sends) the first time it runs: the
    task is requeued with the bundle, keeps the first job's outcome and runs the second and third in its new
    process; each outcome comes back once."""
    ran = tmp_path / "ran"
    ran.mkdir()

    def job(j) -> tuple:  # nested, so pickled by value
        import os
        import time
        runs = ran / str(j.n)
        with runs.open("a") as f:
            f.write(f"{os.getpid()}\n")
        if j.n == 1 and len(runs.read_text().split()) == 1:
            os.kill(os.getpid(), signal.SIGUSR2)  # submitit checkpoints and requeues from its handler
            time.sleep(30)
        return j.n, os.getpid()

    jobs = fake_jobs(["a", "a", "a"])
    out = list(launch(job, jobs, local_array(tmp_path, 1), lambda j, exc: ("crashed", j.n, exc)))
    assert sorted(n for n, _ in out) == [0, 1, 2], out
    runs = {n: (ran / str(n)).read_text().split() for n in range(3)}
    assert Counter(map(len, runs.values())) == Counter({1: 2, 2: 1})  # the preempted job alone ran twice
    first, second = runs[1]
    assert runs[0] == [first] and runs[2] == [second] and first != second
    assert dict(out) == {0: int(first), 1: int(second), 2: int(second)}


def test_slurm_jobs_compute_on_the_tasks_device_and_cpus_not_the_submitting_machines(tmp_path, monkeypatch, capsys):
    """A login node without a GPU planned `--device auto` as cpu (every job computing on the CPU of tasks given a
    GPU, under CPU keys) and refused `--device cuda`; each job ran as many torch threads as the login node has
    cores; `--gpus` sent a one-GPU task's jobs to cuda:1. Now auto is the tasks' device (cuda where gpus_per_task
    asks for GPUs), checked in the task; threads are cpus_per_task; --gpus and a GPU index are refused."""
    import torch

    from conftest import write_grid
    from unlearnbench import runner
    from unlearnbench.cli import main
    from unlearnbench.execution import make_jobs

    assert not torch.cuda.is_available()  # this machine: a login node without a GPU
    seen = []
    monkeypatch.setattr(runner, "run", lambda grid, options, launch, planned: seen.append(
        (grid, options, launch, planned)) or runner.RunResult(tmp_path / "run", None, [], 0, 0))
    grid = str(write_grid(tmp_path))
    argv = ["--grid", grid, "--launcher", "slurm", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")]
    for extra, device, threads in (([], "cuda", 8), (["--slurm", "gpus_per_task=0", "--slurm", "cpus_per_task=3"],
                                                     "cpu", 3), (["--device", "cuda", "--threads", "2"], "cuda", 2)):
        seen.clear()
        main([*argv, *extra, "--no-report"])
        [(g, options, launch, planned)] = seen
        assert planned.device.type == device and options.run_device().type == device
        jobs = make_jobs("cell", planned.cells[:2], g, options, launch, planned.device, tmp_path / "log.txt")
        assert {(job.device, job.threads) for job in jobs} == {(device, threads)}
    for extra, said in ((["--gpus", "0,1"], "--gpus picks GPUs of this machine"),
                        (["--device", "cuda:1"], "--device cuda:1 names a GPU of this machine"),
                        (["--device", "cuda", "--slurm", "gpus_per_task=0"], "--device cuda asks for a GPU, but the Slurm tasks get none")):
        capsys.readouterr()
        assert main([*argv, *extra]) == 2 and capsys.readouterr().err.startswith(f"error: {said}")


def test_run_and_tune_called_from_python_plan_slurm_jobs_on_the_tasks_device_too():
    """The CLI set the tasks' device; `runner.run` and `tuning.tune` called with a slurm LaunchOptions planned on
    this machine's (cpu here) while their jobs ran cpus_per_task threads."""
    from unlearnbench.planning import RunOptions, on_launcher

    options = on_launcher(RunOptions(device="auto"), SlurmOptions())
    assert (options.device, options.in_slurm_tasks, options.run_device().type) == ("cuda", True, "cuda")
    assert on_launcher(options, SlurmOptions(gpus_per_task=0)) is options  # decided once
    assert on_launcher(RunOptions(device="auto"), SlurmOptions(gpus_per_task=0)).device == "cpu"
    assert on_launcher(RunOptions(device="auto"), None).device == "auto"  # local: resolved where it runs
