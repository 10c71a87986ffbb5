"""Behaviour of the baselines on mnist5k with CPU-size backbones: random labels and negative gradients forget and keep
the rest, retrain never saw its class, the fine-tuning loop stops, relabels and survives divergence."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench import UserError
from unlearnbench.data import ImageData, load_dataset
from unlearnbench.discovery import discover
from unlearnbench.baselines._finetuning import relabelled_forget_set
from unlearnbench.models import BackboneSpec
from unlearnbench.stages import Stages
from unlearnbench.store import Cache
from unlearnbench.training import accuracy, predict_logits, resolve_recipe
from unlearnbench.unlearner import UnlearnTask

from test_conformance import per_class_subset

METHODS, _ = discover()
VIT = BackboneSpec("vit_tiny", 0.333, 0.333, 7)  # a CPU-size ViT for 28-px MNIST
CNN = BackboneSpec("vgg16", 0.125)
TINY_CNN = BackboneSpec("vgg16", 0.0625)
CLASSES = list(range(10))


def group(data: ImageData, backbone: BackboneSpec, cache: Cache, recipe: dict | None = None) -> Stages:
    stages = Stages(data, {"name": data.name, "n": len(data.train)}, backbone,
                    resolve_recipe("mnist5k", backbone, recipe), seed=0, cache=cache, log=lambda _: None)
    stages.original()
    return stages


def task_for(stages: Stages, method: str, forget_class: int, seed: int = 0, **params) -> UnlearnTask:
    """A per-class task as the runner builds it, with `method`'s defaults overridden by `params`."""
    torch.manual_seed(seed)
    return UnlearnTask(
        original=stages.original(), data=stages.data, forget_class=forget_class, forget_classes=CLASSES,
        params={**METHODS[method].cls().default_parameters(stages.backbone), **params}, recipe=stages.recipe,
        backbone=stages.backbone, seed=seed, retrained=stages.retrained, new_model=stages.new_model,
        generator=torch.Generator().manual_seed(seed),
    )


def accuracies_on_test(net: nn.Module, data: ImageData, forget_class: int) -> tuple[float, float]:
    """(Acc_r, Acc_f) of `net` on the test split for `forget_class`."""
    logits, labels = predict_logits(net, data, data.test), data.test.labels
    keep = labels != forget_class
    return accuracy(logits[keep], labels[keep]), accuracy(logits[~keep], labels[~keep])


@pytest.fixture(scope="module")
def mnist5k(tmp_path_factory) -> ImageData:
    return load_dataset("mnist5k", cache_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cache(shared_cache) -> Cache:
    """The session's cache: a (data, backbone, recipe) group's original is trained once for every test module."""
    return Cache(shared_cache)


@pytest.fixture(scope="module")
def vit(mnist5k, cache) -> Stages:
    return group(mnist5k, VIT, cache)


@pytest.fixture(scope="module")
def tiny(mnist5k, cache) -> Stages:
    """A 1/16-width VGG-16 trained one epoch on 30 images per class: a cheap model for the loop's mechanics."""
    data = dataclasses.replace(mnist5k, train=per_class_subset(mnist5k.train, 30))
    return group(data, TINY_CNN, cache, {"epochs": 1})


@pytest.mark.parametrize("method,params,message", [
    ("negative_gradient", {"steps": -1}, r"Parameter 'steps' of method 'negative_gradient' must be ≥ 0, got -1\."),
    ("finetune", {"batch_size": 0}, r"Parameter 'batch_size' of method 'finetune' must be ≥ 1, got 0\."),
    ("neggrad_plus", {"lr": 0.0}, r"Parameter 'lr' of method 'neggrad_plus' must be finite and > 0, got 0.0\."),
    ("neggrad_plus", {"passes": "both"}, r"Parameter 'passes' of method 'neggrad_plus' must be one of separate, joint"),
    ("neggrad_plus", {"alpha": 1.5}, r"Parameter 'alpha' of method 'neggrad_plus' must be in \[0, 1\], got 1.5\."),
    ("finetune", {"optimizer": "sgdd"}, r"'optimizer' of method 'finetune' must be one of sgd, adam, adamw"),
    ("wfnet", {"lr": -1.0}, r"Parameter 'lr' of method 'wfnet' must be finite and > 0, got -1.0\."),
    ("wfnet", {"patience": 0}, r"Parameter 'patience' of method 'wfnet' must be ≥ 1, got 0\."),
    ("wfnet", {"expansion": 0}, r"Parameter 'expansion' of method 'wfnet' must be ≥ 1, got 0\."),
    ("wfnet", {"max_steps": -1}, r"Parameter 'max_steps' of method 'wfnet' must be ≥ 0 \(0: no limit\), got -1\."),
    ("wfnet", {"expansion": 1.5}, r"Parameter 'expansion' of method 'wfnet' must be an integer like its default"),
    ("wfnet", {"forget_reduction": "mean"}, r"'forget_reduction' of method 'wfnet' must be one of sample, batch"),
])
def test_parameter_values_a_method_cannot_run_with_are_refused_when_the_grid_expands(method, params, message):
    from unlearnbench.grid import parameter_sets

    with pytest.raises(UserError, match=message):
        parameter_sets(METHODS[method], CNN, params)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["random_labels", "negative_gradient"])
def test_forgets_the_class_and_keeps_the_rest(method: str, vit: Stages):
    original = [accuracies_on_test(vit.original(), vit.data, c) for c in CLASSES]
    unlearned = []
    for c in CLASSES:
        model = METHODS[method].cls().unlearn(task_for(vit, method, c))
        assert not model.diverged
        unlearned.append(accuracies_on_test(model.for_class(c), vit.data, c))
    mean = lambda rows, i: sum(r[i] for r in rows) / len(rows)  # noqa: E731
    assert mean(unlearned, 1) <= 0.10
    assert mean(unlearned, 0) >= mean(original, 0) - 0.15


@pytest.mark.slow
def test_retrain_never_saw_its_class_and_keeps_the_rest(mnist5k, cache):
    stages = group(mnist5k, CNN, cache)
    for c in (0, 7):
        model = METHODS["retrain"].cls().unlearn(task_for(stages, "retrain", c))
        acc_r, acc_f = accuracies_on_test(model.for_class(c), mnist5k, c)
        assert acc_f == 0.0
        assert acc_r >= accuracies_on_test(stages.original(), mnist5k, c)[0] - 0.05


def test_relabelled_forget_set_draws_other_classes_uniformly_and_reproducibly(mnist5k, tiny):
    task = dataclasses.replace(task_for(tiny, "random_labels", 4, seed=3), data=mnist5k)
    relabelled = relabelled_forget_set(task)
    task.generator.manual_seed(3)
    assert torch.equal(relabelled.labels, relabelled_forget_set(task).labels)
    assert torch.equal(relabelled.images, mnist5k.train.forget(4).images)
    counts = torch.bincount(relabelled.labels, minlength=10)
    assert counts[4] == 0 and counts.sum() == len(relabelled)
    assert (counts[torch.arange(10) != 4] > len(relabelled) / 9 / 2).all()  # each other class near its 1/9 share


def test_negative_gradient_stops_at_the_validation_target_before_its_budget(tiny):
    task = task_for(tiny, "negative_gradient", 2, steps=200, stop_acc=0.2)
    model = METHODS["negative_gradient"].cls().unlearn(task)
    assert model.diagnostics()["reached_target"] == 1.0 and not model.diverged
    assert 0 < model.diagnostics()["steps"] < 200
    held_out = tiny.data.val.forget(2)
    assert accuracy(predict_logits(model.for_class(2), tiny.data, held_out), held_out.labels) <= 0.2


@pytest.mark.parametrize("method", ["negative_gradient", "neggrad_plus"])
def test_divergence_is_recorded_and_the_last_finite_weights_are_kept(method: str, tiny):
    model = METHODS[method].cls().unlearn(task_for(tiny, method, 5, lr=1e30, steps=20, stop_acc=-1.0))
    assert model.diverged and model.diagnostics()["diverged"] == 1.0
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    x, _ = next(tiny.data.batches(tiny.data.test, 32))
    assert torch.isfinite(model.for_class(5)(x)).all()


def test_a_diverging_fine_tune_keeps_the_weights_of_its_last_finite_loss_not_the_starting_ones():
    """The loss is finite for three steps, then not: the model ends with the weights after two steps, the last whose
    loss was finite (snapshotted every step right after the loss's forward pass: the BatchNorm statistics are those
    of that third forward pass), not the weights it started from."""
    from types import SimpleNamespace

    from unlearnbench.baselines._finetuning import finetune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    after_steps, x = [], torch.randn(8, 3)

    def loss_fn(net):
        loss = net(x).square().mean()
        return loss if len(after_steps) < 3 else loss * float("nan")

    task = SimpleNamespace(params={"steps": 10, "optimizer": "sgd", "lr": 0.1}, device=torch.device("cpu"),
                           progress=False)
    outcome = finetune(model, loss_fn, task, after_step=lambda net: after_steps.append(
        {k: v.clone() for k, v in net.state_dict().items()}))
    assert outcome.diverged and outcome.steps == 3
    kept, weights = model.state_dict(), {name for name, _ in model.named_parameters()}
    assert all(torch.equal(kept[k], (after_steps[1] if k in weights else after_steps[2])[k]) for k in kept)
    assert not torch.equal(kept["0.weight"], start["0.weight"])


@pytest.mark.parametrize("passes", ["separate", "joint"])
def test_neggrad_plus_normalises_its_forget_batch_alone_as_the_reference_does_unless_asked_to_join(passes, tiny):
    # the reference (SCRUB's train_negrad) makes one forward pass per batch in train mode, so BatchNorm normalises
    # the D_f(c) batch with its own statistics; `passes: joint` sends both batches through one pass
    rows, forget_rows, inputs = [], [], []
    forget_images = tiny.data.normalize(tiny.data.train.forget(4).images)

    def record(module, args):
        if module.training and isinstance(module, nn.modules.batchnorm._BatchNorm):
            rows.append(len(args[0]))
        if module.training and args[0].dim() == 4 and args[0].shape[1] == 1 and not any(args[0] is x for x in inputs):
            inputs.append(args[0])  # a training pass's images (the VGG and its feature block see the same tensor)
            matches = (args[0][:, None] == forget_images[None]).flatten(2).all(2).any(1)
            forget_rows.append((len(args[0]), int(matches.sum())))

    handle = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        model = METHODS["neggrad_plus"].cls().unlearn(task_for(tiny, "neggrad_plus", 4, steps=3, stop_acc=-1.0,
                                                               batch_size=16, passes=passes))
    finally:
        handle.remove()
    assert model.diagnostics()["steps"] == 3
    if passes == "separate":  # per step, a retain pass without class 4, then a pass of class 4 alone
        assert max(rows) <= 16 and len(forget_rows) == 6
        assert [n for _, n in forget_rows[0::2]] == [0] * 3 and all(size == n for size, n in forget_rows[1::2])
    else:  # per step, one pass holding a retain batch and a forget batch
        assert max(rows) > 16 and len(forget_rows) == 3
        assert all(16 < size and 0 < n < size for size, n in forget_rows)


def test_neggrad_plus_searches_its_passes_on_cnns_only_and_keeps_the_shared_spaces():
    method = METHODS["neggrad_plus"].cls()
    cnn, vit = method.space(CNN), method.space(VIT)
    assert cnn["passes"].options == ("separate", "joint") and "passes" not in vit  # ViTs: no BatchNorm
    assert vit["norm_statistics"].options == ("batch",) and vit["lr"].high == 1e-2  # the fine-tuning ViT space


def _norm_statistics(net: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("mode", ["batch", "frozen"])
def test_frozen_norm_statistics_never_move_while_batch_statistics_do(mode: str, tiny):
    # a stopping check after every step must not unfreeze them
    model = METHODS["random_labels"].cls().unlearn(task_for(tiny, "random_labels", 3, steps=5, stop_acc=-1.0,
                                                            norm_statistics=mode))
    assert model.diagnostics()["steps"] == 5
    before, after = _norm_statistics(tiny.original()), _norm_statistics(model.for_class(3))
    same = all(torch.equal(a, b) for a, b in zip(before, after))
    assert same == (mode == "frozen")
    weights_moved = any(not torch.equal(a, b) for a, b in zip(tiny.original().parameters(),
                                                                model.for_class(3).parameters()))
    assert weights_moved  # frozen statistics, trained weights


def test_the_stopping_check_leaves_a_module_the_loss_put_in_eval_mode_in_eval_mode(tiny):
    """The held-out check restores every module's own mode; it then put the whole model back in train mode, so a
    BatchNorm layer a method froze once (eval mode, as CF-k and EU-k freeze layers) updated its running statistics
    from the next step on."""
    from unlearnbench.baselines._finetuning import finetune, held_out_forget_set

    task = task_for(tiny, "random_labels", 3, steps=4, stop_acc=-1.0, check_every=1)
    model = task.copy_original()
    frozen = next(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    before = [frozen.running_mean.clone(), frozen.running_var.clone()]
    batches = task.data.batches(task.data.train, 32, shuffle=True, generator=task.generator)
    calls = []

    def loss(net):
        if not calls:
            frozen.eval()  # frozen at the first step only, as a method that freezes part of the model once
        calls.append(1)
        x, y = next(batches)
        return F.cross_entropy(net(x), y)

    assert finetune(model, loss, task, held_out=held_out_forget_set(task)).steps == 4
    assert torch.equal(frozen.running_mean, before[0]) and torch.equal(frozen.running_var, before[1])


def test_an_unknown_norm_statistics_mode_is_one_sentence(tiny):
    with pytest.raises(UserError, match="Unknown norm_statistics 'fixed'"):
        METHODS["finetune"].cls().unlearn(task_for(tiny, "finetune", 1, steps=1, norm_statistics="fixed"))
