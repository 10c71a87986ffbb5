"""Behaviour of the state-of-the-art methods (both waves) as the shipped smoke grid runs them with `--methods all`:
on mnist5k with its CPU-size VGG-16 and ViT-T and the parameters the tuning protocol chose (reports/tuning/smoke),
each forgets (mean test Acc_f ≤ 10 %) and keeps the rest (mean test Acc_r ≥ the original's − 10 points), over the
grid's three forget classes. Where the tuned setting cannot, the test states the measured trade-off (CANNOT)."""
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
# (method, backbone label) pairs that the tuned setting does not bring within the bounds: kept, and reported
# (reports/smoke-all-methods/README.md has every method's numbers); strict where far outside the bound
CANNOT = {
    ("ssd", "vgg16-w0.0625"): ("SSD's best setting on the BatchNorm VGG forgets but keeps only 68 % (validation, "
                               "10 classes) and 41 % (test, classes 1, 4, 7) of 96 % retain accuracy", True),
    ("boundary_expand", "vgg16-w0.0625"): ("Boundary Expanding's best setting keeps 70.6 % (validation) and 54.1 % "
                                           "(test) of 96 % retain accuracy: the shadow class drags the rest along",
                                           True),
    ("boundary_expand", "vit_tiny-w0.333-d0.333-p14"): ("Boundary Expanding keeps 83.0 % (test) against a bound "
                                                         "of 83.2 % (80.0 % on validation)", False),
    ("unsir", "vgg16-w0.0625"): ("UNSIR's setting, tuned on an earlier version's originals, keeps 83.3 % (test) "
                                 "against a bound of 86.2 %", True),
}


def cases():
    for backbone in SMOKE.backbones:
        for method in NEW_METHODS:
            reason, strict = CANNOT.get((method, backbone.label), (None, False))
            marks = [pytest.mark.xfail(strict=strict, reason=reason)] if reason else []
            yield pytest.param(method, backbone.label, marks=marks, id=f"{method}-{backbone.family}")


@pytest.fixture(scope="module")
def test_split_means(tmp_path_factory, shared_cache):
    """Mean test-split accuracies per backbone × method × metric of one smoke run of these methods (accuracy only)."""
    grid = dataclasses.replace(with_methods(SMOKE, "all"), metrics=["accuracy"])
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False,
                         only={"method": ",".join(["original", *NEW_METHODS])}, out=tmp_path_factory.mktemp("run"))
    records = run(grid, options, LaunchOptions(workers=2)).records
    return records[records.split == "test"].groupby(["backbone", "method", "metric"]).value.mean()


@pytest.mark.slow
@pytest.mark.parametrize("method,backbone", list(cases()))
def test_tuned_method_forgets_and_keeps_the_rest(method, backbone, test_split_means):
    assert method in TUNED[backbone]  # the shipped grid runs it with tuned parameters
    means = test_split_means[backbone]
    assert means[(method, "acc_forget")] <= 0.10
    assert means[(method, "acc_retain")] >= means[("original", "acc_retain")] - 0.10
