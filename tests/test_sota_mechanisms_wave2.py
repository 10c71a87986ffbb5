"""The defining mechanism of each second-wave baseline, each test one that fails if the mechanism is removed: Boundary
Shrink's FGSM-nearest wrong labels, Boundary Expanding's pruned shadow class, CF-k's frozen early layers and EU-k's
re-initialised last layers."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from test_baselines import METHODS, TINY_CNN, cache, group, mnist5k, task_for  # noqa: F401  (fixtures; discovery first)
from test_conformance import per_class_subset
from unlearnbench import UserError
from unlearnbench.baselines._finetuning import relabelled_forget_set
from unlearnbench.baselines.boundary import nearest_wrong_labels
from unlearnbench.baselines.last_layers import last_layers, layer_starts
from unlearnbench.models import BackboneSpec, build_backbone, classifier_head
from unlearnbench.stages import Stages
from unlearnbench.training import predict_logits

FORGET = 3


@pytest.fixture(scope="module")
def trained(mnist5k, cache) -> Stages:
    """A 1/16-width VGG-16 trained six epochs on 100 images per class (about 89 % test accuracy, 5 s): these
    mechanisms need a model that classifies (the one-epoch `tiny` model predicts one class for everything)."""
    data = dataclasses.replace(mnist5k, train=per_class_subset(mnist5k.train, 100))
    return group(data, TINY_CNN, cache, {"epochs": 6})


def unlearned(stages: Stages, method: str, **params) -> torch.nn.Module:
    return METHODS[method].cls().unlearn(task_for(stages, method, FORGET, **params)).for_class(FORGET)


def predicted(net: torch.nn.Module, stages: Stages, split) -> torch.Tensor:
    return predict_logits(net, stages.data, split).argmax(1)


def test_boundary_shrink_labels_are_the_classes_an_fgsm_step_reaches_never_the_true_one(trained):
    forget, original, data = trained.data.train.forget(FORGET), trained.original(), trained.data
    bound = 0.2
    labels = nearest_wrong_labels(original, data, forget, bound)

    # the same step written in pixel space: u in [0, 1], the model reading (u − mean) / std
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.mean, data.std))
    pixels = (forget.images.float() / 255).requires_grad_(True)
    F.cross_entropy(original((pixels - mean) / std), forget.labels).backward()
    stepped = torch.round(255 * (pixels + bound * pixels.grad.sign()).clamp(0, 1)) / 255
    with torch.no_grad():
        logits = original((stepped - mean) / std)
    expected = logits.scatter(1, forget.labels[:, None], float("-inf")).argmax(1)

    assert torch.equal(labels, expected) and not bool((labels == FORGET).any())
    random = relabelled_forget_set(task_for(trained, "boundary_shrink", FORGET)).labels
    assert float((labels == random).float().mean()) < 0.3


def test_boundary_shrink_labels_are_near_the_forget_class(trained):
    # a small step reaches a class the original already ranks high among the wrong ones on the clean image; a
    # random class ranks in the middle of the nine
    forget, original = trained.data.train.forget(FORGET), trained.original()
    clean = predict_logits(original, trained.data, forget).scatter(1, forget.labels[:, None], float("-inf"))
    random = relabelled_forget_set(task_for(trained, "boundary_shrink", FORGET)).labels
    rank = {name: float((clean > clean.gather(1, y[:, None])).sum(1).float().mean())
            for name, y in (("fgsm", nearest_wrong_labels(original, trained.data, forget, 0.05)), ("random", random))}
    assert rank["fgsm"] < 0.5 * rank["random"], rank


def test_boundary_shrink_trains_the_forget_set_towards_its_nearest_labels(trained):
    forget = trained.data.train.forget(FORGET)
    labels = nearest_wrong_labels(trained.original(), trained.data, forget, 0.1)
    net = unlearned(trained, "boundary_shrink", steps=20, stop_acc=0.0)
    before = float((predicted(trained.original(), trained, forget) == labels).float().mean())
    after = float((predicted(net, trained, forget) == labels).float().mean())
    assert after > before + 0.25, (before, after)


def test_boundary_expanding_prunes_the_shadow_class_and_moves_the_forget_set_off_its_class(trained):
    forget, original = trained.data.train.forget(FORGET), trained.original()
    untrained = unlearned(trained, "boundary_expand", steps=0)
    net = unlearned(trained, "boundary_expand", steps=10, lr=0.03)
    for model in (untrained, net):
        head = model.get_submodule(classifier_head(model, 10))
        assert head.out_features == trained.data.num_classes  # the shadow output is gone
    # widening then pruning keeps the original's K outputs exactly
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), untrained.state_dict().values()))
    before = float((predicted(original, trained, forget) == FORGET).float().mean())
    after = float((predicted(net, trained, forget) == FORGET).float().mean())
    assert before > 0.8 and after < 0.2, (before, after)


def frozen_and_trained(stages: Stages, k: int) -> tuple[set[str], set[str]]:
    """State-dict keys outside and inside the last `k` layers and head of the group's original."""
    original = stages.original()
    inside = {f"{name}.{key}" for name, module in last_layers(original, k).items()
              for key, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]}
    return set(original.state_dict()) - inside, inside


@pytest.mark.parametrize("norm_statistics", ["batch", "frozen"])
def test_cf_k_trains_only_the_last_k_layers_and_the_head(trained, norm_statistics):
    frozen, inside = frozen_and_trained(trained, 2)
    before = trained.original().state_dict()
    after = unlearned(trained, "cf_k", k=2, steps=5, norm_statistics=norm_statistics).state_dict()
    assert all(torch.equal(before[key], after[key]) for key in frozen), "a frozen weight or statistic moved"
    moved = {key for key in inside if not torch.equal(before[key], after[key])}
    assert any(key.endswith("weight") for key in moved) and "3.weight" in moved  # the head trained too


def test_eu_k_reinitialises_the_last_k_layers_and_leaves_the_first_bit_identical(trained):
    frozen, inside = frozen_and_trained(trained, 2)
    original = trained.original().state_dict()
    initial = task_for(trained, "eu_k", FORGET).new_model().state_dict()  # the original's own initialisation
    reset = unlearned(trained, "eu_k", k=2, steps=0).state_dict()
    assert all(torch.equal(original[key], reset[key]) for key in frozen)
    assert all(torch.equal(initial[key], reset[key]) for key in inside)
    assert all(not torch.equal(original[key], reset[key]) for key in inside if key.endswith("weight"))
    after = unlearned(trained, "eu_k", k=2, steps=5).state_dict()
    assert all(torch.equal(original[key], after[key]) for key in frozen)
    assert any(not torch.equal(initial[key], after[key]) for key in inside)
    # fresh BatchNorm layers hold no statistics to freeze: frozen ones would normalise with mean 0, variance 1
    with pytest.raises(UserError, match=r"'norm_statistics' of method 'eu_k' must be 'batch' .* got 'frozen'"):
        METHODS["eu_k"].cls().check_parameters({**METHODS["eu_k"].cls().parameters, "norm_statistics": "frozen"})


@pytest.mark.parametrize("spec,starts,head,classifier", [
    (BackboneSpec("resnet18", 0.0625), [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)], "fc", "fc"),
    (BackboneSpec("vit_tiny", 0.333, 0.333, 14), [f"blocks.{i}" for i in range(4)], "norm", "head"),
    (BackboneSpec("vgg16", 0.0625), None, "3", "3"),
], ids=["resnet", "vit", "vgg"])
def test_layers_are_blocks_or_convolutions_and_the_head_follows_them(spec, starts, head, classifier):
    model = build_backbone(spec, 10, 1, 28)
    found = layer_starts(model)
    if starts is None:  # VGG-16: its 13 convolutions
        assert len(found) == 13 and all(isinstance(model.get_submodule(n), torch.nn.Conv2d) for n in found)
    else:
        assert found == starts
    last = last_layers(model, 1)
    assert next(iter(last)) == found[-1] and head in last and found[-2] not in last
    assert classifier_head(model, 10) == classifier
    with pytest.raises(UserError, match="choose 1 to"):
        last_layers(model, len(found) + 1)
