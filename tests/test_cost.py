"""CostMeter's peak memory is the extra memory the measured block needs, not what the process already holds."""
from __future__ import annotations

import time

import pytest
import torch

from unlearnbench.cost import SAMPLE_SECONDS, CostMeter, heap_bytes

MIB = 2**20
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def held():
    """256 MiB of tensors the process holds before any measured block (a dataset, stage models)."""
    return torch.ones(256 * MIB // 4)


def test_heap_bytes_sees_torch_cpu_tensors():
    before = heap_bytes()
    block = torch.empty(64 * MIB, dtype=torch.uint8)
    assert heap_bytes() - before >= 64 * MIB
    del block
    assert heap_bytes() - before < 4 * MIB


def test_a_block_that_does_nothing_needs_next_to_nothing(held):
    with CostMeter(CPU) as cost:
        time.sleep(3 * SAMPLE_SECONDS)
    assert 0 <= cost.peak_memory_bytes < 4 * MIB


def test_a_block_is_charged_what_it_allocates(held):
    with CostMeter(CPU) as cost:
        kept = torch.ones(64 * MIB // 4)
    assert 64 * MIB <= cost.peak_memory_bytes < 68 * MIB
    with CostMeter(CPU) as cost:  # freed before the end: the polling sees it while it lives
        transient = torch.ones(64 * MIB // 4)
        time.sleep(5 * SAMPLE_SECONDS)
        del transient
    assert 64 * MIB <= cost.peak_memory_bytes < 68 * MIB
    del kept


def test_nested_meters_measure_from_their_own_start(held):
    with CostMeter(CPU) as outer:
        first = torch.ones(32 * MIB // 4)
        with CostMeter(CPU) as inner:
            second = torch.ones(16 * MIB // 4)
    assert 16 * MIB <= inner.peak_memory_bytes < 20 * MIB
    assert 48 * MIB <= outer.peak_memory_bytes < 52 * MIB
    del first, second


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_is_the_extra_allocation_and_survives_nesting():
    device = torch.device("cuda")
    held_cuda = torch.ones(256 * MIB // 4, device=device)
    with CostMeter(device) as outer:
        transient = torch.ones(64 * MIB // 4, device=device)
        del transient  # freed before the inner meter resets the peak statistics
        with CostMeter(device) as inner:
            kept = torch.ones(16 * MIB // 4, device=device)
    assert inner.peak_memory_bytes == 16 * MIB
    assert outer.peak_memory_bytes == 64 * MIB
    with CostMeter(device) as idle:
        pass
    assert idle.peak_memory_bytes == 0
    del held_cuda, kept


def test_a_wait_while_another_process_trains_a_charged_model_is_not_charged_on_top(tmp_path, shared_cache):
    """A retrain cell whose retrained model another process is training waits on that model's lock, then takes it
    from the cache: its unlearning seconds are the training's recorded cost, not that plus the wait (before: both)."""
    import dataclasses
    import threading

    from unlearnbench.data import load_dataset
    from unlearnbench.discovery import discover
    from unlearnbench.execution import unlearn_cell
    from unlearnbench.grid import Cell, DatasetEntry
    from unlearnbench.models import BackboneSpec
    from unlearnbench.stages import Stages
    from unlearnbench.store import Cache
    from unlearnbench.training import resolve_recipe

    data, spec = load_dataset("mnist5k", cache_dir=shared_cache), BackboneSpec("vgg16", 0.0625)
    stages = Stages(data, dataclasses.asdict(DatasetEntry("mnist5k")), spec,
                    resolve_recipe("mnist5k", spec, {"epochs": 1}), 0, Cache(tmp_path / "c"), log=lambda *_: None)
    key, recorded = stages.model_key("retrained", 0), {"wall_seconds": 7.0, "device_seconds": 7.0,
                                                              "peak_memory_bytes": 0}
    stages.original()  # trained before: the cell's meter then starts as the wait begins
    locked = threading.Event()

    def other_process_trains():  # holds the model's lock 2 s, then caches the model with its recorded cost
        with stages.cache.model_lock("retrained", key):
            locked.set()
            time.sleep(2.0)
            stages.cache.save_model("retrained", key, stages.new_model(1), {"cost": recorded})

    trainer = threading.Thread(target=other_process_trains)
    trainer.start()
    locked.wait()
    cell = Cell(DatasetEntry("mnist5k"), spec, "retrain", (), 0, 0, (0,))
    start = time.perf_counter()
    _, cost = unlearn_cell(cell, discover()[0]["retrain"], stages, False)
    trainer.join()
    assert time.perf_counter() - start >= 1.5  # it did wait for the other training
    assert 7.0 <= cost["unlearn_seconds"] < 8.0  # the code before: ≥ 7.0 + the wait (≥ 1.5 s)


@pytest.mark.parametrize("recorded", ["now", "before CPU models"])
def test_a_retrained_model_trained_at_other_threads_says_so_on_the_cost_rows_it_is_charged_to(tmp_path, shared_cache,
                                                                                            monkeypatch, recorded):
    """A retrain cell's seconds are its retrained model's training, which may have been measured elsewhere (by
    `tune`, at another thread count); the cost rows said only this worker's device. They now name where the
    charged training ran when it differs; rows not charged (serving bytes) and a same-device model stay plain. A
    model cached before device names held the CPU's model ('cpu (1 threads, x86_64)') counts as this CPU at its
    thread count: every cell charged with one read 'trained on' another device."""
    import dataclasses

    import torch

    from unlearnbench.data import load_dataset
    from unlearnbench.discovery import discover
    from unlearnbench.execution import run_cell
    from unlearnbench.grid import Cell, DatasetEntry, parse_grid
    from unlearnbench.models import BackboneSpec
    from unlearnbench.stages import Stages
    from unlearnbench.store import Cache, device_name
    from unlearnbench.training import resolve_recipe

    data, spec = load_dataset("mnist5k", cache_dir=shared_cache), BackboneSpec("vgg16", 0.0625)
    grid = parse_grid({"name": "t", "datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "width": 0.0625}],
                       "methods": ["retrain"], "metrics": ["accuracy"], "recipe": {"epochs": 1}})

    def stages():
        return Stages(data, dataclasses.asdict(DatasetEntry("mnist5k")), spec,
                      resolve_recipe("mnist5k", spec, {"epochs": 1}), 0, Cache(tmp_path / "c"), log=lambda *_: None)

    cell, threads = Cell(DatasetEntry("mnist5k"), spec, "retrain", (), 0, 0, (0,)), torch.get_num_threads()
    if recorded != "now":  # the stage model records the older format
        from unlearnbench import stages as stages_module

        monkeypatch.setattr(stages_module, "device_name",
                            lambda device: f"cpu ({torch.get_num_threads()} threads, x86_64)")
    try:
        torch.set_num_threads(1)
        trained = stages()
        trained.retrained(0)  # trained and cached at 1 thread
        rows = run_cell(cell, discover()[0]["retrain"], trained, grid, [], False).records[None]
        assert {r["device"] for r in rows} == {device_name(data.device)}  # same device: plain
        torch.set_num_threads(2)
        rows = run_cell(cell, discover()[0]["retrain"], stages(), grid, [], False).records[None]
    finally:
        torch.set_num_threads(threads)
    device = {r["metric"]: r["device"] for r in rows}
    here = f"cpu (2 threads, {device_name(data.device).split(', ', 1)[1]}"
    there = f"cpu (1 threads, {here.split(', ', 1)[1]}" if recorded == "now" else "cpu (1 threads, x86_64)"
    assert device["unlearn_seconds"] == device["peak_memory_bytes"] == f"{here}; retrained model trained on {there}"
    assert device["serving_bytes"] == here


def test_crowding_counts_the_jobs_a_launch_runs_together(tmp_path, monkeypatch):
    """A phase launched as two lists (the retrain cells and the retrained models they lack) was marked per list:
    one job each on two workers of one core ran together unmarked."""
    import torch

    from conftest import write_grid
    from unlearnbench.execution import crowding, make_jobs
    from unlearnbench.grid import load_grid
    from unlearnbench.launchers import LaunchOptions
    from unlearnbench.planning import RunOptions, plan

    monkeypatch.setattr("os.cpu_count", lambda: 1)
    cpu, two = torch.device("cpu"), LaunchOptions(workers=2, threads=1)
    assert crowding(two, cpu, 1) == "" and crowding(two, cpu, 2) == "2 workers × 1 threads on 1 cores"
    grid = load_grid(str(write_grid(tmp_path, methods=["retrain"], forget_classes=[0])))
    options = RunOptions(device="cpu", cache_dir=tmp_path / "c")
    [cell] = plan(grid, options).cells
    [alone] = make_jobs("cell", [cell], grid, options, two, cpu, tmp_path / "log.txt")
    [together] = make_jobs("cell", [cell], grid, options, two, cpu, tmp_path / "log.txt", together=2)
    assert (alone.crowded, together.crowded) == ("", "2 workers × 1 threads on 1 cores")
    assert crowding(LaunchOptions(workers=3, gpus=(0,)), torch.device("cuda"), 5) == "3 workers on 1 GPU"
    assert crowding(LaunchOptions(workers=2, gpus=(0, 1)), torch.device("cuda"), 5) == ""
