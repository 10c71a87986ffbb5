"""The defining mechanism of DELETE, Fisher forgetting and SFR-on, each test one that fails if the mechanism is
removed: DELETE's masked teacher and its use of D_f(c) alone, Fisher forgetting's inverse-Fisher noise, SFR-on's
saliency-masked and clipped ascent steps, their cosine-decayed weight and their frequency, and its adaptive weights."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from test_baselines import METHODS, TINY_CNN, cache, group, mnist5k, task_for, tiny  # noqa: F401  (fixtures)
from test_conformance import per_class_subset
from unlearnbench.baselines import fisher, sfron
from unlearnbench.baselines._blocks import retain_sample
from unlearnbench.baselines.delete import masked_teacher_probs
from unlearnbench.baselines.fisher import expected_fisher
from unlearnbench.baselines.ssd import importances
from unlearnbench.data import ImageData, Split
from unlearnbench.models import classifier_head
from unlearnbench.stages import Stages

FORGET = 3


@pytest.fixture(scope="module")
def trained(mnist5k, cache) -> Stages:
    """The `tiny` 1/16-width VGG-16 trained 8 epochs on 60 images per class (~85 % test accuracy; `tiny` predicts one
    class for every image): for mechanisms whose effect needs a model that knows its classes."""
    return group(dataclasses.replace(mnist5k, train=per_class_subset(mnist5k.train, 60)), TINY_CNN, cache,
                 {"epochs": 8})


def unlearned(stages: Stages, method: str, **params) -> torch.nn.Module:
    return METHODS[method].cls().unlearn(task_for(stages, method, FORGET, **params)).for_class(FORGET)


def forget_class_probability(net: torch.nn.Module, stages: Stages) -> float:
    """Mean softmax probability of class FORGET over D_f(FORGET) of the training split (eval mode)."""
    net.eval()
    x, _ = next(stages.data.batches(stages.data.train.forget(FORGET), 1000))
    with torch.no_grad():
        return float(F.softmax(net(x), dim=1)[:, FORGET].mean())


class Stop(Exception):
    pass


def test_delete_reads_only_the_forget_class_of_the_training_split(tiny, monkeypatch):
    seen = []
    batches = ImageData.batches

    def spy(self, split, *args, **kwargs):
        seen.append(split)
        return batches(self, split, *args, **kwargs)

    def no_retain(self, forget_class):
        raise AssertionError("DELETE asked for retained data")

    monkeypatch.setattr(ImageData, "batches", spy)
    monkeypatch.setattr(Split, "retain", no_retain)
    unlearned(tiny, "delete", epochs=2)
    forget = tiny.data.train.forget(FORGET)
    assert seen and all(len(s) == len(forget) and bool((s.labels == FORGET).all()) for s in seen)


def test_delete_target_gives_the_true_class_zero_probability_and_keeps_the_others_proportions(tiny):
    x, y = next(tiny.data.batches(tiny.data.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0)))
    teacher = tiny.original()
    target = masked_teacher_probs(teacher, x, y)
    with torch.no_grad():
        probs = F.softmax(teacher(x).double(), dim=1)
    rows = torch.arange(len(y))
    assert bool((target[rows, y] == 0).all())
    assert torch.allclose(target.sum(1), torch.ones(len(y)))
    others = torch.ones_like(target, dtype=torch.bool)
    others[rows, y] = False
    renormalised = probs / (probs * others).sum(1, keepdim=True)  # p_j / (1 − p_y), without the cancellation
    assert torch.allclose(target[others].double(), renormalised[others], rtol=1e-4, atol=1e-12)


def test_delete_moves_the_forget_class_probability_to_the_other_classes(trained):
    before = forget_class_probability(trained.original(), trained)
    after = forget_class_probability(unlearned(trained, "delete", epochs=20, lr=0.01), trained)
    assert after < 0.5 * before, (before, after)


def test_expected_fisher_is_the_reference_one_sample_at_a_time(tiny):
    model = copy.deepcopy(tiny.original()).eval().requires_grad_(True)
    split = tiny.data.train.retain(FORGET).subset(torch.arange(5))
    fisher = expected_fisher(model, tiny.data, split, batch_size=2)
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for x, _ in tiny.data.batches(split, 1):  # the reference's `hessian`: one sample, every class y weighted by p(y|x)
        out = model(x)
        prob = F.softmax(out, dim=1).detach()
        for y in range(out.shape[1]):
            model.zero_grad()
            F.cross_entropy(out, torch.tensor([y])).backward(retain_graph=True)
            for name, p in model.named_parameters():
                expected[name] += prob[0, y] * p.grad.square() / len(split)
    assert all(torch.allclose(fisher[k], expected[k], rtol=1e-4, atol=1e-10) for k in expected)


def test_fisher_noise_is_larger_where_the_retain_fisher_is_smaller(trained):
    original, task = trained.original(), task_for(trained, "fisher", FORGET)
    sample = retain_sample(task, task.params["retain_fraction"])  # the sample the method draws with the same seed
    fisher = expected_fisher(copy.deepcopy(original), trained.data, sample, 64)
    net = unlearned(trained, "fisher", alpha=1e-6)
    head = {id(p) for p in net.get_submodule(classifier_head(net, 10)).parameters()}
    after = dict(net.named_parameters())
    # 1-D tensors (BatchNorm, biases) take element-wise noise: compare how far the most and least pinned ones moved
    pairs = [(fisher[k].flatten(), (after[k] - p).abs().flatten()) for k, p in original.named_parameters()
             if p.ndim == 1 and id(after[k]) not in head]
    importance, moved = (torch.cat(t) for t in zip(*pairs))
    order = torch.argsort(importance)
    quarter = len(order) // 4
    least, most = moved[order[:quarter]].mean(), moved[order[-quarter:]].mean()
    assert least > 3 * most, (float(least), float(most))
    weight = net.get_submodule(classifier_head(net, 10)).weight
    assert float(weight[FORGET].abs().mean()) < 0.5 * float(weight[torch.arange(10) != FORGET].abs().mean())


def test_sfron_ascends_every_forget_freq_iterations_with_a_cosine_decayed_weight(tiny, monkeypatch):
    losses = []

    def record(model, loss, task):  # with both losses replaced by constants, each step's loss is its weight
        losses.extend(float(loss(model)) for _ in range(int(task.params["steps"])))
        raise Stop

    monkeypatch.setattr(sfron, "adaptive_cross_entropy", lambda logits, y, lambd: torch.tensor(1.0))
    monkeypatch.setattr(sfron, "cross_entropy_parts", lambda net, batch: (torch.tensor(0.0),))
    monkeypatch.setattr(sfron, "finetune", lambda model, loss, task, before_step: record(model, loss, task))
    with pytest.raises(Stop):
        unlearned(tiny, "sfron", iterations=12, forget_freq=4, forget_alpha=10.0)
    expected = []
    for t in range(12):
        if t % 4 == 0:
            expected.append(-10.0 * (1 + math.cos(math.pi * t / 12)) / 2)
        expected.append(0.0)
    assert losses == pytest.approx(expected)


def test_sfron_forget_steps_move_only_salient_weights_within_the_clip_and_retain_steps_move_all(tiny, monkeypatch):
    threshold, max_norm = 2.0, 1e-3
    task = task_for(tiny, "sfron", FORGET)
    probe = task.copy_original()
    forget_importance = importances(probe, tiny.data, tiny.data.train.forget(FORGET), 64, F.cross_entropy)
    retain = retain_sample(task_for(tiny, "sfron", FORGET), 1.0)  # all of D_r, in the method's shuffled order
    retain_importance = importances(probe, tiny.data, retain, 64, F.cross_entropy)
    masks = {k: (forget_importance[k] + 1e-15) / (retain_importance[k] + 1e-15) >= threshold for k in forget_importance}
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert 0 < kept < 1
    grads = []

    def two_steps(model, loss, task, before_step):  # the forget step that opens the run, then a retain step
        for _ in range(2):
            model.zero_grad()
            loss(model).backward()
            before_step(model)
            grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
        raise Stop

    monkeypatch.setattr(sfron, "finetune", two_steps)
    with pytest.raises(Stop):
        unlearned(tiny, "sfron", mask_threshold=threshold, max_norm=max_norm, saliency_retain=10**9)  # all of D_r
    ascent, descent = grads
    assert all(not bool(ascent[k][~masks[k]].any()) for k in masks), "a forget step moved a weight outside the mask"
    assert math.sqrt(sum(float(g.square().sum()) for g in ascent.values())) == pytest.approx(max_norm, rel=1e-3)
    assert any(bool(descent[k][~masks[k]].any()) for k in masks)


def test_sfron_adaptive_loss_weights_the_best_fitted_samples_most():
    logits = torch.tensor([[4.0, 0.0], [0.5, 0.0], [0.0, 2.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 0])
    per_sample = F.cross_entropy(logits, labels, reduction="none").detach()
    assert float(sfron.adaptive_cross_entropy(logits, labels, 0.0).detach()) == pytest.approx(float(per_sample.mean()))
    sfron.adaptive_cross_entropy(logits, labels, 0.5).backward()
    plain = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), logits)[0]
    weights = logits.grad[:, 0] / plain[:, 0]
    assert torch.allclose(weights, per_sample ** -0.5 / (per_sample ** -0.5).sum())
    assert weights[0] > weights[1] > weights[2]


def test_fisher_and_sfron_read_a_bounded_retain_sample(tiny, monkeypatch):
    seen = {}

    def capture(name, real):
        def wrapper(model, data, split, *args, **kwargs):
            seen.setdefault(name, []).append(len(split))
            return real(model, data, split, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(fisher, "expected_fisher", capture("fisher", fisher.expected_fisher))
    unlearned(tiny, "fisher", max_retain=50)
    monkeypatch.setattr(sfron, "importances", capture("sfron", sfron.importances))
    unlearned(tiny, "sfron", saliency_retain=70, iterations=1)
    retained = len(tiny.data.train.retain(FORGET))
    assert retained > 70 and seen["fisher"] == [50] and seen["sfron"][1] == 70  # [D_f, the retain sample]
    assert fisher.FisherForgetting.max_classes == 100  # planning skips larger datasets (test_data)
