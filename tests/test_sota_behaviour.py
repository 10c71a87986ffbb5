"""Behaviour of the state-of-the-art methods (both waves) as the shipped smoke grid runs them with `--methods all`:
on mnist5k with its CPU-size VGG-16 and ViT-T and the parameters the tuning protocol chose (reports/tuning/smoke),
each forgets (mean test Acc_f ≤ 10 %) and keeps the rest (mean test Acc_r ≥ the original's − 10 points), over the
grid's three forget classes. Where the tuned setting cannot, the test asserts the measured trade-off (TRADE_OFF)."""
from __future__ import annotations

import dataclasses

import pytest

from unlearnbench.grid import load_grid, tuned_parameters, with_methods
from unlearnbench.launchers import LaunchOptions
from unlearnbench.runner import RunOptions, run

SMOKE = load_grid("smoke")
TUNED = tuned_parameters(SMOKE.tuned)["mnist5k"]
NEW_METHODS = ["salun", "l1_sparse", "scrub", "bad_teacher", "ssd", "lf_ssd", "unsir",
               "boundary_shrink", "boundary_expand", "cf_k", "eu_k", "delete", "fisher", "sfron", "fcs", "msg"]
# (method, backbone label) pairs that the tuned setting does not bring within the bounds in every run measured: the
# test then asserts the measured trade-off instead, (forget ceiling, retain floor or None for the default), each a
# few points outside the worst value measured, so a method that gets worse still fails. The same run gives other
# values on another CPU (the VGG's original already differs between the Xeon and an AVX2 EPYC, the ViT's does not;
# SSD, DELETE and MSG on the VGG failed the Xeon's seed-0 bounds there), and a seed perturbs a run as another host's
# rounding does, so the bounds hold over seeds 0-3 on the Xeon (reports/smoke-seeds, the same parameters), seeds 0-2
# on an AVX2 EPYC and seeds 0-2 on an AVX-512 EPYC (`python benchmarks/sota_spread.py`, reports/sota-spread; on the
# last, SSD's seed 0 kept 62.6 % and Boundary Expanding's seed 1 left 19.3 %). Worst Acc_r / Acc_f in %:
TRADE_OFF = {
    ("ssd", "vgg16-w0.0625"): (0.35, 0.60),   # 62.6 / 31.7
    ("boundary_expand", "vgg16-w0.0625"): (0.22, 0.45),   # 54.1 / 19.3: the shadow class drags the others along
    ("boundary_expand", "vit_tiny-w0.333-d0.333-p14"): (0.25, 0.76),   # 79.7 / 21.7
    ("boundary_shrink", "vgg16-w0.0625"): (0.10, 0.80),   # 83.9 / 9.3
    ("delete", "vgg16-w0.0625"): (0.10, 0.79),   # 82.6 / 1.7
    ("fisher", "vgg16-w0.0625"): (0.25, None),   # 96.1 / 21.0
    # re-tuned 2026-12-07 against today's originals (no trial of 20 came near its earlier study); measured over
    # seeds 0-3 on the Xeon: worst 74.4 (seed 0) / 16.0 (seed 3), and 0-2 on the AVX-512 EPYC: 76.2 / 6.3 (the AVX2
    # EPYC's spread predates the re-tune)
    ("l1_sparse", "vgg16-w0.0625"): (0.20, 0.70),
    ("msg", "vgg16-w0.0625"): (0.70, None),   # 89.0 / 66.7: 2 of the 10 seed-runs forget (2.3 and 7.7)
    ("unsir", "vgg16-w0.0625"): (0.10, 0.82),   # 84.9 / 5.3
}


def cases():
    for backbone in SMOKE.backbones:
        for method in NEW_METHODS:
            yield pytest.param(method, backbone.label, id=f"{method}-{backbone.family}")


@pytest.fixture(scope="module")
def test_split_means(tmp_path_factory, shared_cache):
    """Mean test-split accuracies per backbone × method × metric of one smoke run of these methods (accuracy on the
    test split only: evaluating the training split too changes none of these values and costs a fifth of the run)."""
    grid = dataclasses.replace(with_methods(SMOKE, "all"), metrics=["accuracy"],
                               metric_settings={"accuracy": {"splits": ["test"]}})
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False, report=False,
                         only={"method": ",".join(["original", *NEW_METHODS])}, out=tmp_path_factory.mktemp("run"))
    # one thread a worker, as the measured runs: CPU results are bit-reproducible only at a fixed thread count
    records = run(grid, options, LaunchOptions(workers=2, threads=1)).records
    return records[records.split == "test"].groupby(["backbone", "method", "metric"]).value.mean()


@pytest.mark.slow
@pytest.mark.parametrize("method,backbone", list(cases()))
def test_tuned_method_forgets_and_keeps_the_rest(method, backbone, test_split_means):
    assert method in TUNED[backbone]  # the shipped grid runs it with tuned parameters
    means = test_split_means[backbone]
    ceiling, floor = TRADE_OFF.get((method, backbone), (0.10, None))
    floor = means[("original", "acc_retain")] - 0.10 if floor is None else floor
    assert means[(method, "acc_forget")] <= ceiling
    assert means[(method, "acc_retain")] >= floor
