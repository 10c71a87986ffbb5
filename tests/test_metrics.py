"""The registered metrics through a real MetricContext: mnist5k stages (a 2-epoch VGG-16/16) and constructed models."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from unlearnbench.data import load_dataset
from unlearnbench.errors import UserError
from unlearnbench.grid import DatasetEntry
from unlearnbench.metrics import METRICS, MetricContext
from unlearnbench.metrics.epsilon import chance_epsilon, epsilon_bound, per_example_epsilon
from unlearnbench.metrics.insertion_deletion import auc
from unlearnbench.metrics.relearn import epoch_sampler
from unlearnbench.models import BackboneSpec, backbone_key
from unlearnbench.stages import Stages
from unlearnbench.store import Cache
from unlearnbench.training import accuracy, predict_logits, resolve_recipe
from unlearnbench.unlearner import SharedModel, SingleClassModel, UnlearnedModel

SPEC = BackboneSpec("vgg16", 0.0625)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small models on a shared 2-core machine: a second intra-op thread only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(shared_cache):
    return load_dataset("mnist5k", cache_dir=shared_cache)


@pytest.fixture(scope="module")
def stages(data, shared_cache) -> Stages:
    """The same stage keys as the runner's tiny test grid, so a full test session trains them once."""
    recipe = resolve_recipe("mnist5k", SPEC, {"epochs": 2})
    return Stages(data, dataclasses.asdict(DatasetEntry("mnist5k")), SPEC, recipe, 0, Cache(shared_cache),
                  log=lambda *_: None)


def checked(name: str, settings: dict) -> dict:
    """Metric `name`'s defaults overridden by `settings`, which its `check` accepts (UserError otherwise)."""
    metric = METRICS.get(name)
    merged = {**metric.defaults, **settings}
    if metric.check:
        metric.check(merged)
    return merged


def compute(name: str, model: UnlearnedModel, c: int, stages: Stages, data=None, has_retrain: bool = False,
            **settings) -> dict[tuple[str, str], float]:
    """Run registered metric `name` on (model, class c) with its defaults overridden by `settings`, checked by
    the metric as a plan checks them."""
    ctx = MetricContext(data=stages.data if data is None else data, model=model.eval(), forget_class=c, stages=stages,
                        method="test", settings=checked(name, settings), has_retrain=has_retrain)
    return {(split, metric): value for split, metric, value in METRICS.get(name).compute(ctx)}


# ---------------------------------------------------------------- shared stage logits


def test_stage_model_logits_are_computed_once_per_group_and_equal_a_fresh_pass(stages, monkeypatch):
    """ZRF's random model and relearn's original model are shared by every cell of a group: the second cell
    (a new MetricContext) reuses their logits; the unlearned model is evaluated afresh per cell."""
    from unlearnbench import training

    calls = []
    real = training.predict_logits
    monkeypatch.setattr(training, "predict_logits", lambda model, *a, **k: calls.append(model) or real(model, *a, **k))
    random_net = stages.random_model(5)
    unlearned = copy.deepcopy(stages.original())
    first = compute("zrf", SharedModel(unlearned, 10), 1, stages, seed=5, splits=["test"])
    second = compute("zrf", SharedModel(unlearned, 10), 2, stages, seed=5, splits=["test"])
    assert sum(m is random_net for m in calls) == 1
    assert sum(m is unlearned for m in calls) == 2
    assert torch.equal(stages.stage_logits(random_net, "test"), real(random_net, stages.data, stages.data.test))
    assert stages.stage_logits(unlearned, "test") is None  # not a stage model: never memoised
    assert first != second  # the per-class forget views differ


# ---------------------------------------------------------------- ZRF


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_pretrained_backbone_gives_a_pretrained_original_but_a_fresh_random_model_and_no_retrain(data, tmp_path):
    """An epochs-0 recipe with pretrained weights: the original is those weights; ZRF's random model and the
    fresh models methods draw are never them; a retrained model cannot be made and says why."""
    weights = tmp_path / "w.safetensors"
    donor = Stages(data, {"name": "donor"}, SPEC, resolve_recipe("mnist5k", SPEC, {"epochs": 0}), 9,
                   Cache(tmp_path / "c0"), log=lambda *_: None).new_model(123)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(weights))
    spec = dataclasses.replace(SPEC, pretrained=str(weights))
    group = Stages(data, {"name": "pretrained"}, spec, resolve_recipe("mnist5k", spec, {"epochs": 0}), 0,
                   Cache(tmp_path / "c1"), log=lambda *_: None)
    assert same_weights(group.original(), donor)
    # in eval mode as a cached or trained original is (before: weights read for the first time stayed in train mode,
    # so a plugin running the original directly moved the shared model's BatchNorm statistics)
    assert not any(m.training for m in group.original().modules())
    assert not same_weights(group.random_model(0), donor) and not same_weights(group.new_model(), donor)
    fresh = Stages(data, {"name": "plain"}, SPEC, group.recipe, 0, Cache(tmp_path / "c2"), log=lambda *_: None)
    assert same_weights(group.random_model(4), fresh.random_model(4))  # fresh, pretrained or not
    with pytest.raises(UserError, match="0 epochs"):
        group.retrained(3)


def test_pretrained_weights_read_inputs_normalised_as_the_backbone_names_and_are_keyed_by_it(data, tmp_path):
    """A backbone's `mean`/`std` (the input normalisation its pretrained weights expect, e.g. timm's augreg ViTs'
    0.5) replace the dataset's for every model of its group where it loads the weights; without weights, or
    without them set, the dataset's stay and the stage models keep their keys."""
    weights = tmp_path / "w.safetensors"
    donor = Stages(data, {"name": "donor"}, SPEC, resolve_recipe("mnist5k", SPEC, {"epochs": 0}), 9,
                   Cache(tmp_path / "c0"), log=lambda *_: None).new_model(123)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(weights))
    plain = dataclasses.replace(SPEC, pretrained=str(weights))
    spec = dataclasses.replace(plain, mean=(0.5,), std=(0.25,))
    recipe = resolve_recipe("mnist5k", spec, {"epochs": 0})
    group = Stages(data, {"name": "d"}, spec, recipe, 0, Cache(tmp_path / "c1"), log=lambda *_: None)
    assert (group.data.mean, group.data.std) == ((0.5,), (0.25,)) and group.data.test is data.test
    images = data.test.images[:64]
    expected = donor.eval()((images.float() / 255 - 0.5) / 0.25)
    logits = predict_logits(group.original(), group.data, data.test.subset(torch.arange(64)))
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, predict_logits(group.original(), data, data.test.subset(torch.arange(64))))
    unweighted = Stages(data, {"name": "d"}, dataclasses.replace(spec, pretrained=None), recipe, 0,
                        Cache(tmp_path / "c1"), log=lambda *_: None)
    assert unweighted.data is data
    as_dataset = Stages(data, {"name": "d"}, plain, recipe, 0, Cache(tmp_path / "c1"), log=lambda *_: None)
    assert as_dataset.model_key("original", None) != group.model_key("original", None)
    assert unweighted.model_key("original", None) == Stages(
        data, {"name": "d"}, SPEC, recipe, 0, Cache(tmp_path / "c1"), log=lambda *_: None).model_key("original", None)
    assert "mean" not in backbone_key(plain) and backbone_key(spec)["mean"] == (0.5,)
    with pytest.raises(UserError, match="give 3 values, but dataset mnist5k has 1 channels"):
        Stages(data, {"name": "d"}, dataclasses.replace(spec, mean=(0.5,) * 3, std=(0.5,) * 3), recipe, 0,
               Cache(tmp_path / "c1"), log=lambda *_: None)


def test_zrfs_random_model_is_no_model_a_method_draws_nor_an_originals_initialisation(stages):
    """The reference ZRF compares with must be independent of the models it scores: with the random model built
    from the setting's seed itself (0, the seed of most groups) it was the seed-0 original's own initialisation and
    what EU-k re-initialises its last layers to (`task.new_model()`, the group seed)."""
    assert stages.seed == 0
    for setting in (0, 5):
        random_net = stages.random_model(setting)
        assert not any(same_weights(random_net, stages.new_model(s)) for s in (None, 0, setting))
    assert not same_weights(stages.random_model(0), stages.random_model(5))  # the setting still picks the random model


def test_zrf_of_the_random_model_against_itself_is_exactly_one(stages):
    rows = compute("zrf", SharedModel(stages.random_model(3), 10), 2, stages, seed=3, legacy=True)
    assert rows == {(s, m): 1.0 for s in ("test", "train") for m in ("zrf", "zrf_legacy")}


def test_zrf_of_an_original_model_lands_in_the_papers_original_range(stages):
    original = SharedModel(stages.original(), 10)
    rows = compute("zrf", original, 4, stages)
    assert set(rows) == {("test", "zrf"), ("train", "zrf")}
    assert all(0.40 <= v <= 0.55 for v in rows.values()), rows
    other_seed = compute("zrf", original, 4, stages, seed=1, splits=["test"])
    assert other_seed[("test", "zrf")] != rows[("test", "zrf")]  # the seed setting picks the random model


def test_zrf_is_computed_on_the_forget_class_samples_only(stages, data):
    """The mean per-sample natural-log JS, by hand, over D_f(c) of the test split (not D_r, not all samples)."""
    c, net, random_net = 6, stages.original(), stages.random_model(0)
    x = data.normalize(data.test.forget(c).images)
    with torch.no_grad():
        p, q = torch.softmax(net(x).double(), 1), torch.softmax(random_net(x).double(), 1)
    m = (p + q) / 2
    js = 0.5 * (p * (p / m).log()).sum(1) + 0.5 * (q * (q / m).log()).sum(1)
    rows = compute("zrf", SharedModel(net, 10), c, stages, splits=["test"])
    assert rows[("test", "zrf")] == pytest.approx(1 - js.mean().item(), abs=1e-5)


# ---------------------------------------------------------------- relearn time


class MaskedLinear(nn.Module):
    """A linear classifier that can never predict class `c` (its logit is pinned at −1e9); counts training samples."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)
        self.register_buffer("mask", -1e9 * F.one_hot(torch.tensor(c), 10).float())
        self.trained_on = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.trained_on += x.shape[0]
        return self.linear(x.flatten(1)) + self.mask


class InPlace(SingleClassModel):
    """Relearns its own network (no copy), so a test can inspect it afterwards."""

    def trainable_copy(self, forget_class: int) -> nn.Module:
        return self.net


def curve(rows: dict[tuple[str, str], float]) -> list[float]:
    """The relearn curve of a relearn metric's rows, epoch 0 first; checks its epochs run 0, 1, … without gaps."""
    points = {int(m.removeprefix("relearn_curve_")): v for (_, m), v in rows.items() if m.startswith("relearn_curve_")}
    assert sorted(points) == list(range(len(points)))
    return [points[e] for e in range(len(points))]


def without_curve(rows: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {k: v for k, v in rows.items() if not k[1].startswith("relearn_curve_")}


def test_relearn_takes_zero_epochs_for_the_original_model(stages, data):
    rows = compute("relearn", SharedModel(stages.original(), 10), 3, stages)
    assert without_curve(rows) == {("val", "relearn_epochs"): 0.0, ("val", "relearned"): 1.0,
                                   ("val", "relearn_diverged"): 0.0}
    forget = data.val.forget(3)
    assert curve(rows) == [accuracy(predict_logits(stages.original(), data, forget), forget.labels)]


def test_relearn_is_capped_at_100_epochs_of_500_samples_for_a_model_that_cannot_learn(stages):
    net = MaskedLinear(5)
    rows = compute("relearn", InPlace(net, 5), 5, stages)
    assert without_curve(rows) == {("val", "relearn_epochs"): 100.0, ("val", "relearned"): 0.0,
                                   ("val", "relearn_diverged"): 0.0}
    assert curve(rows) == [0.0] * 101  # before training, then after each of the 100 epochs
    assert net.trained_on == 100 * 500


def test_relearn_draws_dropout_from_its_own_seed_and_leaves_the_global_rng_as_it_found_it(stages):
    """Dropout (ImageNet's VGG-16) draws from the global RNG while relearning: the same cell relearns to the same
    weights whatever state earlier work left that RNG in, and the RNG is given back untouched."""
    class Dropped(MaskedLinear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(F.dropout(x.flatten(1), 0.5, self.training)) + self.mask

    torch.manual_seed(0)
    first = Dropped(5)
    second = copy.deepcopy(first)
    weights = []
    for net, state in ((first, 1), (second, 2)):
        torch.manual_seed(state)  # what a worker's earlier cells left behind
        before = torch.get_rng_state()
        compute("relearn", InPlace(net, 5), 5, stages, max_epochs=2)
        assert torch.equal(torch.get_rng_state(), before)
        weights.append(net.linear.weight.detach().clone())
    assert torch.equal(*weights)


def test_relearn_of_frozen_weights_is_capped(stages):
    class Frozen(SingleClassModel):
        def trainable_copy(self, forget_class: int) -> nn.Module:
            return copy.deepcopy(self.net).requires_grad_(False)

    rows = compute("relearn", Frozen(MaskedLinear(5), 5), 5, stages, max_epochs=40)
    assert without_curve(rows) == {("val", "relearn_epochs"): 40.0, ("val", "relearned"): 0.0,
                                   ("val", "relearn_diverged"): 0.0}
    assert curve(rows) == [0.0] * 41


def test_relearn_regains_a_class_whose_output_row_was_cut(stages, data):
    net = copy.deepcopy(stages.original())
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        head.weight[7] = 0
        head.bias[7] = -20
    cut = accuracy(net(data.normalize(data.val.forget(7).images)), data.val.forget(7).labels)
    assert cut == 0
    rows = compute("relearn", SingleClassModel(net, 7), 7, stages)
    assert rows[("val", "relearned")] == 1.0 and 1 <= rows[("val", "relearn_epochs")] < 100
    relearned = curve(rows)  # stops at the epoch that regained the original's accuracy
    original = stages.original()
    target = accuracy(predict_logits(original, data, data.val.forget(7)), data.val.forget(7).labels)
    assert len(relearned) == rows[("val", "relearn_epochs")] + 1
    assert relearned[0] == cut and relearned[-1] >= target > max(relearned[:-1])


def test_relearning_that_diverges_counts_as_never_relearned_and_says_so(stages):
    """Relearning at a learning rate the model diverges at. First its all-inf outputs read as class 0 (argmax), so
    forget class 0 counted as relearned in one epoch; then the cell failed, losing its other metrics. A model that
    diverged never regains the class: the protocol's cap, with `relearn_diverged` saying why."""
    net = copy.deepcopy(stages.original())
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        head.bias[0] = -20  # class 0 forgotten
    rows = compute("relearn", SingleClassModel(net, 0), 0, stages, lr=1e6, max_epochs=3)
    assert without_curve(rows) == {("val", "relearn_epochs"): 3.0, ("val", "relearned"): 0.0,
                                   ("val", "relearn_diverged"): 1.0}
    assert curve(rows)[0] == 0.0 and curve(rows)[1:] == [0.0] * 3
    with torch.no_grad():
        head.bias[0] = float("nan")  # the unlearned model itself non-finite: the cell fails, as for every metric
    with pytest.raises(FloatingPointError, match=r"^the model's outputs on the val split are not finite \(NaN or inf\)$"):
        compute("relearn", SingleClassModel(net, 0), 0, stages, lr=0.01, max_epochs=3)


def test_relearn_metric_samples_the_whole_training_split_and_targets_the_original(stages, monkeypatch):
    from unlearnbench.metrics import relearn

    seen = {}
    real_sampler, real_time = relearn.epoch_sampler, relearn.relearn_time

    def spy_sampler(data, split, samples, batch_size, seed):
        seen["split"], seen["samples"] = split, samples
        return real_sampler(data, split, samples, batch_size, seed)

    def spy_time(net, sample_epoch, forget_accuracy, target, **kw):
        seen["target"] = target
        return real_time(net, sample_epoch, forget_accuracy, target, **kw)

    monkeypatch.setattr(relearn, "epoch_sampler", spy_sampler)
    monkeypatch.setattr(relearn, "relearn_time", spy_time)
    compute("relearn", InPlace(MaskedLinear(5), 5), 5, stages, max_epochs=1)
    assert seen["split"] is stages.data.train and seen["samples"] == 500  # not D_f, not D_r: every class
    original = stages.original()
    forget = stages.data.val.forget(5)
    assert seen["target"] == accuracy(predict_logits(original, stages.data, forget), forget.labels)


def test_sampler_draws_500_fresh_samples_per_epoch_from_every_class(data):
    sample = epoch_sampler(data, data.train, 500, 50, seed=11)
    x0, y0 = map(torch.cat, zip(*sample(0)))
    x1, _ = map(torch.cat, zip(*sample(1)))
    assert x0.shape == (500, 1, 28, 28) and x0.dtype == torch.float32
    assert torch.unique(x0.flatten(1), dim=0).shape[0] == 500  # without replacement
    assert set(y0.tolist()) == set(range(10)) and torch.bincount(y0).max() < 100
    assert not torch.equal(x0, x1)
    assert torch.equal(x0, torch.cat([x for x, _ in sample(0)]))  # a function of (seed, epoch) only
    defaults = METRICS.get("relearn").defaults
    assert (defaults["samples_per_epoch"], defaults["max_epochs"]) == (500, 100)


# ---------------------------------------------------------------- insertion / deletion


class Gated(UnlearnedModel):
    """Logits computed from gates only (inputs ignored): one layer 'f' of `n` channels with weight and bias gates.

    `logits_of(gate_w)` → logits [10]; `closed` is the model unlearned on `c`: its gates are 1 − relevance.
    """

    def __init__(self, c: int, relevance_w: list[float], logits_of) -> None:
        super().__init__()
        self.c = c
        self.relevance_w = torch.tensor(relevance_w)
        self.logits_of = logits_of

    def relevance(self, forget_class: int):
        return {"f": (self.relevance_w.clone(), torch.zeros_like(self.relevance_w))}

    def gated(self, gates):
        logits = self.logits_of(gates["f"][0].float())

        class Net(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return logits.expand(x.shape[0], -1)

        return Net()

    def for_class(self, forget_class: int) -> nn.Module:
        return self.gated({"f": (1 - self.relevance_w, torch.ones_like(self.relevance_w))})

    def classes(self) -> list[int]:
        return [self.c]


def test_the_one_responsible_channel_gives_insertion_near_1_and_deletion_near_0(stages):
    c, j = 6, 2

    def logits_of(g: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(10)
        out[c] = 20 * g[j] - 10  # class c lives on channel j only
        out[(c + 1) % 10] = g.sum() - g[j]  # the other channels feed another class
        return out

    relevance = [0.1, 0.2, 0.95, 0.3, 0.05, 0.1, 0.2, 0.1]
    rows = compute("insertion_deletion", Gated(c, relevance, logits_of), c, stages)
    assert set(rows) == {("test", "insertion"), ("test", "deletion")}
    assert rows[("test", "insertion")] > 0.95
    assert rows[("test", "deletion")] < 0.05


# 8 elements (weight gates of relevance [.8 .2 .6 .4], 4 bias gates of relevance 0), step 0.25. Globally two
# more elements change per point: w0, w2 → w3, w1 → the bias gates (no effect). Per matrix one weight and one bias
# gate change per point: w0 → w2 → w3 → w1. The confidence on c is 0.1 + 0.8 × the mean weight gate.
TRAPEZOID_CASES = {"global": ([0.5, 0.85, 1, 1, 1], [1, 0.5, 0, 0, 0]),
                   "per_matrix": ([0.5, 0.7, 0.85, 0.95, 1], [1, 0.75, 0.5, 0.25, 0])}


@pytest.mark.parametrize("ranking", sorted(TRAPEZOID_CASES))
def test_insertion_deletion_auc_is_the_trapezoid_of_the_hand_made_curves(stages, ranking):
    c = 1

    def logits_of(g: torch.Tensor) -> torch.Tensor:
        p = 0.1 + 0.8 * g.mean()  # confidence on c; the rest of the mass on class 0
        out = torch.full((10,), -1e4)
        out[c], out[0] = torch.log(p), torch.log(1 - p)
        return out

    rows = compute("insertion_deletion", Gated(c, [0.8, 0.2, 0.6, 0.4], logits_of), c, stages, step=0.25,
                   ranking=ranking)
    base = 0.9

    def trapezoid(mean_gates):
        ys = [(0.1 + 0.8 * g) / base for g in mean_gates]
        return sum(0.25 * (a + b) / 2 for a, b in zip(ys, ys[1:]))

    insertion, deletion = TRAPEZOID_CASES[ranking]
    assert rows[("test", "insertion")] == pytest.approx(trapezoid(insertion), abs=1e-6)
    assert rows[("test", "deletion")] == pytest.approx(trapezoid(deletion), abs=1e-6)


def test_both_rankings_give_both_row_sets_and_an_unknown_ranking_is_refused(stages):
    c = 1

    def logits_of(g: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(10)
        out[c] = 4 * g.mean()
        return out

    model = Gated(c, [0.8, 0.2, 0.6, 0.4], logits_of)
    both = compute("insertion_deletion", model, c, stages, step=0.25, ranking="both")
    assert set(both) == {("test", m) for m in ("insertion", "deletion", "insertion_global", "deletion_global")}
    assert both[("test", "deletion")] == compute("insertion_deletion", model, c, stages, step=0.25)[("test", "deletion")]
    assert both[("test", "deletion_global")] == compute("insertion_deletion", model, c, stages, step=0.25,
                                                        ranking="global")[("test", "deletion")]
    with pytest.raises(UserError, match="ranking must be one of per_matrix, global, both, got 'layerwise'"):
        checked("insertion_deletion", {"ranking": "layerwise"})


def test_confidence_is_normalised_per_sample_by_the_baseline_model(stages):
    """Samples brighter than the median are confident under the pass-through model (p = 0.8 ḡ), the others less
    so (p = 0.6 ḡ², still classified as c): the mean of per-sample ratios (ḡ, ḡ²) differs from the ratio of means."""
    c = 3
    forget = stages.data.test.subset(stages.data.test.labels == c)
    brightness = torch.cat([x.flatten(1).mean(1) for x, _ in stages.data.batches(forget, 256, shuffle=False)])
    share = float((brightness > brightness.median()).double().mean())

    class SampleGated(Gated):
        def gated(self, gates):
            g = gates["f"][0].double().mean()

            class Net(nn.Module):
                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    high = (x.flatten(1).mean(1) > brightness.median()).double()
                    p = high * 0.8 * g + (1 - high) * 0.6 * g ** 2
                    out = torch.full((len(x), 10), -1e4, dtype=torch.float64)
                    out[:, c], out[:, (c + 1) % 10] = torch.log(p), torch.log(1 - p)
                    return out.float()

            return Net()

    rows = compute("insertion_deletion", SampleGated(c, [0.9, 0.7, 0.5, 0.3], None), c, stages, step=0.5)
    # deletion per matrix, step 0.5: mean weight gate 1 → 0.5 → 0
    per_sample = [share * g + (1 - share) * g ** 2 for g in (1.0, 0.5, 0.0)]
    ratio_of_means = [(share * 0.8 * g + (1 - share) * 0.6 * g ** 2) / (share * 0.8 + (1 - share) * 0.6)
                      for g in (1.0, 0.5, 0.0)]
    assert 0.2 < share < 0.8
    assert rows[("test", "deletion")] == pytest.approx(auc([0, 0.5, 1], per_sample), abs=1e-4)
    assert abs(auc([0, 0.5, 1], ratio_of_means) - auc([0, 0.5, 1], per_sample)) > 0.005


def test_samples_the_original_misclassifies_are_left_out_so_the_scores_stay_bounded(stages):
    """The darker half is misclassified by the pass-through model (p_c = 10⁻⁶) and gains confidence in c as gates
    close (+0.1 at ḡ = 0): a ratio of 10⁵ each. Only the brighter half (p_c = 0.8 ḡ, ratio ḡ) is scored."""
    c = 5
    forget = stages.data.test.subset(stages.data.test.labels == c)
    brightness = torch.cat([x.flatten(1).mean(1) for x, _ in stages.data.batches(forget, 256, shuffle=False)])

    class HalfMisclassified(Gated):
        def gated(self, gates):
            g = gates["f"][0].double().mean()

            class Net(nn.Module):
                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    high = (x.flatten(1).mean(1) > brightness.median()).double()
                    p = high * 0.8 * g + (1 - high) * (1e-6 + 0.1 * (1 - g))
                    out = torch.full((len(x), 10), -1e4, dtype=torch.float64)
                    out[:, c], out[:, (c + 1) % 10] = torch.log(p), torch.log(1 - p)
                    return out.float()

            return Net()

    rows = compute("insertion_deletion", HalfMisclassified(c, [0.9, 0.7, 0.5, 0.3], None), c, stages, step=0.5)
    assert rows[("test", "deletion")] == pytest.approx(auc([0, 0.5, 1], [1.0, 0.5, 0.0]), abs=1e-4)

    def logits_of(g: torch.Tensor) -> torch.Tensor:  # every sample predicted as c + 1 whatever the gates
        return torch.nn.functional.one_hot(torch.tensor((c + 1) % 10), 10).float() * 5

    assert compute("insertion_deletion", Gated(c, [0.9, 0.7, 0.5, 0.3], logits_of), c, stages, step=0.5) == {}


def test_models_without_relevance_get_no_insertion_deletion_rows(stages):
    assert compute("insertion_deletion", SharedModel(stages.original(), 10), 0, stages) == {}


# ---------------------------------------------------------------- membership inference


def _tiny(data, n: int):
    g = torch.Generator().manual_seed(0)
    pick = lambda split: split.subset(torch.randperm(len(split), generator=g)[:n])  # noqa: E731
    return dataclasses.replace(data, train=pick(data.train), test=pick(data.test))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU(), nn.Linear(256, 10))


@pytest.mark.parametrize("name, row", [("mia", "mia_forget"), ("mia_svc", "mia_svc_confidence")])
def test_mia_sees_through_a_model_that_memorised_its_training_set(stages, data, name, row):
    tiny = _tiny(data, 400)
    torch.manual_seed(0)
    net = _mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = tiny.normalize(tiny.train.images), tiny.train.labels
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    assert accuracy(net(x), y) == 1.0
    rows = compute(name, SharedModel(net, 10), 3, stages, data=tiny)
    assert set(rows) == ({("train", "mia_forget")} if name == "mia" else
                         {("train", f"mia_svc_{f}") for f in ("confidence", "entropy", "m_entropy")})
    assert rows[("train", row)] <= 0.25  # the forget samples are recognised as members


def test_mia_attack_trains_on_retain_train_vs_retain_test_and_scores_the_train_forget_set(stages, data):
    from unlearnbench.metrics.membership import mia_efficacy

    tiny, c = _tiny(data, 400), 3
    torch.manual_seed(2)
    net = _mlp().eval()
    with torch.no_grad():
        logits = [net(tiny.normalize(view.images)) for view in
                  (tiny.train.retain(c), tiny.test.retain(c), tiny.train.forget(c))]
    expected = mia_efficacy(*logits, labels=None, seed=0)
    assert compute("mia", SharedModel(net, 10), c, stages, data=tiny)[("train", "mia_forget")] == pytest.approx(
        expected, abs=1e-9)
    swapped = mia_efficacy(logits[0], logits[1], net(tiny.normalize(tiny.test.forget(c).images)), labels=None, seed=0)
    assert swapped != expected  # scoring the test forget set instead would show


def test_mia_is_near_chance_for_a_model_never_trained(stages, data):
    tiny = _tiny(data, 400)
    torch.manual_seed(1)
    model = SharedModel(_mlp(), 10)
    scores = [compute("mia", model, c, stages, data=tiny)[("train", "mia_forget")] for c in range(10)]
    assert abs(sum(scores) / 10 - 0.5) <= 0.2


def test_mia_svc_attack_trains_on_retain_train_vs_retain_test_and_scores_the_train_forget_set(stages, data):
    from unlearnbench.metrics.membership import ATTACK_VIEWS, svc_mia_efficacies

    tiny, c = _tiny(data, 400), 3
    torch.manual_seed(2)
    net = _mlp().eval()
    views = [getattr(getattr(tiny, split), view)(c) for split, view in ATTACK_VIEWS]
    assert [v.labels.eq(c).all().item() for v in views] == [False, False, True]
    with torch.no_grad():
        logits = [net(tiny.normalize(v.images)) for v in views]
    expected = svc_mia_efficacies(*logits, tuple(v.labels for v in views), shadow_size=100, seed=4)
    rows = compute("mia_svc", SharedModel(net, 10), c, stages, data=tiny, shadow_size=100, seed=4)
    assert rows == {("train", f"mia_svc_{f}"): v for f, v in expected.items()}


def test_mia_svc_judges_the_retrained_models_forget_set_unseen_and_the_originals_less_so(stages):
    retrained = compute("mia_svc", SingleClassModel(stages.retrained(0), 0), 0, stages, features=["confidence"])
    original = compute("mia_svc", SharedModel(stages.original(), 10), 0, stages, features=["confidence"])
    assert retrained[("train", "mia_svc_confidence")] >= 0.95  # class 0 never seen: p_y ≈ 0 on all of D_f
    assert original[("train", "mia_svc_confidence")] < retrained[("train", "mia_svc_confidence")] - 0.5


# ---------------------------------------------------------------- distance to the retrained model


def test_js_to_retrain_needs_the_grid_to_hold_retrain(stages):
    assert compute("js_to_retrain", SharedModel(stages.original(), 10), 0, stages) == {}


def test_js_to_retrain_is_zero_for_retrain_and_largest_on_the_forget_set_for_the_original(stages):
    retrained = SingleClassModel(stages.retrained(0), 0)
    rows = compute("js_to_retrain", retrained, 0, stages, has_retrain=True)
    assert rows == {("test", "js_to_retrain_forget"): 0.0, ("test", "js_to_retrain_retain"): 0.0}
    rows = compute("js_to_retrain", SharedModel(stages.original(), 10), 0, stages, train_missing=True)
    forget, retain = rows[("test", "js_to_retrain_forget")], rows[("test", "js_to_retrain_retain")]
    assert 0 < retain < forget <= math.log(2)


# ---------------------------------------------------------------- ToW


def test_tow_needs_the_grid_to_hold_retrain(stages):
    assert compute("tow", SharedModel(stages.original(), 10), 0, stages) == {}


def test_tow_of_the_retrained_model_is_exactly_one(stages):
    rows = compute("tow", SingleClassModel(stages.retrained(0), 0), 0, stages, has_retrain=True)
    assert rows == {("train", "tow"): 1.0, ("train", "tow_mia"): 1.0}


def test_tow_of_the_original_is_the_product_of_its_accuracy_and_mia_gaps_to_retrain(stages):
    """ToW from the accuracy metric's train forget/retain and test retain rows and ToW-MIA from mia_svc_confidence,
    of the original and the retrained model, by hand."""
    original, retrained = SharedModel(stages.original(), 10), SingleClassModel(stages.retrained(0), 0)
    acc = [compute("accuracy", m, 0, stages) for m in (original, retrained)]
    mia = [compute("mia_svc", m, 0, stages, features=["confidence"], shadow_size=300, seed=2)[
        ("train", "mia_svc_confidence")] for m in (original, retrained)]
    gap = lambda key: 1 - abs(acc[0][key] - acc[1][key])  # noqa: E731
    retain_test = gap(("train", "acc_retain")) * gap(("test", "acc_retain"))
    rows = compute("tow", original, 0, stages, train_missing=True, shadow_size=300, seed=2)
    assert rows[("train", "tow")] == pytest.approx(gap(("train", "acc_forget")) * retain_test, abs=1e-12)
    assert rows[("train", "tow_mia")] == pytest.approx((1 - abs(mia[0] - mia[1])) * retain_test, abs=1e-12)
    assert rows[("train", "tow")] < 0.5  # the original still knows class 0; retrain does not


def test_svc_attacks_are_fitted_once_per_model_and_class_and_reused_by_tow(stages, monkeypatch):
    """In one cell, tow reuses mia_svc's confidence attack on the unlearned model; across cells, the retrained
    model's attack is fitted once per group; the reused values equal freshly fitted ones."""
    import unlearnbench.metrics.membership as membership

    import sklearn.svm  # membership imports SVC from it when it fits an attack

    fits = []
    real_svc = sklearn.svm.SVC
    monkeypatch.setattr(sklearn.svm, "SVC", lambda **kw: fits.append(kw) or real_svc(**kw))
    settings = dict(shadow_size=200, seed=5)
    cut = LogitCut(stages.original(), 1).eval()

    def cell(model):
        ctx = MetricContext(data=stages.data, model=model, forget_class=1, stages=stages, method="t", settings={},
                            has_retrain=True)
        rows = {}
        for name in ("mia_svc", "tow"):
            ctx.settings = {**METRICS.get(name).defaults, **settings}
            rows.update({(split, metric): value for split, metric, value in METRICS.get(name).compute(ctx)})
        return rows

    first = cell(SingleClassModel(cut, 1))
    assert len(fits) == 3 + 1  # mia_svc's three features, then only the retrained model's confidence attack
    second = cell(SingleClassModel(copy.deepcopy(cut), 1))
    assert len(fits) == 3 + 1 + 3  # another cell: its own three, the retrained model's attack reused
    assert first == second
    import gc

    def reaches(obj, target, depth=3):
        return obj is target or depth > 0 and any(reaches(r, target, depth - 1) for r in gc.get_referents(obj))

    # weakly keyed by the retrained model: its entry must not hold it, or a worker would never free the model
    assert stages.retrained(1) in membership._STAGE_ATTACKS
    assert not any(reaches(memo, model) for model, memo in membership._STAGE_ATTACKS.items())
    monkeypatch.setattr(membership, "_STAGE_ATTACKS", membership.weakref.WeakKeyDictionary())
    assert cell(SingleClassModel(copy.deepcopy(cut), 1)) == first and len(fits) == 3 + 1 + 3 + 4


# ---------------------------------------------------------------- probe (feature-level forgetting)


class LogitCut(nn.Module):
    """The original network with class c's logit pushed to −10⁴: it hides c at the output, its features intact."""

    def __init__(self, net: nn.Module, c: int) -> None:
        super().__init__()
        self.net, self.c = net, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x).clone()
        out[:, self.c] = -1e4
        return out


def test_probe_sees_a_class_hidden_at_the_output_and_the_retrained_model_decodes_it_worse(stages):
    c = 3
    original, hidden = SharedModel(stages.original(), 10), SingleClassModel(LogitCut(stages.original(), c), c)
    retrained = SingleClassModel(stages.retrained(c), c)
    assert compute("accuracy", hidden, c, stages)[("test", "acc_forget")] == 0.0
    rows = {name: compute("probe", m, c, stages, has_retrain=True)
            for name, m in (("original", original), ("hidden", hidden), ("retrained", retrained))}
    assert rows["hidden"] == rows["original"]  # the same features, the same seeded probe, to the bit
    forget = {name: r[("test", "probe_forget")] for name, r in rows.items()}
    assert forget["hidden"] > 0.8 and forget["retrained"] < forget["hidden"] - 0.1
    assert rows["retrained"][("test", "probe_forget_gap")] == 0.0
    assert rows["hidden"][("test", "probe_forget_gap")] == pytest.approx(forget["hidden"] - forget["retrained"])
    assert all(r[("test", "probe_retain")] > 0.8 for r in rows.values())
    print({name: round(v, 3) for name, v in forget.items()})


def test_probe_gives_no_gap_without_retrained_models_and_refuses_bad_settings(stages):
    rows = compute("probe", SharedModel(stages.original(), 10), 0, stages, train_per_class=20)
    assert set(rows) == {("test", "probe_forget"), ("test", "probe_retain")}
    with pytest.raises(UserError, match="train_per_class"):
        compute("probe", SharedModel(stages.original(), 10), 0, stages, train_per_class=0)


# ---------------------------------------------------------------- epsilon (retrain-referenced, per example)


def test_per_example_epsilon_is_zero_for_ties_at_chance_for_one_distribution_and_at_its_bound_when_separated():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(4, 50))
    assert (per_example_epsilon(same, same, 0.01) == 0).all()  # every score tied with one on the other side
    bound = np.log((4 + 0.5 - 0.01 * 5) / 0.5)
    assert epsilon_bound(4, 0.01) == pytest.approx(bound)
    for low, high in ((same - 10, same + 10), (same + 10, same - 10)):  # either side above: both rules are tried
        assert np.allclose(per_example_epsilon(low, high, 0.01), bound)
    one_swap = np.array([[0.0], [1.0], [2.0], [5.0]]), np.array([[3.0], [4.0], [6.0], [7.0]])
    assert 0 < per_example_epsilon(*one_swap, 0.01)[0] < bound  # overlapping sides: in between
    draws = per_example_epsilon(rng.normal(size=(4, 4000)), rng.normal(size=(4, 4000)), 0.01)
    assert draws.mean() == pytest.approx(chance_epsilon(4, 0.01), abs=0.03)  # two sides of one distribution
    assert 0 < chance_epsilon(4, 0.01) < bound and chance_epsilon(2, 0.01) < chance_epsilon(4, 0.01)


def epsilon_rows(stages, model: UnlearnedModel, rerun, c: int, **settings) -> dict:
    ctx = MetricContext(data=stages.data, model=model.eval(), forget_class=c, stages=stages, method="test",
                        settings=checked("epsilon", settings), rerun=rerun)
    return {metric: value for _, metric, value in METRICS.get("epsilon").compute(ctx)}


def test_epsilon_tells_the_original_from_retrained_models_but_not_retrained_models_of_other_seeds(stages):
    c = 2
    replicate = lambda k: SingleClassModel(stages.retrained(c, k), c)  # noqa: E731  (0-3; the metric's side: 4-7)
    retrained = epsilon_rows(stages, replicate(0), replicate, c, examples=60)
    original = SharedModel(stages.original(), 10)
    remembered = epsilon_rows(stages, original, lambda k: original, c, examples=60)
    assert remembered["epsilon"] > 0.95 * epsilon_bound(4, 0.01) and remembered["epsilon_quality"] < 0.1
    assert retrained["epsilon"] < remembered["epsilon"] and retrained["epsilon_quality"] > 0.5
    assert retrained["epsilon_chance"] == remembered["epsilon_chance"] == pytest.approx(chance_epsilon(4, 0.01))
    print({"retrained vs retrained": retrained, "original vs retrained": remembered})


def test_epsilon_runs_only_where_named_and_only_on_cells_it_can_rerun(stages):
    from unlearnbench.grid import load_grid
    from unlearnbench.planning import metric_names

    assert "epsilon" not in metric_names(load_grid("smoke")) and "probe" in metric_names(load_grid("smoke"))
    assert epsilon_rows(stages, SharedModel(stages.original(), 10), None, 0) == {}
    with pytest.raises(UserError, match="metric_settings.epsilon.models must be ≥ 2, got 1"):
        epsilon_rows(stages, SharedModel(stages.original(), 10), None, 0, models=1)
