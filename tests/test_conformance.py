"""Conformance, benchopt style: every discovered method (methods/, baselines/) honours the `Unlearner` contract on a
tiny config, so a new plugin is tested without writing a test."""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from unlearnbench.data import ImageData, Split, load_dataset
from unlearnbench.discovery import MethodInfo, discover
from unlearnbench.models import BackboneSpec, classifier_head
from unlearnbench.stages import Stages
from unlearnbench.store import Cache
from unlearnbench.training import resolve_recipe
from unlearnbench.unlearner import UnlearnedModel, UnlearnTask

METHODS, PLUGIN_ERRORS = discover()
BACKBONE = BackboneSpec("vgg16", 0.0625)
SHRINK = {"epochs": 1, "max_epochs": 1, "steps": 3, "max_steps": 3}  # budget keys, shrunk where a method has them
PER_CLASS_TARGET = 3
SEED = 7


def per_class_subset(split: Split, n: int) -> Split:
    """The first `n` samples of every class of `split`."""
    index = torch.cat([torch.nonzero(split.labels == c).flatten()[:n] for c in split.labels.unique()])
    return split.subset(index)


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> Stages:
    """mnist5k cut to 30 train / 5 val / 5 test images per class, a 1/16-width VGG-16 trained for one epoch."""
    full = load_dataset("mnist5k", cache_dir=tmp_path_factory.mktemp("data"))
    data: ImageData = dataclasses.replace(full, train=per_class_subset(full.train, 30),
                                          val=per_class_subset(full.val, 5), test=per_class_subset(full.test, 5))
    recipe = resolve_recipe("mnist5k", BACKBONE, {"epochs": 1})
    cache = Cache(tmp_path_factory.mktemp("cache"))
    stages = Stages(data, {"name": "mnist5k-tiny"}, BACKBONE, recipe, seed=0, cache=cache, log=lambda _: None)
    stages.original()
    return stages


def retain_inverted(stages: Stages) -> Stages:
    """The same original model, with every training and validation image outside PER_CLASS_TARGET inverted
    (255 − x): a method that reads no retained data returns exactly the same model on it."""
    def invert(split: Split) -> Split:
        keep = (split.labels == PER_CLASS_TARGET)[:, None, None, None]
        return Split(torch.where(keep, split.images, 255 - split.images), split.labels)

    data = dataclasses.replace(stages.data, train=invert(stages.data.train), val=invert(stages.data.val))
    inverted = Stages(data, {"name": "mnist5k-tiny-retain-inverted"}, BACKBONE, stages.recipe, seed=0,
                      cache=Cache(stages.cache.root / "retain-inverted"), log=lambda _: None)
    inverted._memory["original"], inverted._costs["original"] = stages.original(), {}  # the same original
    return inverted


def make_task(info: MethodInfo, stages: Stages) -> UnlearnTask:
    """A task as the runner builds it, with the method's own defaults and any budget keys shrunk."""
    defaults = info.cls().default_parameters(BACKBONE)
    params = {**defaults, **{k: v for k, v in SHRINK.items() if k in defaults}}
    classes = list(range(stages.data.num_classes))
    torch.manual_seed(SEED)
    return UnlearnTask(
        original=stages.original(), data=stages.data, forget_class=PER_CLASS_TARGET if info.cls.per_class else None,
        forget_classes=classes, params=params, recipe=stages.recipe, backbone=BACKBONE, seed=SEED,
        retrained=stages.retrained, new_model=stages.new_model, generator=torch.Generator().manual_seed(SEED),
    )


def predictions(model: UnlearnedModel, x: torch.Tensor) -> dict[int, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return {c: model.for_class(c)(x) for c in model.classes()}


def test_the_readme_methods_table_states_each_methods_retained_data_rounds_and_tuning():
    from unlearnbench.grid import tuned_parameters

    tuned = {grid: tuned_parameters(grid) for grid in ("smoke", "mini")}
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("| method | file | paper (venue) |"):].split("\n\n")[0].splitlines()[2:]
    listed = set()
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        flags = cells[4].split(" / ")
        flags = flags * len(names) if len(flags) == 1 else flags
        for name, flag in zip(names, flags, strict=True):
            assert flag == ("yes" if METHODS[name].cls.uses_retain else "no"), name
            assert cells[5] == ("one class" if METHODS[name].cls.per_class else "all classes"), name
            tuned_on = {grid for grid, result in tuned.items()
                        if any(name in methods for backbones in result.values() for methods in backbones.values())}
            assert set(re.findall(r"\b(smoke|mini)\b", cells[6])) == tuned_on, name
        listed.update(names)
    assert listed == set(METHODS)


def test_every_plugin_file_imports():
    assert not PLUGIN_ERRORS, [e.message for e in PLUGIN_ERRORS]
    assert {"original", "retrain"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_conforms_to_the_unlearner_contract(name: str, stages: Stages):
    info = METHODS[name]
    original = stages.original()
    before = copy.deepcopy(original.state_dict())
    x, _ = next(stages.data.batches(stages.data.test, 16))

    model = info.cls().unlearn(make_task(info, stages))

    assert isinstance(model, UnlearnedModel)
    assert all(isinstance(k, str) and math.isfinite(v) for k, v in model.diagnostics().items())
    expected = [PER_CLASS_TARGET] if info.cls.per_class else list(range(stages.data.num_classes))
    assert sorted(model.classes()) == expected
    first = predictions(model, x)
    n = stages.data.num_classes
    for c, logits in first.items():
        assert logits.shape == (16, n), c
        assert torch.isfinite(logits).all(), c
        net = model.for_class(c)  # the features the probe metric reads are what the head turns into these logits
        with torch.no_grad():
            head_of_features = net.get_submodule(classifier_head(net, n))(model.features(x, c, n))
        assert torch.allclose(head_of_features, logits, atol=1e-5), c
    after = original.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "the original model was modified"
    assert not original.training and not any(p.requires_grad for p in original.parameters())

    again = predictions(info.cls().unlearn(make_task(info, stages)), x)
    assert all(torch.equal(first[c], again[c]) for c in first), "two runs with the same seed differ"

    if info.cls.per_class:  # all-class methods (WF-Net) have no retained classes to perturb
        perturbed = predictions(info.cls().unlearn(make_task(info, retain_inverted(stages))), x)
        same = all(torch.equal(first[c], perturbed[c]) for c in first)
        assert same != info.cls.uses_retain, (
            f"uses_retain = {info.cls.uses_retain}, but inverting every training and validation image outside "
            f"class {PER_CLASS_TARGET} {'did not change' if same else 'changed'} the unlearned model")
