"""Tests of the WF-Net method plugin (methods/wfnet.py): label expansion, untraining, checkpoint, end to end."""
from __future__ import annotations

import math
import sys

import pytest
import torch
from safetensors.torch import load_model, save_model

from unlearnbench.cost import state_bytes
from unlearnbench.data import load_dataset
from unlearnbench.discovery import discover
from unlearnbench.models import BackboneSpec, build_backbone
from unlearnbench.training import accuracy, predict_logits, resolve_recipe
from unlearnbench.unlearner import UnlearnTask
from unlearnbench.methods._weight_filtering import FilteredModel
from unlearnbench.store import Cache

from test_baselines import group

WFNet = discover()[0]["wfnet"].cls
wfnet = sys.modules[WFNet.__module__]
CNN = BackboneSpec("vgg16", 0.125)
VIT = BackboneSpec("vit_tiny", 0.333, 0.333, 7)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k")


def make_task(original, data, spec, forget_classes=tuple(range(10)), seed=0, **params) -> UnlearnTask:
    for p in original.parameters():
        p.requires_grad_(False)
    return UnlearnTask(
        original=original.eval(), data=data, forget_class=None, forget_classes=list(forget_classes),
        params={**WFNet().default_parameters(spec), **params}, recipe=resolve_recipe("mnist5k", spec), backbone=spec,
        seed=seed, retrained=None, new_model=None, generator=torch.Generator().manual_seed(seed),
    )


def untrained_cnn(data, steps=3, **params):
    """(original, WFNetModel) for an untrained CPU-size VGG after a few untraining steps."""
    torch.manual_seed(0)
    original = build_backbone(CNN, 10, 1, 28).eval()
    return original, WFNet().unlearn(make_task(original, data, CNN, max_steps=steps, **params))


def test_label_expansion_all_classes():
    labels = torch.randint(0, 10, (37,), generator=torch.Generator().manual_seed(0))
    e = wfnet.label_expansion(labels, torch.arange(10), 3, torch.Generator().manual_seed(1))
    assert torch.equal(e.forget_index, torch.arange(18))  # the first half selects its own rows
    assert e.retain_index.shape == e.retain_rows.shape == (3 * 19,)  # the second half, K = 3 copies
    assert torch.equal(e.retain_index, torch.arange(18, 37).repeat(3))
    assert not (labels[e.retain_index] == e.retain_rows).any()
    assert all(len(set(e.retain_rows[e.retain_index == i].tolist())) == 3 for i in range(18, 37))  # distinct rows


def test_label_expansion_subset_of_classes():
    labels = torch.tensor([2, 5, 7, 2, 2, 5, 7, 0])
    e = wfnet.label_expansion(labels, torch.tensor([2, 5]), 3, torch.Generator().manual_seed(0))
    assert torch.equal(e.forget_index, torch.tensor([0, 1, 3]))  # class 7 is not being forgotten
    # second half [2, 5, 7, 0]: at most one other forget class for 2 and 5, two for 7 and 0
    assert sorted(e.retain_index.tolist()) == [4, 5, 6, 6, 7, 7]
    assert set(e.retain_rows.tolist()) <= {2, 5} and not (labels[e.retain_index] == e.retain_rows).any()


def test_untraining_loss_reaches_alpha_only(data):
    torch.manual_seed(0)
    model = FilteredModel(build_backbone(CNN, 10, 1, 28), 10).eval()
    model.freeze_backbone()
    x, y = next(data.batches(data.train, 64))
    params = WFNet().default_parameters(CNN)
    e = wfnet.label_expansion(y, torch.arange(10), params["expansion"], torch.Generator().manual_seed(0))
    wfnet.untraining_loss(model, x, y, e, torch.arange(10), params).backward()
    alphas = {id(p) for p in model.alpha_parameters()}
    assert all(p.grad is None for p in model.parameters() if id(p) not in alphas)
    assert all(f.alpha_w.grad.abs().sum() > 0 for _, f in model.named_filters())


def test_untraining_changes_alpha_and_nothing_else(data):
    original, result = untrained_cnn(data, steps=3)
    state = result.model.backbone.state_dict()
    alpha = {k: v for k, v in state.items() if k.endswith(("alpha_w", "alpha_b"))}
    rest = {k.replace(".op.", "."): v for k, v in state.items() if k not in alpha}
    assert len(result.history) == 1  # max_steps ends the run, after one evaluation
    assert rest.keys() == original.state_dict().keys()
    assert all(torch.equal(rest[k], v) for k, v in original.state_dict().items())  # weights and BN statistics
    assert all((v != 3.0).any() for k, v in alpha.items() if k.endswith("alpha_w"))
    assert not any(p.requires_grad for p in result.parameters())
    # serving every class costs one backbone plus α (2 · N_c · C_out floats per layer), not N_c models
    alpha_bytes = sum(2 * 10 * f.out_channels * 4 for _, f in result.model.named_filters())
    assert state_bytes(result) == state_bytes(original) + alpha_bytes


def test_checkpoint_serves_every_class_and_the_hooks(data, tmp_path):
    _, result = untrained_cnn(data, steps=3, forget_classes=[1, 4, 7])
    assert result.classes() == [1, 4, 7]
    save_model(result, str(tmp_path / "wfnet.safetensors"))  # backbone + α: one file for all classes
    fresh = wfnet.WFNetModel(FilteredModel(build_backbone(CNN, 10, 1, 28), 10), [1, 4, 7]).eval()
    load_model(fresh, str(tmp_path / "wfnet.safetensors"))
    x, _ = next(data.batches(data.test, 32))
    with torch.no_grad():
        for c in result.classes():
            assert torch.equal(fresh.for_class(c)(x), result.for_class(c)(x))
            assert result.for_class(c).model is result.model  # a view, not a copy
        mixed = torch.tensor([1, 4, 7, 4] * 8)
        assert torch.equal(fresh(x, forget_class=mixed), result(x, forget_class=mixed))
        gates = {n: (1 - w, 1 - b) for n, (w, b) in result.relevance(4).items()}
        assert torch.allclose(result.gated(gates)(x), result.for_class(4)(x))
    with pytest.raises(ValueError, match="not 3"):
        result.for_class(3)
    copy_ = result.trainable_copy(7)
    assert copy_.model is not result.model and all(
        p.requires_grad != n.endswith(("alpha_w", "alpha_b")) for n, p in copy_.named_parameters())


def scripted_validation(monkeypatch, losses):
    """Make WF-Net's validation loss return `losses` in turn; returns the α each evaluation saw."""
    seen, script = [], iter(losses)

    def validation_loss(model, *args):
        seen.append({k: v.clone() for k, v in model.alpha_state_dict().items()})
        return next(script)

    monkeypatch.setattr(wfnet, "_validation_loss", validation_loss)
    return seen


def test_patience_stops_after_that_many_evaluations_without_improvement_and_the_best_alpha_is_kept(data, monkeypatch):
    # an evaluation after every step; the best loss is the 2nd evaluation's, then 4 that are not lower
    every_step = {"steps": 50, "batch_size": 32, "evals_per_epoch": math.ceil(len(data.train) / 32)}
    seen = scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.0, 2.7, 2.8, 1.0, 0.5])
    _, result = untrained_cnn(data, patience=4, **every_step)
    assert [h["val_loss"] for h in result.history] == [3.0, 2.0, 2.5, 2.0, 2.7, 2.8]  # an equal loss is no gain
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    kept = result.model.alpha_state_dict()
    assert all(torch.equal(kept[k], seen[1][k]) for k in kept)  # the best evaluation's α, not the last one's
    assert not all(torch.equal(kept[k], seen[-1][k]) for k in kept)

    seen = scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 1.5, 2.7, 2.8, 2.9, 3.0, 3.1])
    _, result = untrained_cnn(data, patience=2, **every_step)
    assert len(result.history) == 6  # an improvement at the 4th evaluation restarts the count


def test_forget_reduction_sample_and_batch_are_the_two_documented_losses():
    ce = torch.tensor([0.5, 2.0, 1e-9])
    sample = wfnet.reciprocal_forget(ce, {"forget_reduction": "sample"})
    batch = wfnet.reciprocal_forget(ce, {"forget_reduction": "batch"})
    assert torch.allclose(sample, 1 / (ce + wfnet.EPS))  # mean over samples of 1 / CE_i, per sample
    assert batch.shape == (1,) and torch.allclose(batch, 1 / (ce.mean() + wfnet.EPS))  # 1 / (batch-mean CE)


def test_the_validation_cap_bounds_what_one_certain_forget_sample_adds():
    ce = torch.tensor([1e-12, 2.0, 4.0])  # the first sample is still classified with certainty
    uncapped = wfnet.monitored_forget(ce, {"forget_reduction": "sample", "val_reciprocal_cap": 0.0})
    capped = wfnet.monitored_forget(ce, {"forget_reduction": "sample", "val_reciprocal_cap": 1.5})
    assert uncapped[0] > 0.99e6 and uncapped.mean() > 3e5
    assert torch.allclose(capped, torch.tensor([1.5, 0.5, 0.25]), atol=1e-6)


def test_the_cap_applies_to_the_validation_monitor_and_never_to_the_training_loss(data, monkeypatch):
    torch.manual_seed(0)
    model = FilteredModel(build_backbone(CNN, 10, 1, 28), 10).eval()
    classes = torch.arange(10)
    monkeypatch.setattr(wfnet, "sample_cross_entropy", lambda logits, y: torch.full((len(y),), 1e-9))  # all certain
    pairs = wfnet._validation_pairs(data.val, classes, torch.Generator().manual_seed(0))
    params = WFNet().default_parameters(CNN)
    capped = wfnet._validation_loss(model, data, pairs, classes, params)
    uncapped = wfnet._validation_loss(model, data, pairs, classes, {**params, "val_reciprocal_cap": 0.0})
    assert capped < params["lambda1"] * params["val_reciprocal_cap"] + 2 and uncapped > 1e5
    x, y = next(data.batches(data.train, 64))
    expansion = wfnet.label_expansion(y, classes, params["expansion"], torch.Generator().manual_seed(0))
    assert float(wfnet.untraining_loss(model, x, y, expansion, classes, params).detach()) > 1e5  # training: uncapped


def test_family_defaults_raise_the_forget_weight_for_vits():
    cnn, vit = WFNet().default_parameters(CNN), WFNet().default_parameters(VIT)
    assert vit["lambda1"] > cnn["lambda1"] and cnn.keys() == vit.keys() == WFNet.parameters.keys()


@pytest.mark.slow
@pytest.mark.parametrize("spec", [CNN, VIT], ids=["cnn", "vit"])
def test_mnist5k_forgets_every_class_and_keeps_the_rest(data, spec, shared_cache):
    """Each family's defaults, scored on the test split: mean Acc_f ≤ 5 %, mean Acc_r within 10 points."""
    original = group(data, spec, Cache(shared_cache)).original()  # test_baselines' originals, trained once a session
    result = WFNet().unlearn(make_task(original, data, spec))
    labels = data.test.labels
    base = accuracy(predict_logits(original, data, data.test), labels)
    acc_r, acc_f = [], []
    for c in range(10):
        logits = predict_logits(result.for_class(c), data, data.test)
        acc_r.append(accuracy(logits[labels != c], labels[labels != c]))
        acc_f.append(accuracy(logits[labels == c], labels[labels == c]))
    mean_r, mean_f = sum(acc_r) / 10, sum(acc_f) / 10
    assert mean_f <= 0.05, (mean_r, mean_f, base)
    assert mean_r >= base - 0.10, (mean_r, mean_f, base)



def test_evaluating_one_class_leaves_the_shared_network_as_it_was_for_the_others(data):
    """Regression: `predict_logits` restored a per-class view's flag with `train(was_training)`; a fresh view is
    in train mode, so the shared backbone went to train mode for good, the probe's forwards then moved its
    BatchNorm statistics and the other forget classes of a WF-Net cell fell to chance accuracy on the CNNs
    (found in the 2026-12-04 run of reports/mini-all-methods). Evaluating class 1 must leave class 4's logits bit-identical."""
    torch.manual_seed(0)
    model = FilteredModel(build_backbone(CNN, 10, 1, 28), 10).eval()
    with torch.no_grad():  # class-specific filters, as untraining leaves them
        for _, f in model.named_filters():
            f.alpha_w.normal_(2.0, 2.0)
    unlearned = wfnet.WFNetModel(model, [1, 4])
    before = predict_logits(unlearned.for_class(4), data, data.test)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [m.running_mean.clone() for m in norms]
    predict_logits(unlearned.for_class(1), data, data.test)
    assert not any(m.training for m in model.modules())
    unlearned.features(next(data.batches(data.train, 64))[0], 1, 10)  # the probe metric's path
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, norms))
    assert torch.equal(predict_logits(unlearned.for_class(4), data, data.test), before)
    assert not unlearned.for_class(4).training  # a view starts in its model's mode
