"""Shared fixtures: a quiet environment, a tiny grid, and a results folder per test."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

# torch threads per test process: 2, or 1 in each worker process when pytest-xdist runs them (`pytest -n 2`);
# UNLEARNBENCH_TEST_THREADS overrides both
torch.set_num_threads(int(os.environ.get("UNLEARNBENCH_TEST_THREADS",
                                         "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")))

# a suite started in the background (`pytest &`: a shell without job control starts it with SIGINT ignored, and every
# process it starts inherits that) would fail the tests of Ctrl-C, which need it delivered as a terminal does
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CI", "1")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One model/cell cache for the whole session, so tests reuse each other's trained originals."""
    return tmp_path_factory.mktemp("cache")


# a subset of mnist5k (100 training and 40 test images a class) for tests of how runs are launched, cached, keyed
# and resumed, which need trained models but not good ones: their cells take about a third of the time
SMALL_MNIST = {"name": "mnist5k", "train_per_class": 100, "test_per_class": 40}


def write_grid(folder: Path, filename: str = "grid.yaml", **overrides) -> Path:
    """A tiny grid file: mnist5k, one small backbone, two forget classes, one training epoch."""
    grid = {
        "name": "tiny",
        "datasets": ["mnist5k"],
        "backbones": [{"name": "vgg16", "width": 0.0625}],
        "methods": ["original", "retrain"],
        "seeds": [0],
        "forget_classes": [0, 1],
        "recipe": {"epochs": 1},
        "metrics": ["accuracy"],
    }
    grid.update(overrides)
    path = folder / filename
    path.write_text(yaml.safe_dump(grid))
    return path
