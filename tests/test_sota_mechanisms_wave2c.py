"""The defining mechanism of the NeurIPS 2023 Machine Unlearning Challenge's first two prize winners, each test one
that fails if the mechanism is removed: FCS's uniform-output stage on D_f(c) followed by alternating contrastive
rounds (D_f(c) against detached D_r(c) logits) and cross-entropy rounds on D_r(c), each at its own learning rate;
MSG's re-initialisation of exactly the weights with the smallest retain-minus-forget gradient, and the tenth of the
learning rate the other weights of those layers train at."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_baselines import cache, mnist5k, task_for, tiny  # noqa: F401  (fixtures)
from test_sota_mechanisms_wave2b import FORGET, Stop, trained, unlearned  # noqa: F401  (`trained` is a fixture)
from unlearnbench.baselines import fcs, msg
from unlearnbench.baselines._blocks import retain_sample
from unlearnbench.baselines._finetuning import FinetuneOutcome, finetune
from unlearnbench.errors import UserError
from unlearnbench.stages import Stages


class Spy(nn.Module):
    """The model, recording every batch it is called on."""

    def __init__(self, net: nn.Module, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.net, self.seen = net, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach())
        return self.net(x)


def all_rows_of(images: torch.Tensor, split_images: torch.Tensor) -> bool:
    """True when every image of `images` is one of `split_images`."""
    return bool((images.flatten(1)[:, None] == split_images.flatten(1)[None]).all(2).any(1).all())


def test_fcs_uniform_stage_then_contrastive_and_retain_rounds_on_their_own_data_and_rates(tiny, monkeypatch):
    forget = next(tiny.data.batches(tiny.data.train.forget(FORGET), 10_000))[0]
    retain = next(tiny.data.batches(tiny.data.train.retain(FORGET), 10_000))[0]
    rounds = []

    def one_call(model, loss, task):  # each round's first step, with the two forget losses replaced by markers
        seen: list[torch.Tensor] = []
        value = float(loss(Spy(model, seen)).detach())
        kind = {1.0: "uniform", 2.0: "contrast"}.get(value, "retain")
        rounds.append((kind, task.params["lr"], task.params["steps"]))
        expected = {"uniform": [forget], "contrast": [forget, retain], "retain": [retain]}[kind]
        assert len(seen) == len(expected) and all(map(all_rows_of, seen, expected)), kind
        return FinetuneOutcome(task.params["steps"], False, False)

    monkeypatch.setattr(fcs, "uniform_kl", lambda logits: torch.tensor(1.0))
    monkeypatch.setattr(fcs, "retain_contrast", lambda f, r, t: torch.tensor(2.0))
    monkeypatch.setattr(fcs, "finetune", one_call)
    unlearned(tiny, "fcs", epochs=2, batch_size=16, retain_steps=5, lr=0.1, forget_lr=0.2, retain_lr=0.3)
    forget_pass = math.ceil(len(forget) / 16)  # 30 images: 2 batches
    assert rounds == [("uniform", 0.1, forget_pass), ("contrast", 0.2, forget_pass), ("retain", 0.3, 5),
                      ("contrast", 0.2, forget_pass), ("retain", 0.3, 5)]


def test_fcs_contrastive_loss_makes_forget_logits_equally_similar_to_all_retain_logits_without_moving_them():
    generator = torch.Generator().manual_seed(0)
    f = torch.randn(4, 10, generator=generator, requires_grad=True)
    r = torch.randn(6, 10, generator=generator, requires_grad=True)
    loss = fcs.retain_contrast(f, r, 1.15)
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(-F.log_softmax(f @ r.T / 1.15, dim=1).mean()), rel=1e-6)
    loss.backward()
    assert r.grad is None and f.grad.abs().sum() > 0  # the retain logits are targets, never trained
    # its minimum, log of the retain batch size, is reached when each forget row is orthogonal to every retain row
    orthogonal = torch.zeros(4, 10)
    orthogonal[:, 0] = 1.0
    retain = torch.randn(6, 10, generator=generator)
    retain[:, 0] = 0.0
    assert float(fcs.retain_contrast(orthogonal, retain, 1.15)) == pytest.approx(math.log(6))
    assert float(fcs.retain_contrast(f.detach(), r.detach(), 1.15)) > math.log(6) + 0.1


def test_fcs_uniform_kl_is_the_divergence_of_the_outputs_from_the_uniform_distribution():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
    reference = F.kl_div(F.log_softmax(logits, dim=1), torch.full((5, 10), 0.1), reduction="batchmean")
    assert float(fcs.uniform_kl(logits)) == pytest.approx(float(reference), rel=1e-5)
    assert float(fcs.uniform_kl(torch.full((3, 10), 7.0))) == pytest.approx(0.0, abs=1e-6)


def test_fcs_uniform_stage_spreads_the_forget_class_outputs_over_all_classes(trained, monkeypatch):
    def stage_only(model, loss, task):  # the forgetting stage, 20 steps long, then stop
        finetune(model, loss, dataclasses.replace(task, params={**task.params, "steps": 20}))
        raise Stop(model)

    def entropy(net):
        net.eval()
        with torch.no_grad():
            x, _ = next(trained.data.batches(trained.data.train.forget(FORGET), 1000))
            probs = F.softmax(net(x), dim=1)
        return float(-(probs * probs.clamp_min(1e-12).log()).sum(1).mean())

    monkeypatch.setattr(fcs, "finetune", stage_only)
    with pytest.raises(Stop) as stopped:
        unlearned(trained, "fcs", lr=0.01)
    before, after = entropy(trained.original()), entropy(stopped.value.args[0])
    assert after > max(3 * before, 0.6 * math.log(10)), (before, after)  # uniform: ln 10


def reference_gradients(stages: Stages, task) -> dict[str, torch.Tensor]:
    """Σ ∇CE over batches of 64 of the retain sample the method draws with the same seed, minus Σ ∇CE over D_f(c),
    model in eval mode."""
    forget, retain = stages.data.train.forget(FORGET), stages.data.train.retain(FORGET)
    sample = retain_sample(task, len(forget) / len(retain))
    model = copy.deepcopy(stages.original()).eval().requires_grad_(True)
    for split, sign in ((sample, 1), (forget, -1)):
        for x, y in stages.data.batches(split, 64):
            (sign * F.cross_entropy(model(x), y)).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_msg_reinitialises_exactly_the_smallest_gradient_fraction_of_each_convolution(trained, monkeypatch):
    rate = 0.3
    grads = reference_gradients(trained, task_for(trained, "msg", FORGET))

    def capture(model, loss, task, before_step, after_step):
        raise Stop(copy.deepcopy(model.state_dict()))

    monkeypatch.setattr(msg, "finetune", capture)
    with pytest.raises(Stop) as stopped:
        unlearned(trained, "msg", init_rate=rate)
    start, original = stopped.value.args[0], trained.original().state_dict()
    convolutions = {f"{name}.weight" for name, m in trained.original().named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convolutions) == 13
    for name in convolutions:
        changed, size = start[name] != original[name], grads[name].abs()
        assert int(changed.sum()) == round(rate * changed.numel()), name
        assert float(size[changed].max()) <= float(size[~changed].min()) + 1e-6 * float(size.max()), name
        assert float(start[name][changed].std()) > 0.1 * float(original[name].std()), name  # new values, not a nudge
    assert all(torch.equal(start[k], original[k]) for k in original if k not in convolutions), \
        "a weight outside the convolutions, a bias or a buffer changed"


def test_msg_trains_the_kept_weights_of_a_reinitialised_layer_at_a_tenth_of_the_rate(trained, monkeypatch):
    lr, seen = 0.05, {}

    def one_step(model, loss, task, before_step, after_step):
        seen["start"] = {k: p.detach().clone() for k, p in model.named_parameters()}

        def record_gradients(net):
            seen["grad"] = {k: p.grad.clone() for k, p in net.named_parameters()}
            before_step(net)

        finetune(model, loss, dataclasses.replace(task, params={**task.params, "steps": 1}),
                 before_step=record_gradients, after_step=after_step)
        raise Stop(model)

    monkeypatch.setattr(msg, "finetune", one_step)
    with pytest.raises(Stop) as stopped:
        unlearned(trained, "msg", lr=lr, init_rate=0.3)
    after, original = dict(stopped.value.args[0].named_parameters()), trained.original().state_dict()
    start, grad = seen["start"], seen["grad"]
    for name, p in after.items():
        moved = p.detach() - start[name]
        expected = -lr * grad[name]  # SGD's first step, momentum buffer = gradient
        if name in msg.ranked_weights(trained.original()):
            fresh = start[name] != original[name]
            assert torch.allclose(moved[fresh], expected[fresh], atol=1e-7), name
            # float32 rounding of start + 0.1 · (step) is ~1e-7 here; an unslowed step would be off by up to ~8e-3
            assert torch.allclose(moved[~fresh], 0.1 * expected[~fresh], atol=1e-6), name
        else:
            assert torch.allclose(moved, expected, atol=1e-7), name


@pytest.mark.parametrize("method,params,says", [
    ("sfron", {"forget_freq": 0}, "Parameter 'forget_freq' of method 'sfron' must be ≥ 1, got 0."),
    ("msg", {"init_rate": -0.2}, "Parameter 'init_rate' of method 'msg' must be in (0, 1), got -0.2."),
    ("fisher", {"alpha": -1e-6}, "Parameter 'alpha' of method 'fisher' must be finite and > 0, got -1e-06."),
    ("delete", {"epochs": 0}, "Parameter 'epochs' of method 'delete' must be ≥ 1, got 0."),
    ("fcs", {"forget_lr": 0.0}, "Parameter 'forget_lr' of method 'fcs' must be finite and > 0, got 0.0."),
])
def test_a_parameter_the_method_cannot_use_is_one_clear_error_when_the_grid_is_planned(method, params, says):
    """The method's `parameter_ranges`, applied to every parameter set a grid expands, before any work."""
    from unlearnbench.discovery import discover
    from unlearnbench.grid import parameter_sets
    from unlearnbench.models import BackboneSpec

    with pytest.raises(UserError) as error:
        parameter_sets(discover()[0][method], BackboneSpec("vgg16"), params)
    assert str(error.value) == says
