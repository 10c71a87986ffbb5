"""Behaviour of the first-wave state-of-the-art methods as the shipped smoke grid runs them: on mnist5k with its
CPU-size VGG-16 and ViT-T and the parameters the tuning protocol chose (reports/tuning/smoke), each forgets
(mean test Acc_f ≤ 10 %) and keeps the rest (mean test Acc_r ≥ the original's − 10 points), over three classes."""
from __future__ import annotations

import dataclasses

import pytest

from unlearnbench.grid import load_grid, tuned_parameters
from unlearnbench.runner import RunOptions, run

SMOKE = load_grid("smoke")
TUNED = tuned_parameters(SMOKE.tuned)["mnist5k"]
NEW_METHODS = ["salun", "l1_sparse", "scrub", "bad_teacher", "ssd", "lf_ssd", "unsir"]
CLASSES = "1,4,7"  # three of the ten, to keep the suite short; the smoke report has all ten
# (method, backbone label) pairs that the tuned setting does not bring within the bounds: kept, and reported
CANNOT = {}


def cases():
    for backbone in SMOKE.backbones:
        for method in NEW_METHODS:
            reason = CANNOT.get((method, backbone.label))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(method, backbone.label, marks=marks, id=f"{method}-{backbone.family}")


@pytest.mark.slow
@pytest.mark.parametrize("method,backbone", list(cases()))
def test_tuned_method_forgets_and_keeps_the_rest(method, backbone, tmp_path, shared_cache):
    assert method in TUNED[backbone]  # the shipped grid runs it with tuned parameters
    grid = dataclasses.replace(SMOKE, metrics=["accuracy"])
    only = {"method": f"original,{method}", "backbone": backbone, "forget_class": CLASSES}
    records = run(grid, RunOptions(cache_dir=shared_cache, device="cpu", progress=False, only=only,
                                   out=tmp_path / "run")).records
    test = records[records.split == "test"].groupby(["method", "metric"]).value.mean()
    assert test[(method, "acc_forget")] <= 0.10
    assert test[(method, "acc_retain")] >= test[("original", "acc_retain")] - 0.10
