"""Runs that survive kills, corrupt files, concurrent writers and bad cells; the same results from every launcher."""
import dataclasses
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from unlearnbench import UserError
from unlearnbench.cli import main
from unlearnbench.grid import load_grid
from unlearnbench.launchers import (MAX_DEFAULT_CPU_WORKERS, LaunchOptions, SlurmOptions, WorkerSlots,
                                   default_workers, launch)
from unlearnbench.planning import plan
from unlearnbench.runner import RunOptions, merged_only, run
from unlearnbench.store import FAILURE_COLUMNS, Cache, RunFolder, read_run_config

from conftest import SMALL_MNIST, write_grid

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"unlearn_seconds", "device_seconds", "peak_memory_bytes"}
KEY = ["dataset", "backbone", "method", "params", "seed", "forget_class", "split", "metric", "value"]


def comparable(path: Path) -> pd.DataFrame:
    """records.csv without the timing rows, which differ from run to run by nature."""
    frame = pd.read_csv(path)
    return frame[~frame.metric.isin(TIMING)][KEY].reset_index(drop=True)


def tiny(tmp_path, filename="grid.yaml", **kw):
    """Three forget classes on a subset of mnist5k: these tests check how runs are launched, resumed and
    recovered, for which any trained model will do."""
    return write_grid(tmp_path, filename, **{"forget_classes": [0, 1, 2], "datasets": [SMALL_MNIST], **kw})


def test_killed_run_resumes_to_the_same_records(tmp_path):
    grid_file = tiny(tmp_path)
    clean = run(load_grid(str(grid_file)), RunOptions(out=tmp_path / "clean", cache_dir=tmp_path / "cache-clean",
                                                      device="cpu", progress=False, report=False))
    cache = tmp_path / "cache-killed"
    argv = [sys.executable, str(ROOT / "run_bench.py"), "--grid", str(grid_file), "--out", str(tmp_path / "killed"),
            "--cache-dir", str(cache), "--device", "cpu", "--quiet", "--workers", "0",  # no worker outlives the kill
            "--no-report"]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and len(list((cache / "cells").glob("*.json"))) < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((cache / "cells").glob("*.json")))
    assert 0 < done_before < 4, "the kill should land mid-grid"
    resumed = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    computed, cached = map(int, re.search(r"(\d+) cells computed(?: \([^)]*\))?, (\d+) from cache", resumed.stdout).groups())
    assert cached == done_before and computed == 4 - done_before, resumed.stdout
    pd.testing.assert_frame_equal(comparable(tmp_path / "killed" / "records.csv"),
                                  comparable(clean.run_dir / "records.csv"))


def test_default_workers_are_one_per_core_on_a_cpu_and_one_on_a_gpu(monkeypatch):
    import unlearnbench.launchers as launchers

    for cores, expected in ((1, 1), (2, 2), (16, MAX_DEFAULT_CPU_WORKERS), (None, 1)):
        monkeypatch.setattr(launchers.os, "cpu_count", lambda: cores)
        assert default_workers("cpu") == expected
        assert default_workers("cuda") == 1 and default_workers("cpu", "slurm") == 1


def test_worker_pool_returns_every_job_exactly_once():
    """More jobs than joblib dispatches up front: each comes back once (a shrinking task list once lost 12 of 28)."""
    def sleepy(job: int) -> int:  # nested, so pickled by value: workers need not import this module (and torch)
        time.sleep((job * 7919 % 13) / 100)  # uneven durations, so jobs finish out of order
        return job

    done = list(launch(sleepy, list(range(40)), LaunchOptions(workers=2), lambda job, exc: ("crashed", job)))
    assert sorted(done) == list(range(40))


def fake_jobs(groups: list[str]) -> list:
    """Jobs shaped like the runner's (a `cell` with a `group`, a `device`); classes defined here are pickled by
    value, so workers need not import this module."""
    @dataclasses.dataclass(frozen=True)
    class FakeCell:
        group: str

    @dataclasses.dataclass(frozen=True)
    class FakeJob:
        cell: FakeCell
        n: int
        device: str = "cpu"

    return [FakeJob(FakeCell(g), n) for n, g in enumerate(groups)]


def test_four_workers_on_four_gpus_each_keep_one_gpu_and_build_a_groups_stages_once():
    """Fake devices on the CPU: each job reports its worker's pid and the device it was handed. Every worker sees
    one device for its whole life and the four devices are distinct. Within a phase no worker comes back to a
    group it left, and a worker starts the next phase with the group it ended on (its kept stages)."""
    def record(job) -> tuple:  # nested, so pickled by value
        import os
        import time
        time.sleep((job.n * 7919 % 7) / 200)  # uneven durations
        return os.getpid(), job.device, job.cell.group

    jobs = fake_jobs([f"g{n % 3}" for n in range(36)])  # three groups, interleaved
    phases = []
    with WorkerSlots() as slots:
        for phase in (jobs[:18], jobs[18:]):  # two phases share the workers, as a run's do
            phases.append(list(launch(record, phase, LaunchOptions(workers=4, gpus=(0, 1, 2, 3)),
                                      lambda j, e: e, slots)))
    devices = {}
    for pid, device, _ in phases[0] + phases[1]:
        devices.setdefault(pid, set()).add(device)
    assert len(devices) == 4 and all(len(d) == 1 for d in devices.values())
    assert sorted(d for ds in devices.values() for d in ds) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    for pid in devices:
        groups = [[g for p, _, g in out if p == pid] for out in phases]
        for seq in groups:
            runs = [g for i, g in enumerate(seq) if i == 0 or g != seq[i - 1]]
            assert len(runs) == len(set(runs)), f"worker {pid} went back to a group: {seq}"
        if groups[0] and groups[1]:
            assert groups[1][0] == groups[0][-1], f"worker {pid} dropped its group between phases: {groups}"


def test_one_worker_with_gpus_uses_the_first_for_every_job():
    jobs = fake_jobs(["g"] * 3)
    out = list(launch(lambda j: j.device, jobs, LaunchOptions(workers=1, gpus=(2, 3)), lambda j, e: e))
    assert out == ["cuda:2"] * 3


def test_a_worker_killed_mid_job_fails_that_job_alone_and_the_rest_run_in_parallel_workers(tmp_path):
    """SIGKILL inside job 0: the driver survives, job 0 alone is reported with how its worker died, and every other
    job finishes in worker processes (never the driver), two at a time from the moment of the crash on."""
    import os

    def job(j: int) -> tuple:  # nested, so pickled by value: workers need not import this module (and torch)
        import os
        if j == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        (tmp_path / str(j)).touch()  # jobs 1-4 meet in pairs (1, 2), (3, 4): only two workers at once get through
        partner = tmp_path / str(j + 1 if j % 2 else j - 1)
        deadline = time.time() + 20
        while j < 5 and not partner.exists() and time.time() < deadline:
            time.sleep(0.02)
        return "ok", j, os.getpid(), j == 5 or partner.exists()

    out = list(launch(job, range(6), LaunchOptions(workers=2), lambda j, exc: ("crashed", j, str(exc))))
    assert [o for o in out if o[0] == "crashed"] == [
        ("crashed", 0, "worker process died (killed by signal 9, SIGKILL) while running this job")]
    done = {o[1]: o[2:] for o in out if o[0] == "ok"}
    assert sorted(done) == [1, 2, 3, 4, 5]
    assert all(met for _, met in done.values()), "jobs 1-4 met their partner: two workers ran at once"
    pids = {pid for pid, _ in done.values()}
    assert os.getpid() not in pids and len(pids) == 2, "two live workers, the killed one replaced, none the driver"


def test_one_worker_runs_the_jobs_in_a_worker_process_whose_death_fails_that_job_alone():
    """A job ending its process (os._exit) with one worker is a crashed job, as with several, and the others run;
    zero workers run the jobs in this process."""
    import os

    def job(j: int) -> tuple:  # nested, so pickled by value
        import os
        if j == 1 and os.getpid() != driver:  # (in the driver, as one worker once ran them, it would end pytest)
            os._exit(3)
        return "ok", j, os.getpid()

    driver = os.getpid()
    out = list(launch(job, range(3), LaunchOptions(workers=1), lambda j, exc: ("crashed", j, str(exc))))
    assert out[1] == ("crashed", 1, "worker process died (exit code 3) while running this job"), out
    assert [o[:2] for o in out if o[0] == "ok"] == [("ok", 0), ("ok", 2)] and driver not in {o[2] for o in out}
    assert {pid for *_, pid in launch(job, [0, 2], LaunchOptions(), lambda j, exc: exc)} == {driver}


def test_the_slurm_launcher_yields_in_completion_order(tmp_path):
    """The job submitted first sleeps longest (submitit's local executor runs the array): it comes back last."""
    def sleeps(seconds: float) -> float:  # nested, so pickled by value: the array's processes cannot import tests
        time.sleep(seconds)
        return seconds

    options = LaunchOptions(launcher="slurm", folder=tmp_path, slurm=SlurmOptions(cluster="local", time_min=5))
    assert list(launch(sleeps, [5.0, 0.2], options, lambda job, exc: ("crashed", job, exc))) == [0.2, 5.0]


def test_a_stopped_slurm_launch_cancels_the_tasks_it_submitted(tmp_path):
    """Ctrl-C ends the driver's launch: the array's unfinished tasks are cancelled (here: the local executor's
    process is stopped before it writes its marker), so a re-run does not compute their cells twice."""
    def writes_after(seconds: float) -> float:  # nested, so pickled by value
        time.sleep(seconds)
        if seconds > 1:
            (tmp_path / "finished").write_text("the task was not cancelled")
        return seconds

    options = LaunchOptions(launcher="slurm", folder=tmp_path, slurm=SlurmOptions(cluster="local", time_min=5))
    outcomes = launch(writes_after, [4.0, 0.2], options, lambda job, exc: ("crashed", job, exc))
    assert next(outcomes) == 0.2
    outcomes.close()  # what a KeyboardInterrupt raised in the launch's poll does to it
    time.sleep(6)
    assert not (tmp_path / "finished").exists()


KILLER_PLUGIN = """
import os
import signal
from unlearnbench import SingleClassModel, Unlearner


class Killer(Unlearner):
    name = "killer"

    def unlearn(self, task):
        if task.forget_class == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return SingleClassModel(task.copy_original(), task.forget_class)
"""


def test_a_cell_that_kills_its_worker_is_a_failed_cell_and_the_run_goes_on(tmp_path, shared_cache):
    """Through the runner with two workers: the killed cell is in failures.csv saying its worker was killed by
    signal 9; every other cell has its records."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "killer.py").write_text(KILLER_PLUGIN)
    grid = load_grid(str(tiny(tmp_path, methods=["killer", "original"])))
    result = run(grid, RunOptions(out=tmp_path / "run", cache_dir=shared_cache, device="cpu", progress=False,
                                  plugins=[tmp_path / "plugins"], report=False), LaunchOptions(workers=2, threads=1))
    failures = pd.read_csv(result.run_dir / "failures.csv")
    assert failures[["method", "forget_class", "status"]].values.tolist() == [["killer", 1, "failed"]]
    assert "worker process died (killed by signal 9, SIGKILL)" in failures.reason[0], failures.reason[0]
    records = pd.read_csv(result.run_dir / "records.csv")
    assert sorted(records[records.method == "killer"].forget_class.unique()) == [0, 2]
    # the original's cell may come from the shared cache (an earlier test of the same grid): the killer's are new
    assert "original" in set(records.method) and result.computed + result.cached == 3 and result.computed >= 2


def test_workers_and_submitit_give_the_same_records_as_one_process(tmp_path, monkeypatch):
    """CPU results are bit-reproducible for a fixed number of torch threads per worker, whatever the launcher
    (Slurm with array_parallelism 2: the three retrain cells run as bundles of two and one). Workers whose threads
    outnumber the cores (here: as if the machine had one) measure long seconds: their cost rows say so, the cache
    keeps that with them, and the report's index says it (before: only a warning on stderr)."""
    from unlearnbench.report.index import run_facts
    from unlearnbench.report.records import load_runs

    grid = load_grid(str(tiny(tmp_path)))
    serial = run(grid, RunOptions(out=tmp_path / "serial", cache_dir=tmp_path / "cache-serial", device="cpu",
                                  progress=False, report=False), LaunchOptions(threads=1))
    monkeypatch.setattr("os.cpu_count", lambda: 1)  # this process's view: the workers are planned crowded
    for name, launch in [("workers", LaunchOptions(workers=2, threads=1)),
                         ("slurm", LaunchOptions(launcher="slurm", threads=1,
                                                 slurm=SlurmOptions(cluster="local", time_min=5,
                                                                    array_parallelism=2)))]:
        result = run(grid, RunOptions(out=tmp_path / name, cache_dir=tmp_path / f"cache-{name}", device="cpu",
                                      progress=False, report=False), launch)
        assert result.computed == 4 and not result.failures, (name, result.failures)
        if name == "slurm":  # one task for the original, two for the retrain cells, one for the last cell
            assert sum(d.name.isdigit() for d in (result.run_dir / "slurm").iterdir()) == 4
        pd.testing.assert_frame_equal(comparable(result.run_dir / "records.csv"),
                                      comparable(serial.run_dir / "records.csv"))
        cost = pd.read_csv(result.run_dir / "records.csv").query("metric == 'unlearn_seconds'")
        marked = cost.device.str.contains("; measured with 2 workers × 1 threads on 1 cores", regex=False)
        # the three retrain cells ran together; the one-round cell (the original's) in a phase of its own
        assert marked.sum() == (3 if name == "workers" else 0), cost.device.tolist()
    records, [source] = load_runs([tmp_path / "workers"])
    assert "measured with 2 workers × 1 threads on 1 cores" in dict(run_facts(source, records))["oversubscribed"]


def test_corrupt_checkpoint_and_record_are_recomputed_not_used(tmp_path):
    grid = load_grid(str(tiny(tmp_path, methods=["original"])))
    cache_dir = tmp_path / "cache"
    run(grid, RunOptions(out=tmp_path / "a", cache_dir=cache_dir, device="cpu", progress=False, report=False))
    weights = next((cache_dir / "models" / "original").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    cell = next((cache_dir / "metric-records").glob("*.json"))  # the accuracy rows of the one cell
    cell.write_text(cell.read_text().replace("acc_retain", "acc_retian"))  # tampered: hash no longer matches
    again = run(grid, RunOptions(out=tmp_path / "b", cache_dir=cache_dir, device="cpu", progress=False, report=False))
    assert (again.computed, again.cached) == (1, 0)
    assert "stage original" in (tmp_path / "b" / "log.txt").read_text()  # retrained, not loaded
    assert "its cached file is damaged or does not load, so it is trained again" in (tmp_path / "b" / "log.txt").read_text()
    pd.testing.assert_frame_equal(comparable(tmp_path / "a" / "records.csv"), comparable(tmp_path / "b" / "records.csv"))


def test_a_damaged_cached_artifact_recomputes_its_cell_and_is_never_copied_into_a_run(tmp_path):
    """WF-Net's α, cached beside its cell: truncated (or rewritten) after the run, it was copied into the next run's
    folder unchecked, its report failed, and deleting the copy brought it back; now the cell is computed again."""
    grid = load_grid(str(tiny(tmp_path, methods=["wfnet"], forget_classes=[0, 1], recipe={"epochs": 1})))
    cache_dir = tmp_path / "cache"
    run(grid, RunOptions(out=tmp_path / "a", cache_dir=cache_dir, device="cpu", progress=False))
    [alpha] = (cache_dir / "artifacts").glob("*.safetensors")
    [copied] = (tmp_path / "a" / "artifacts" / "wfnet").glob("*.safetensors")
    written = alpha.read_bytes()
    assert copied.read_bytes() == written
    for name, damaged in (("b", written[:100]), ("c", written[:-1] + bytes([written[-1] ^ 1]))):
        alpha.write_bytes(damaged)  # truncated; one bit flipped in a value (the file still reads)
        again = run(grid, RunOptions(out=tmp_path / name, cache_dir=cache_dir, device="cpu", progress=False))
        assert (again.computed, again.cached, again.report_error) == (1, 0, None)
        assert "all classes: its cached artifacts file is damaged, so it is computed again" in (
            tmp_path / name / "log.txt").read_text()  # as a damaged model is said to be trained again
        assert alpha.read_bytes() == written  # computed again: the same α
        assert next((tmp_path / name / "artifacts" / "wfnet").glob("*.safetensors")).read_bytes() == written
    assert run(grid, RunOptions(out=tmp_path / "d", cache_dir=cache_dir, device="cpu", progress=False)).cached == 1
    cache = Cache(tmp_path / "legacy")  # an entry written before it held the file's digest: checked for reading
    cache.save_cell("k", [{"metric": "x", "value": 1.0}])
    cache.artifact_path("k").parent.mkdir(parents=True)
    cache.artifact_path("k").write_bytes(written)
    assert cache.load_cell("k") is not None
    cache.artifact_path("k").write_bytes(written[:100])
    assert cache.load_cell("k") is None
    assert not cache.artifact_path("k").exists()  # deleted: not copied into a run even where the cell then fails


def test_a_run_config_may_hold_only_filters_the_python_api_wrote_as_numbers(tmp_path):
    RunFolder(tmp_path).write_config({"grid": {"name": "g"}, "only": [{"seed": 0}, {"method": "retrain"}]})
    assert read_run_config(tmp_path)["only"] == [{"seed": 0}, {"method": "retrain"}]


@pytest.mark.parametrize("content", ["null", "[1, 2]", "5", '"records"', "{}", '{"records": [], "sha256": 1}'])
def test_a_cell_file_that_is_not_a_records_mapping_is_a_cache_miss(tmp_path, content):
    cache = Cache(tmp_path / "cache")
    cache.save_cell("k", [{"metric": "acc", "value": 1.0}])
    assert cache.load_cell("k") == [{"metric": "acc", "value": 1.0}]
    cache._cell_path("k").write_text(content)
    assert cache.load_cell("k") is None


def test_a_crafted_pickle_in_the_cache_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.write_text, (marker, "x"))

    cache = Cache(tmp_path / "cache")
    target, meta = cache._model_paths("original", "k")
    target.parent.mkdir(parents=True)
    payload = pickle.dumps(Exploit())
    target.write_bytes(payload)
    import hashlib
    import json
    meta.write_text(json.dumps({"sha256": hashlib.sha256(payload).hexdigest()}))
    import torch
    assert cache.load_model("original", "k", torch.nn.Linear(2, 2)) is None
    assert not marker.exists()


def test_two_runs_on_one_folder_are_refused(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        with pytest.raises(UserError, match="in use by another run"):
            run(load_grid(str(tiny(tmp_path))), RunOptions(out=tmp_path / "run", cache_dir=tmp_path / "c",
                                                           device="cpu", progress=False, report=False))


NAN_PLUGIN = """
import os
import torch
from unlearnbench import SingleClassModel, Unlearner


class Poisoned(Unlearner):
    name = "poisoned"

    def unlearn(self, task):
        model = task.copy_original()
        if os.path.exists(os.environ["POISON_FLAG"]):
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
        return SingleClassModel(model, task.forget_class)
"""


def test_nan_cells_fail_alone_and_retry_failed_reruns_only_them(tmp_path, shared_cache, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "poisoned.py").write_text(NAN_PLUGIN)
    flag = tmp_path / "flag"
    flag.write_text("")
    monkeypatch.setenv("POISON_FLAG", str(flag))
    grid_file = tiny(tmp_path, methods=["poisoned", "original"])
    common = ["--out", str(tmp_path / "run"), "--cache-dir", str(shared_cache), "--plugins", str(plugins),
              "--device", "cpu", "--quiet", "--workers", "0", "--no-report"]
    assert main(["--grid", str(grid_file), *common]) == 1
    failures = pd.read_csv(tmp_path / "run" / "failures.csv")
    assert (failures.status == "failed").sum() == 3
    assert failures.reason.str.contains("not finite").all()
    # a later run of one method into the folder keeps the other's failures, and the retry still finds them
    assert main(["--grid", str(grid_file), *common, "--only", "method=original"]) == 0
    assert (pd.read_csv(tmp_path / "run" / "failures.csv").status == "failed").sum() == 3
    flag.unlink()
    # the retry takes the cache, plugins and device from the folder's config.yaml: no flag needs repeating
    assert main(["--retry-failed", "--out", str(tmp_path / "run"), "--quiet", "--workers", "0", "--no-report"]) == 0
    records = pd.read_csv(tmp_path / "run" / "records.csv")
    assert set(records.method) == {"poisoned", "original"}
    assert pd.read_csv(tmp_path / "run" / "failures.csv").empty
    log = (tmp_path / "run" / "log.txt").read_text().split("grid 'tiny'")[-1]
    assert log.count("done ") == 3  # only the three failed cells ran again


def test_bad_inputs_each_give_one_sentence(tmp_path, capsys):
    cases = {
        "metric": (tiny(tmp_path, "metric.yaml", metrics=["acuracy"]), "Unknown metric 'acuracy' (did you mean 'accuracy'?)"),
        "launcher": (tiny(tmp_path), "Unknown launcher 'sge'"),
        "arch": (tiny(tmp_path, "arch.yaml", backbones=[{"name": "vgg16", "width": 0.0625, "pretrained": str(tmp_path / "w.pth")}],
                      methods=["original"]), None),
    }
    import torch

    from unlearnbench.models import BackboneSpec, build_backbone
    torch.save(build_backbone(BackboneSpec("resnet18", 0.0625), 10, 1, 28).state_dict(), tmp_path / "w.pth")
    assert main(["--grid", str(cases["metric"][0]), "--dry-run"]) == 2
    assert cases["metric"][1] in capsys.readouterr().err
    assert main(["--grid", str(cases["launcher"][0]), "--launcher", "sge", "--out", str(tmp_path / "l")]) == 2
    assert cases["launcher"][1] in capsys.readouterr().err
    assert main(["--grid", str(cases["arch"][0]), "--out", str(tmp_path / "arch"), "--cache-dir", str(tmp_path / "c"),
                 "--device", "cpu", "--quiet", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "do not fit this architecture" in out


def _file(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def _other_run(tmp_path: Path) -> Path:
    """A run folder of another grid, holding records that must survive."""
    RunFolder(tmp_path / "run").write_config({"grid": {"name": "other", "seeds": [7]}})
    _file(tmp_path / "run" / "records.csv", "finished results")
    return tmp_path / "run"


def _records_folder(tmp_path: Path, config: str) -> Path:
    """A folder holding an empty records.csv and the config.yaml `config`."""
    _file(tmp_path / "r" / "records.csv", ",".join(KEY))
    return _file(tmp_path / "r" / "config.yaml", config).parent


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _same_grid_run(tmp_path: Path, failures: str | bytes) -> Path:
    """A run folder of the tiny grid whose failures.csv holds `failures`."""
    from unlearnbench.runner import grid_dict

    RunFolder(tmp_path / "run").write_config({"grid": grid_dict(load_grid(str(tiny(tmp_path))))})
    _file(tmp_path / "run" / "records.csv", ",".join(KEY) + "\n")
    _file(tmp_path / "run" / "failures.csv", failures)
    return tmp_path / "run"


BAD_INPUTS = {  # argv built in tmp_path → the one sentence printed; none of them trains anything
    "grid is a folder": (lambda t: ["--grid", str(t), "--dry-run"], "is a folder; give a YAML file."),
    "grid not UTF-8": (lambda t: ["--grid", str(_file(t / "g.yaml", b"\xff\xfe\x00")), "--dry-run"],
                       "g.yaml is not UTF-8 text"),
    "params of a method without any": (
        lambda t: ["--grid", str(tiny(t, methods=[{"name": "original", "params": {"lr": 0.1}}])), "--dry-run"],
        "Method 'original' takes no parameters; remove 'lr' from its params."),
    "threads 0": (lambda t: ["--grid", str(tiny(t)), "--threads", "0", "--dry-run"],
                  "--threads must be at least 1, got 0."),
    "device meta": (lambda t: ["--grid", str(tiny(t)), "--device", "meta", "--dry-run"],
                    "Unknown device 'meta'; use auto, cpu, cuda or cuda:N."),
    "data root missing": (lambda t: ["--grid", str(tiny(t)), "--data-root", str(t / "nowhere"), "--dry-run"],
                          "nowhere does not exist; pass the folder holding the datasets"),
    "data root a file": (lambda t: ["--grid", str(tiny(t)), "--data-root", str(tiny(t)), "--dry-run"],
                         "grid.yaml is not a folder; pass the folder holding the datasets"),
    "only value in no cell": (lambda t: ["--grid", str(tiny(t)), "--only", "method=orignal", "--dry-run"],
                              "--only method=orignal matches no cell of grid 'tiny' (did you mean 'original'?)"),
    "metric settings not a mapping": (lambda t: ["--grid", str(tiny(t, metric_settings={"relearn": 5})), "--dry-run"],
                                      "metric_settings.relearn of grid 'tiny' must be a mapping of setting: value"),
    "metric setting of the wrong type": (
        lambda t: ["--grid", str(tiny(t, metric_settings={"relearn": {"max_epochs": "5"}})), "--dry-run"],
        "'max_epochs' in metric_settings.relearn of grid 'tiny' must be an integer like its default 100, got '5'."),
    "metric setting out of its range": (
        lambda t: ["--grid", str(tiny(t, metric_settings={"relearn": {"max_epochs": -5}})), "--dry-run"],
        "metric_settings.relearn.max_epochs must be ≥ 1, got -5."),
    "relearn cap of 0 epochs": (  # before: accepted, and a class below target read as never relearned
        lambda t: ["--grid", str(tiny(t, metric_settings={"relearn": {"max_epochs": 0}})), "--dry-run"],
        "metric_settings.relearn.max_epochs must be ≥ 1, got 0."),
    "metric setting outside its interval": (
        lambda t: ["--grid", str(tiny(t, metric_settings={"epsilon": {"delta": 0.7}})), "--dry-run"],
        "metric_settings.epsilon.delta must be in [0, 0.5), got 0.7."),
    "metric seed out of numpy's range": (
        lambda t: ["--grid", str(tiny(t, metric_settings={"mia": {"seed": -1}})), "--dry-run"],
        "'seed' in metric_settings.mia of grid 'tiny' must be in [0, 2^32), got -1."),
    "ImageFolder option on another dataset": (
        lambda t: ["--grid", str(tiny(t, datasets=[{"name": "mnist5k", "augment": True}])), "--dry-run"],
        "'augment' of dataset 'mnist5k' in"),
    "unknown augmentation": (
        lambda t: ["--grid", str(tiny(t, datasets=[{"name": "imagefolder", "path": str(t), "augment": True}])),
                   "--dry-run"], "must be one of none, crop, flip, crop_flip, got True."),
    "two datasets with one label": (
        lambda t: ["--grid", str(tiny(t, datasets=[{"name": "imagefolder", "path": str(t / "a")},
                                                   {"name": "imagefolder", "path": str(t / "b"), "image_size": 16}])),
                   "--dry-run"], "Dataset 'imagefolder' appears 2 times in"),
    "retry config not a mapping": (
        lambda t: ["--retry-failed", "--out", str(_file(t / "r" / "config.yaml", "[1]").parent)],
        "config.yaml is not an unlearnbench run config: it has no 'grid' mapping."),
    "retry config without grid": (
        lambda t: ["--retry-failed", "--out", str(_file(t / "r" / "config.yaml", "a: 1").parent)],
        "config.yaml is not an unlearnbench run config: it has no 'grid' mapping."),
    "retry config with plugins as text": (
        lambda t: ["--retry-failed", "--out", str(_file(t / "r" / "config.yaml", "grid: {}\nplugins: p.py").parent)],
        "config.yaml is not an unlearnbench run config: its 'plugins' must be a list of paths, got 'p.py'; fix or "
        "delete that field."),
    "retry config with an --only list of text": (
        lambda t: ["--retry-failed", "--out", str(_file(t / "r" / "config.yaml", "grid: {}\nonly: [a]").parent)],
        "its 'only' must be a mapping of --only key: values, or a list of them, got ['a']; fix or delete that field."),
    "report of a config whose metric settings are not mappings": (
        lambda t: ["report", str(_records_folder(t, "grid: {}\nmetric_settings: {relearn: 5}"))],
        "its 'metric_settings' must be a mapping of metric: its settings, got {'relearn': 5}; fix or delete that "
        "field."),
    "cache dir is a file": (
        lambda t: ["--grid", str(tiny(t)), "--cache-dir", str(_file(t / "f", "x")), "--device", "cpu"],
        "f is a file; pass a folder."),
    "cache dir is a file, in a dry run": (  # the run refuses it: its dry run passed
        lambda t: ["--grid", str(tiny(t)), "--cache-dir", str(_file(t / "f", "x")), "--device", "cpu", "--dry-run"],
        "f is a file; pass a folder."),
    "workers with the slurm launcher": (  # ignored before
        lambda t: ["--grid", str(tiny(t)), "--launcher", "slurm", "--workers", "3", "--dry-run"],
        "--workers sets local worker processes, but the launcher is slurm"),
    "out holds another grid": (lambda t: ["--grid", str(tiny(t)), "--out", str(_other_run(t)), "--device", "cpu"],
                               "holds a run of grid 'other' with a different configuration (its backbones, datasets, "),
    "out holds another grid, in a dry run": (  # the dry run printed the plan the run then refused
        lambda t: ["--grid", str(tiny(t)), "--out", str(_other_run(t)), "--device", "cpu", "--dry-run"],
        "holds a run of grid 'other' with a different configuration"),
    "out holds a tuning": (  # the run's files were written beside tuned.yaml and trials.csv
        lambda t: ["--grid", str(tiny(t)), "--out", str(_file(t / "run" / "tuned.yaml", "tuned: {}\n").parent),
                   "--device", "cpu"], "holds a tuning (tuned.yaml, trials.csv), not a run; pass another --out."),
    "tune into a run folder": (  # tuned.yaml, trials.csv and a log were written beside a run's records
        lambda t: ["tune", "--grid", str(tiny(t)), "--out", str(_other_run(t)), "--device", "cpu"],
        "holds a run (config.yaml, records.csv), not a tuning; pass another --out."),
    "out holds a folder named records.csv": (  # a traceback once every cell had been computed
        lambda t: ["--grid", str(tiny(t)), "--out", str(_folder(t / "run" / "records.csv").parent), "--device", "cpu"],
        "records.csv is a folder where the run writes its records.csv; move it away, or pass another --out."),
    "out holds a file named report": (
        lambda t: ["--grid", str(tiny(t)), "--out", str(_file(t / "run" / "report", "x").parent), "--device", "cpu"],
        "report is a file where the run writes its report; move it away, or pass another --out."),
    "out holds a file named artifacts, in a dry run": (  # (the run failed once every cell had been computed)
        lambda t: ["--grid", str(tiny(t)), "--out", str(_file(t / "run" / "artifacts", "x").parent), "--device", "cpu",
                   "--dry-run"], "artifacts is a file where the run writes its artifacts; move it away"),
    "out holds a file named artifacts/<a method of the grid>": (  # a traceback once every cell had been computed
        lambda t: ["--grid", str(tiny(t)), "--out", str(_file(t / "run" / "artifacts" / "retrain", "x").parent.parent),
                   "--device", "cpu"], "artifacts/retrain is a file where the run writes its artifacts/retrain; move"),
    "out holds a file named artifacts/<a method of the grid>, in a dry run": (
        lambda t: ["--grid", str(tiny(t)), "--out", str(_file(t / "run" / "artifacts" / "retrain", "x").parent.parent),
                   "--device", "cpu", "--dry-run"], "artifacts/retrain is a file where the run writes"),
    "out holds results but no config": (
        lambda t: ["--grid", str(tiny(t)), "--out", str(_file(t / "run" / "records.csv", "finished results").parent),
                   "--device", "cpu"], "holds results but no config.yaml"),
    "out holds a failures.csv without its columns": (
        lambda t: ["--grid", str(tiny(t)), "--out", str(_same_grid_run(t, "forget_class,status\n0,failed\n")),
                   "--device", "cpu"], "failures.csv is not an unlearnbench failures file: it lacks the column(s) "
                                       "dataset, backbone, method, params, seed, reason, traceback; move it away."),
    "out holds a binary failures.csv": (
        lambda t: ["--grid", str(tiny(t)), "--out", str(_same_grid_run(t, b"\xff\x00")), "--device", "cpu"],
        "failures.csv is not an unlearnbench failures file"),
    "out holds a failures row without a status": (
        lambda t: ["--grid", str(tiny(t)), "--device", "cpu",
                   "--out", str(_same_grid_run(t, ",".join(FAILURE_COLUMNS) + "\nm,b,x,,0,1,,r,t\n"))],
        "failures.csv is not an unlearnbench failures file: a row has no status or no seed; move it away."),
    "report of a failures.csv with a text seed": (
        lambda t: ["report", str(_same_grid_run(t, ",".join(FAILURE_COLUMNS) + "\nm,b,x,,zero,1,failed,r,t\n"))],
        "failures.csv is not an unlearnbench failures file: its rows are not failures; move it away."),
    "report of a config whose relearn cap is text": (
        lambda t: ["report", str(_records_folder(t, "grid: {}\nmetric_settings: {relearn: {max_epochs: many}}"))],
        "its metric_settings.relearn.max_epochs must be a number, got 'many'; fix or delete it."),
    "report of a garbage failures.csv": (
        lambda t: ["report", str(_same_grid_run(t, "garbage\n"))], "failures.csv is not an unlearnbench failures "
                                                                     "file: it lacks the column(s)"),
    "report of an empty records.csv": (lambda t: ["report", str(_file(t / "r" / "records.csv", "").parent)],
                                       "records.csv is not an unlearnbench records file: it is empty; move it away."),
    "report of a binary records.csv": (lambda t: ["report", str(_file(t / "r" / "records.csv", b"\xff\x00").parent)],
                                       "records.csv is not an unlearnbench records file"),
    "report of a garbage records.csv": (lambda t: ["report", str(_file(t / "r" / "records.csv", "a\nb,c,d\n").parent)],
                                        "records.csv is not an unlearnbench records file"),
    "report --out is a file": (lambda t: ["report", str(_file(t / "r" / "records.csv", ",".join(KEY)).parent),
                                          "--out", str(_file(t / "f", "x"))], "The report folder"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_sentence_before_any_work(case, tmp_path, capsys):
    argv, message = BAD_INPUTS[case]
    args = argv(tmp_path)
    if "--cache-dir" not in args and args[0] != "report":
        args += ["--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    if case in ("out holds another grid", "out holds another grid, in a dry run", "tune into a run folder",
                "out holds results but no config"):
        assert (tmp_path / "run" / "records.csv").read_text() == "finished results"
    assert not (tmp_path / "cache" / "models").exists()


def test_only_filters_that_match_some_cells_still_select_them(tmp_path, capsys):
    assert main(["--grid", str(tiny(tmp_path)), "--only", "method=retrain", "--only", "forget_class=0, 2",
                 "--cache-dir", str(tmp_path / "c"), "--dry-run"]) == 0
    assert "grid 'tiny': 2 cells to run" in capsys.readouterr().out


def test_a_forget_class_filter_says_which_one_round_methods_it_leaves_out(tmp_path, capsys):
    """Before: `--only forget_class=1` dropped WF-Net (and the original), whose cells hold every class at once,
    without a word, the plan saying '0 skipped'."""
    grid = str(tiny(tmp_path, methods=["original", "retrain", "wfnet"]))
    argv = ["--grid", grid, "--cache-dir", str(tmp_path / "c"), "--dry-run"]
    assert main([*argv, "--only", "forget_class=1"]) == 0
    out, err = capsys.readouterr()
    assert "grid 'tiny': 1 cells to run" in out
    assert err == ("warning: --only forget_class=1 runs no cell of original, wfnet, whose cells hold every forget "
                   "class at once (forget_class=all); add all to the filter (--only forget_class=1,all) to run "
                   "them too.\n")
    for only in (["forget_class=1,all"], ["forget_class=1", "method=retrain"], ["method=wfnet"]):
        assert main([*argv, *(w for o in only for w in ("--only", o))]) == 0
        assert "warning" not in capsys.readouterr().err, only


def test_plugins_that_exit_are_import_errors_and_list_sees_plugins(tmp_path, capsys):
    plugins = tmp_path / "plugins"
    _file(plugins / "exits.py", "import sys\nsys.exit(3)\n")
    _file(plugins / "mine.py", NAN_PLUGIN.replace('"poisoned"', '"my_method"'))
    assert main(["list", "--plugins", str(plugins)]) == 0
    out = capsys.readouterr().out
    assert "my_method" in out and f"(failed to import: {plugins / 'exits.py'}: SystemExit: 3)" in out
    assert main(["--grid", str(tiny(tmp_path)), "--plugins", str(plugins), "--dry-run",
                 "--cache-dir", str(tmp_path / "c")]) == 1  # the plan is printed; the run would exit 1 too
    assert "exits.py failed to import: SystemExit: 3" in capsys.readouterr().out


def test_a_run_where_every_cell_is_skipped_says_why_and_fails(tmp_path, capsys):
    """Missing data skips every cell: the reasons are printed and the exit code is 1; re-running the same grid
    into the same folder is a resume, not refused."""
    argv = ["--grid", str(tiny(tmp_path, datasets=["mnist"])), "--data-root", str(tmp_path), "--out",
            str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "--quiet"]
    for _ in range(2):
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert "0 cells computed, 0 from cache, 0 failed, 4 skipped" in captured.out, captured.err
        assert "skipped: retrain mnist/vgg16-w0.0625 class 0: Dataset 'mnist' not found" in captured.out


GLOBAL_RNG_PLUGIN = """
import random

import numpy as np
import torch
from unlearnbench import SingleClassModel, Unlearner


class WithDraws(SingleClassModel):
    def __init__(self, net, forget_class, draws):
        super().__init__(net, forget_class)
        self.draws = draws

    def diagnostics(self):
        return self.draws


class GlobalDraws(Unlearner):
    \"\"\"The original with its output bias nudged by torch's global RNG; a draw from each global RNG as diagnostics.\"\"\"

    name = "global_draws"

    def unlearn(self, task):
        model = task.copy_original()
        bias = [p for name, p in model.named_parameters() if name.endswith("bias")][-1]
        with torch.no_grad():
            bias += torch.randn(bias.shape).to(bias.device)
        draws = {"torch_draw": torch.rand(1).item(), "numpy_draw": np.random.rand(), "random_draw": random.random()}
        return WithDraws(model, task.forget_class, draws)
"""


def test_global_rng_draws_depend_on_neither_workers_nor_cell_order(tmp_path):
    """A method drawing from torch's, numpy's and python's global RNGs gets the same numbers with one worker or
    two (whose first cell loads the original, which re-seeds torch), and whether its cell ran alone first."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "draws.py").write_text(GLOBAL_RNG_PLUGIN)
    grid = load_grid(str(tiny(tmp_path, methods=["global_draws"], forget_classes=[0, 1, 2, 3])))

    def records(name: str, launch: LaunchOptions, cache: str, **only) -> pd.DataFrame:
        result = run(grid, RunOptions(out=tmp_path / name, cache_dir=tmp_path / cache, device="cpu", progress=False,
                                      plugins=[plugins], only=only, report=False), launch)
        assert not result.failures, result.failures
        return comparable(result.run_dir / "records.csv")

    serial = records("serial", LaunchOptions(threads=1), "cache-serial")
    for cache in ("cache-workers", "cache-order"):  # the trained original is shared; the cells are not
        shutil.copytree(tmp_path / "cache-serial" / "models", tmp_path / cache / "models")
    workers = records("workers", LaunchOptions(workers=2, threads=1), "cache-workers")
    records("class-3", LaunchOptions(threads=1), "cache-order", forget_class="3")
    after_class_3 = records("order", LaunchOptions(threads=1), "cache-order")
    pd.testing.assert_frame_equal(workers, serial)
    pd.testing.assert_frame_equal(after_class_3, serial)
    draws = serial[serial.metric.str.endswith("_draw")]
    assert len(draws) == 12 and draws.value.nunique() == 12  # every cell draws its own stream


def test_a_stage_model_another_worker_is_training_is_waited_for_and_loaded_not_trained_twice(tmp_path):
    """Two processes (here: threads with their own Stages) needing one uncached stage model: the second blocks on
    the model's lock while the first trains it, then loads it from the cache; it never trains it itself."""
    import threading

    import torch

    from unlearnbench.data import load_dataset
    from unlearnbench.models import BackboneSpec
    from unlearnbench.stages import Stages
    from unlearnbench.training import resolve_recipe

    data = load_dataset("mnist5k", cache_dir=tmp_path / "data")
    spec = BackboneSpec("vgg16", 0.0625)
    cache = Cache(tmp_path / "cache")

    def stages(log):
        return Stages(data, {"name": "mnist5k"}, spec, resolve_recipe("mnist5k", spec, {"epochs": 1}), seed=0,
                      cache=cache, log=log)

    trained_by_second = []
    first, second = stages(lambda _: None), stages(trained_by_second.append)
    key = first.model_key("retrained", 0)
    got = {}
    with cache.model_lock("retrained", key):  # the first worker is training it
        waiter = threading.Thread(target=lambda: got.update(model=second.retrained(0)))
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive()  # blocked on the lock, not training
        model = first.new_model(1)
        first._train_stage("retrained-0", "retrained", key, model, 0, 1)  # what the lock holder saves
    waiter.join(timeout=60)
    assert trained_by_second == [] and not waiter.is_alive()
    assert all(torch.equal(a, b) for a, b in zip(got["model"].state_dict().values(), model.state_dict().values()))


def test_runs_with_different_only_filters_into_one_folder_add_up_to_the_whole_grid(tmp_path, shared_cache):
    grid_file = tiny(tmp_path)
    common = ["--grid", str(grid_file), "--out", str(tmp_path / "run"), "--cache-dir", str(shared_cache),
              "--device", "cpu", "--quiet", "--workers", "0", "--no-report"]
    assert main([*common, "--only", "method=retrain", "--only", "forget_class=0"]) == 0
    assert main([*common, "--only", "forget_class=1", "--only", "method=retrain", "--only", "forget_class=2"]) == 0
    records = pd.read_csv(tmp_path / "run" / "records.csv")
    assert sorted(records[records.method == "retrain"].forget_class.dropna().unique()) == [0, 1, 2]
    only = read_run_config(tmp_path / "run")["only"]  # both runs' filters, which --retry-failed plans together
    assert only == [{"method": "retrain", "forget_class": "0"}, {"forget_class": "1,2", "method": "retrain"}]
    cells = plan(load_grid(str(grid_file)), RunOptions(only=only, cache_dir=shared_cache, device="cpu")).cells
    assert sorted((c.method, c.forget_class) for c in cells) == [("retrain", 0), ("retrain", 1), ("retrain", 2)]
    assert merged_only(only, {}) == {} and merged_only(only, {"forget_class": "0", "method": "retrain"}) == only
    assert main(common) == 0  # the whole grid: every earlier row replaced by this run's (from the cache), none twice
    whole = comparable(tmp_path / "run" / "records.csv")
    clean = run(load_grid(str(grid_file)), RunOptions(out=tmp_path / "clean", cache_dir=shared_cache, device="cpu",
                                                      progress=False, report=False))
    pd.testing.assert_frame_equal(whole, comparable(clean.run_dir / "records.csv"))


def test_a_missing_tree_whose_classes_are_counted_in_its_files_is_skipped_with_that_reason(tmp_path):
    grid_file = write_grid(tmp_path, forget_classes="all",
                           datasets=["mnist5k", {"name": "imagefolder", "path": str(tmp_path / "nowhere")}])
    p = plan(load_grid(str(grid_file)), RunOptions(cache_dir=tmp_path / "cache", device="cpu"))
    assert {c.dataset.name for c in p.cells} == {"mnist5k"} and len(p.cells) == 11  # original + 10 retrains
    assert [(c.dataset.name, c.method, c.forget_class) for c, _ in p.skipped] == [
        ("imagefolder", "original", None), ("imagefolder", "retrain", None)]
    assert all("Dataset 'imagefolder' not found" in reason for _, reason in p.skipped)


def test_download_lets_a_dataset_without_local_files_be_planned_not_skipped(tmp_path):
    grid = load_grid(str(write_grid(tmp_path, datasets=["mnist", "cifar10"])))
    without = plan(grid, RunOptions(cache_dir=tmp_path / "cache", device="cpu"))
    assert not without.cells and all("needs --data-root" in reason and "None" not in reason
                                     for _, reason in without.skipped)
    fetched = plan(grid, RunOptions(cache_dir=tmp_path / "cache", device="cpu", download=True))
    assert not fetched.skipped and {c.dataset.name for c in fetched.cells} == {"mnist", "cifar10"}


def test_a_cell_planned_before_its_plugin_was_edited_is_not_computed_under_the_planned_key(tmp_path):
    """A worker imports what is on disk when it starts: after an edit to a method's plugin mid-run, the cell's key
    made again in the worker differs from the planned one, so the cell fails saying why and nothing is cached
    under the planned key (before: the edited code's records were cached as the planned code's); with the file
    back as planned, the same job computes and caches it."""
    from unlearnbench.execution import make_jobs, run_job
    from unlearnbench.planning import cell_key

    from test_runner import PLUGIN

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "finetune.py").write_text(PLUGIN.format(suffix=""))
    grid = load_grid(str(write_grid(tmp_path, methods=["tmp_finetune"], forget_classes=[0])))
    options = RunOptions(out=tmp_path / "run", cache_dir=tmp_path / "c", device="cpu", progress=False,
                         plugins=[plugins], report=False)
    p = plan(grid, options)
    cell = p.cells[0]
    key = cell_key(cell, grid, p.methods[cell.method], p.device, p.files.get(cell.dataset))
    [job] = make_jobs("cell", [cell], grid, options, LaunchOptions(), p.device, tmp_path / "log.txt", {cell: key})
    (plugins / "finetune.py").write_text(PLUGIN.format(suffix="Edited"))
    edited = run_job(job)
    assert edited.records is None and "changed on disk after this run was planned" in edited.failure["reason"]
    assert f"tmp_finetune read from {plugins / 'finetune.py'}" in edited.failure["reason"]  # where this worker got it
    assert Cache(tmp_path / "c").load_cell(key) is None
    (plugins / "finetune.py").write_text(PLUGIN.format(suffix=""))
    assert run_job(job).records and Cache(tmp_path / "c").load_cell(key) is not None


def test_a_tree_rewritten_after_planning_is_not_computed_under_the_planned_key_by_the_planning_process(tmp_path):
    """With --workers 0 the jobs run in the process that planned them, which remembered its scan of the tree for
    the run: images rewritten after planning were decoded anew when the group loaded and their records cached
    under the planned key, which names the images before. Loading a group scans its files again, so the cell fails
    saying why and nothing is cached; planned again, it computes."""
    import numpy as np
    from PIL import Image

    from unlearnbench.execution import make_jobs, run_job
    from unlearnbench.planning import cell_key

    tree, rng = tmp_path / "tree", np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("ant", "bee"):
            (tree / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tree / split / c / f"{i}.png")
    grid = load_grid(str(write_grid(tmp_path, datasets=[{"name": "imagefolder", "path": str(tree)}],
                                    methods=["original"], forget_classes=[0])))
    options = RunOptions(out=tmp_path / "run", cache_dir=tmp_path / "c", device="cpu", progress=False, report=False)

    def planned_job():
        p = plan(grid, options)
        [cell] = [c for c in p.cells if c.method == "original"]
        key = cell_key(cell, grid, p.methods[cell.method], p.device, p.files.get(cell.dataset))
        return make_jobs("cell", [cell], grid, options, LaunchOptions(), p.device, tmp_path / "log.txt",
                         {cell: key})[0], key

    job, key = planned_job()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tree / "train" / "ant" / "0.png")
    stale = run_job(job)
    assert stale.records is None and "changed on disk after this run was planned" in stale.failure["reason"]
    assert Cache(tmp_path / "c").load_cell(key) is None
    job, new_key = planned_job()
    assert new_key != key and run_job(job).records and Cache(tmp_path / "c").load_cell(new_key) is not None


KILLED_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from unlearnbench.disk_images import write_npy_in_chunks

def chunks():
    yield np.zeros((2, 4, 4, 3), dtype=np.uint8)
    print("writing", flush=True)
    time.sleep(600)  # killed here, mid-file, as loky ends a worker

write_npy_in_chunks(Path(sys.argv[1]) / "train.images.npy", 4, (4, 4, 3), chunks())
"""


def test_what_a_killed_process_left_half_written_is_removed_and_files_get_the_umask_s_mode(tmp_path, monkeypatch):
    """Before: a worker killed while decoding (loky kills workers outright, so their own cleanup never ran) left its
    temporary file in the cache for good (the reviewer's: 31 MB of a CIFAR decode, 34 MB of an extraction; for
    ImageNet as much as the decoded set); and every file written through a temporary one was 0600 whatever the
    umask, so a cache or run folder shared by a group was unreadable to its other members."""
    import os
    import socket
    import stat
    import time

    import numpy as np
    import torch

    from unlearnbench import store
    from unlearnbench.datasets.image_folder import atomic_save_npy
    from unlearnbench.disk_images import write_npy_in_chunks

    data = tmp_path / "cache" / "data"
    data.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(data)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    writer.kill()
    writer.wait()
    [left] = data.glob(".partial-*")
    assert left.name.startswith(f".partial-{socket.gethostname()}-{writer.pid}-") and not (data / "train.images.npy").exists()
    (tmp_path / "cache" / "models" / "original").mkdir(parents=True)
    being_written = tmp_path / "cache" / "models" / "original" / f"{store.partial_prefix()}x.safetensors"  # alive
    other_host = data / f".partial-elsewhere-{writer.pid}-y.npy"  # a cache shared with another machine
    dead_folder = data / f".partial-{socket.gethostname()}-{writer.pid}-z"  # an extraction's folder
    just_left = data / f".partial-{socket.gethostname()}-{writer.pid}-w.npy"  # a pid of another namespace, maybe
    for path in (being_written, other_host, just_left):
        path.write_bytes(b"x")
    (dead_folder / "train").mkdir(parents=True)
    long_ago = time.time() - store.LEFT_FOR_SECONDS - 5
    for path in (left, being_written, other_host, dead_folder):
        os.utime(path, (long_ago, long_ago))
    assert sorted(store.remove_dead_partials(tmp_path / "cache")) == sorted([left, dead_folder])
    assert being_written.exists() and other_host.exists() and just_left.exists()
    assert not left.exists() and not dead_folder.exists()
    # a run removes them (and says so in its log) from its cache and its folder
    os.utime(just_left, (long_ago, long_ago))
    in_run_folder = tmp_path / "out" / f".partial-{socket.gethostname()}-{writer.pid}-r.csv"
    in_run_folder.parent.mkdir()
    in_run_folder.write_text("a")
    os.utime(in_run_folder, (long_ago, long_ago))
    grid = load_grid(str(write_grid(tmp_path, datasets=[SMALL_MNIST], methods=["original"], forget_classes=[0])))
    run(grid, RunOptions(cache_dir=tmp_path / "cache", out=tmp_path / "out", device="cpu", progress=False,
                         report=False), LaunchOptions(workers=0))
    log = (tmp_path / "out" / "log.txt").read_text()
    assert not just_left.exists() and not in_run_folder.exists()
    assert f"removed {just_left}, left half-written by a process that no longer runs" in log
    assert f"removed {in_run_folder}, left half-written" in log

    monkeypatch.setattr(store, "UMASK", 0o022)  # the mode as the umask 022 gives it, whoever runs the tests
    store.atomic_write(tmp_path / "records.csv", "a,b\n")
    Cache(tmp_path / "cache").save_model("original", "k", torch.nn.Linear(2, 2), {})
    atomic_save_npy(data / "labels.npy", np.zeros(3))
    write_npy_in_chunks(data / "images.npy", 1, (2, 2, 3), [np.zeros((1, 2, 2, 3), dtype=np.uint8)])
    written = [tmp_path / "records.csv", *(tmp_path / "cache" / "models" / "original").glob("k*"),
               data / "labels.npy", data / "images.npy", data / "images.npy.sha256"]
    assert len(written) == 6 and {f.name: stat.S_IMODE(os.stat(f).st_mode) for f in written} == {
        f.name: 0o644 for f in written}
