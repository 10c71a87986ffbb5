"""Tests of unlearnbench.methods._weight_filtering on tiny CPU models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unlearnbench.methods._weight_filtering import FilteredModel, WeightFilter  # noqa: E402

NC = 10


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    m = ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), num_classes=NC, in_chans=1)
    m.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)  # 3x3 stride-1 stem (MNIST variant)
    m.maxpool = nn.Identity()
    return m


def tiny_vgg() -> nn.Module:
    """torchvision-style VGG: Conv2d with bias + BN + ReLU, then a Linear head."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c_in = 1
    for c in (8, 8, "M", 16, 16, "M"):
        if c == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
    return nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, NC)
    )


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    m = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=4, in_chans=1,
        num_classes=NC, embed_dim=32, depth=2, num_heads=2,
    )
    with torch.no_grad():  # timm initialises qkv biases to zero; a trained model's are not
        for blk in m.blocks:
            blk.attn.qkv.bias.normal_(0, 0.1)
    return m


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters (timm zero-inits the last BN
    of each residual block, which would cut every gradient through the branch)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def build(factory):
    """Returns (original eval model, FilteredModel over an identical copy)."""
    original = factory()
    randomize_bn(original)
    original.eval()
    copy_ = factory()
    copy_.load_state_dict(original.state_dict())
    return original, FilteredModel(copy_, NC).eval()


def randomize_alpha(model: FilteredModel, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.alpha_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2)


FACTORIES = [tiny_resnet, tiny_vgg, tiny_vit]
X = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("factory", FACTORIES)
def test_pass_through_is_exact(factory):
    original, model = build(factory)
    randomize_alpha(model)
    with torch.no_grad():
        ref = original(X)
        assert torch.equal(model(X), ref)
        assert not torch.equal(model(X, forget_class=3), ref)  # α does act when a class is given


def test_count_wrapped_layers():
    for factory in (tiny_resnet, tiny_vgg):
        original, model = build(factory)
        n_conv = sum(isinstance(m, nn.Conv2d) for m in original.modules())
        names = [n for n, _ in model.named_filters()]
        assert len(names) == n_conv
        assert all(isinstance(f.op, nn.Conv2d) for _, f in model.named_filters())
    _, resnet = build(tiny_resnet)
    assert "layer1.0.conv1" in dict(resnet.named_filters())
    original, vit = build(tiny_vit)
    filters = dict(vit.named_filters())
    assert sorted(filters) == [f"blocks.{i}.attn.qkv" for i in range(len(original.blocks))]
    assert all(type(f.op) is nn.Linear for f in filters.values())
    assert isinstance(vit.backbone.patch_embed.proj, nn.Conv2d)  # patch embedding not wrapped
    assert len(vit.alpha_parameters()) == 2 * len(original.blocks)
    assert filters["blocks.0.attn.qkv"].alpha_w.shape == (NC, 96)


def _capture(module: nn.Module, store: list):
    return module.register_forward_hook(lambda _m, _i, out: store.append(out.detach().clone()))


@pytest.mark.parametrize("use_gates", [False, True])
def test_closed_row_silences_exact_channels_conv_with_bias(use_gates):
    original, model = build(tiny_vgg)
    name, wf = next(iter(model.named_filters()))  # first conv: has a bias, input is the image itself
    assert wf.op.bias is not None
    closed = torch.tensor([1, 4, 6])
    c = 2
    with torch.no_grad():
        if use_gates:
            gate = torch.ones(wf.out_channels)
            gate[closed] = 0.0
            gates = {name: (gate, gate.clone())}
        else:
            wf.alpha_w[c], wf.alpha_b[c] = float("inf"), float("inf")  # sigma = 1: open
            wf.alpha_w[c, closed] = float("-inf")  # sigma = 0: closed
            wf.alpha_b[c, closed] = float("-inf")
            gates = None
        ref_out, got_out = [], []
        h1 = _capture(original.get_submodule(name), ref_out)
        h2 = _capture(wf, got_out)
        model(X, forget_class=None if use_gates else c, gates=gates)
        original(X)
        h1.remove(), h2.remove()
    ref, got = ref_out[0], got_out[0]
    open_ = torch.ones(wf.out_channels, dtype=torch.bool)
    open_[closed] = False
    assert torch.all(got[:, closed] == 0)
    assert torch.all(ref[:, closed].abs().amax(dim=(0, 2, 3)) > 0)  # would not be zero by chance
    torch.testing.assert_close(got[:, open_], ref[:, open_], rtol=1e-6, atol=1e-6)


def test_closed_row_silences_exact_qkv_features():
    original, model = build(tiny_vit)
    name, wf = next(iter(model.named_filters()))
    closed = torch.tensor([0, 5, 40, 95])
    c = 7
    with torch.no_grad():
        wf.alpha_w[c], wf.alpha_b[c] = float("inf"), float("inf")
        wf.alpha_w[c, closed] = float("-inf")
        wf.alpha_b[c, closed] = float("-inf")
        ref_out, got_out = [], []
        h1 = _capture(original.get_submodule(name), ref_out)
        h2 = _capture(wf, got_out)
        model(X, forget_class=c)
        original(X)
        h1.remove(), h2.remove()
    ref, got = ref_out[0], got_out[0]
    open_ = torch.ones(wf.out_channels, dtype=torch.bool)
    open_[closed] = False
    assert torch.all(got[..., closed] == 0)
    torch.testing.assert_close(got[..., open_], ref[..., open_], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory", FACTORIES)
def test_mixed_class_batch_equals_per_sample(factory):
    _, model = build(factory)
    randomize_alpha(model, seed=3)
    classes = torch.tensor([0, 3, 3, 9, 1, 0])
    with torch.no_grad():
        mixed = model(X, forget_class=classes)
        single = torch.cat([model(X[i : i + 1], forget_class=int(c)) for i, c in enumerate(classes)])
        same = model(X, forget_class=3)
    torch.testing.assert_close(mixed, single, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1:3], same[1:3], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[0], same[0], atol=1e-3)


@pytest.mark.parametrize("factory", FACTORIES)
def test_gradients_reach_only_used_alpha_rows(factory):
    _, model = build(factory)
    model.freeze_backbone()  # eval mode: BN batch statistics would cancel uniform per-channel masks
    classes = torch.tensor([2, 5, 2, 5, 5, 2])
    F.cross_entropy(model(X, forget_class=classes), torch.arange(6) % NC).backward()
    alpha_ids = {id(p) for p in model.alpha_parameters()}
    for p in model.parameters():
        if id(p) not in alpha_ids:
            assert not p.requires_grad and p.grad is None
    used = torch.zeros(NC, dtype=torch.bool)
    used[classes] = True
    for _, f in model.named_filters():
        assert f.alpha_w.grad[used].abs().sum() > 0
        assert torch.all(f.alpha_w.grad[~used] == 0)
        if f.op.bias is not None:
            assert f.alpha_b.grad[used].abs().sum() > 0
            assert torch.all(f.alpha_b.grad[~used] == 0)


def test_output_scaling_equals_weight_masking():
    torch.manual_seed(4)
    alpha = torch.randn(NC, 12) * 2
    classes = torch.tensor([0, 7, 7, 3])
    mw, mb = torch.sigmoid(alpha[classes]), torch.sigmoid(alpha.flip(0)[classes])

    conv = nn.Conv2d(5, 12, 3, stride=2, padding=1, dilation=1)
    wf = WeightFilter(conv, NC)
    x = torch.randn(4, 5, 9, 9)
    with torch.no_grad():
        wf.alpha_w.copy_(alpha), wf.alpha_b.copy_(alpha.flip(0))
        with wf.state.select(classes):
            got = wf(x)
    ref = torch.cat([
        F.conv2d(x[i : i + 1], conv.weight * mw[i].view(-1, 1, 1, 1), conv.bias * mb[i], stride=2, padding=1)
        for i in range(4)
    ])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)

    qkv = nn.Linear(4, 12)
    wf = WeightFilter(qkv, NC)
    x = torch.randn(4, 7, 4)
    with torch.no_grad():
        wf.alpha_w.copy_(alpha), wf.alpha_b.copy_(alpha.flip(0))
        with wf.state.select(classes):
            got = wf(x)
    ref = torch.stack([F.linear(x[i], qkv.weight * mw[i].view(-1, 1), qkv.bias * mb[i]) for i in range(4)])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory", [tiny_resnet, tiny_vit])
def test_for_class(factory):
    _, model = build(factory)
    randomize_alpha(model, seed=5)
    model.freeze_backbone()
    selected = model.for_class(4).eval()
    with torch.no_grad():
        torch.testing.assert_close(selected(X), model(X, forget_class=4), rtol=0, atol=0)
    alpha_ids = {id(p) for p in selected.model.alpha_parameters()}
    assert alpha_ids and all(not p.requires_grad for p in selected.model.alpha_parameters())
    backbone = [p for p in selected.parameters() if id(p) not in alpha_ids]
    assert backbone and all(p.requires_grad for p in backbone)
    # the source model is untouched (deep copy): its backbone stays frozen
    assert all(not p.requires_grad for n, p in model.named_parameters() if "alpha" not in n)


@pytest.mark.parametrize("factory", [tiny_resnet, tiny_vit])
def test_alpha_state_dict_round_trip(factory):
    _, model = build(factory)
    randomize_alpha(model, seed=6)
    sd = model.alpha_state_dict()
    assert len(sd) == len(model.alpha_parameters())
    assert all(k.endswith((".alpha_w", ".alpha_b")) for k in sd)
    fresh = FilteredModel(factory(), NC).eval()
    fresh.backbone.load_state_dict(model.backbone.state_dict())  # original weights + α share one layout
    fresh.load_alpha_state_dict(sd)
    classes = torch.tensor([1, 2, 3, 4, 5, 6])
    with torch.no_grad():
        assert torch.equal(fresh(X, forget_class=classes), model(X, forget_class=classes))
    with pytest.raises(KeyError):
        fresh.load_alpha_state_dict({k: v for k, v in list(sd.items())[1:]})


@pytest.mark.parametrize("factory", [tiny_resnet, tiny_vgg])
def test_relevance(factory):
    _, model = build(factory)
    randomize_alpha(model, seed=7)
    rel = model.relevance(3)
    assert list(rel) == [n for n, _ in model.named_filters()]
    for name, f in model.named_filters():
        rw, rb = rel[name]
        assert not rw.requires_grad and rw.shape == (f.out_channels,)
        torch.testing.assert_close(rw, 1 - torch.sigmoid(f.alpha_w[3].detach()))
        if f.op.bias is None:  # ResNet convs: α_b gates nothing, so it is no element of insertion/deletion
            assert rb.shape == (0,)
        else:
            torch.testing.assert_close(rb, 1 - torch.sigmoid(f.alpha_b[3].detach()))
    assert any(f.op.bias is None for _, f in model.named_filters()) == (factory is tiny_resnet)


def test_gates_override_class_and_open_gates_are_identity():
    original, model = build(tiny_resnet)
    randomize_alpha(model, seed=8)
    ones = {n: (torch.ones(f.out_channels), torch.ones(f.out_channels)) for n, f in model.named_filters()}
    with torch.no_grad():
        torch.testing.assert_close(model(X, forget_class=2, gates=ones), original(X), rtol=1e-5, atol=1e-5)
        relevance = model.relevance(2)
        as_gates = {n: (1 - rw, 1 - rb) for n, (rw, rb) in relevance.items()}
        torch.testing.assert_close(model(X, gates=as_gates), model(X, forget_class=2), rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError):
        model(X, gates={"nope": ones["conv1"]})


def test_state_cleared_after_exception():
    _, model = build(tiny_resnet)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 28, 28), forget_class=torch.tensor([1, 2]))  # wrong channel count
    assert model.state.classes is None and model.state.gates == {}
    with pytest.raises(ValueError):
        model(X, forget_class=torch.tensor([1, 2]))  # wrong number of classes
    assert model.state.classes is None


@pytest.mark.parametrize("classes", [[0, 1, 2, 3, 4, -1], [10] * 6, 10, -1])
def test_a_forget_class_outside_the_classes_is_refused(classes):
    """Before: a tensor's -1 ran silently as the last class (α row -1) and 10 raised a bare IndexError."""
    _, model = build(tiny_resnet)
    given = torch.tensor(classes) if isinstance(classes, list) else classes
    with pytest.raises(ValueError, match=r"^forget_class .*outside \[0, 10\)$"):
        model(X, forget_class=given)
    assert model.state.classes is None


def test_bf16_autocast_and_channels_last():
    original, model = build(tiny_resnet)
    randomize_alpha(model, seed=9)
    with torch.no_grad():
        ref = model(X, forget_class=5)
        original.to(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)
        xc = X.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(xc, forget_class=5), ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(model(xc), original(xc))
        out: list = []
        h1 = _capture(original.get_submodule("layer1.0.conv1"), out)
        h2 = _capture(model.backbone.get_submodule("layer1.0.conv1"), out)
        original(xc), model(xc, forget_class=torch.arange(6))
        h1.remove(), h2.remove()
        assert out[0].is_contiguous(memory_format=torch.channels_last)
        assert out[1].stride() == out[0].stride()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = _capture(model.backbone.get_submodule("layer1.0.conv1"), out)
            low = model(xc, forget_class=torch.full((6,), 5))
            h.remove()
        assert out[-1].dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.15)
    _, vit = build(tiny_vit)
    randomize_alpha(vit)
    with torch.no_grad():
        ref = vit(X, forget_class=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = vit(X, forget_class=1)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.15)


def test_a_vit_without_qkv_projections_is_refused_not_filtered_at_its_patch_embedding():
    """Before: a torchvision ViT (nn.MultiheadAttention, no `qkv` Linear) fell back to the CNN target and WF-Net
    filtered its patch embedding, the one Conv2d, which the method never filters."""
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=28, patch_size=14, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=NC)
    with pytest.raises(ValueError, match="attention layers but no `qkv` Linear"):
        FilteredModel(vit, NC)
    assert [n for n, _ in FilteredModel(vit, NC, target="conv").named_filters()] == ["conv_proj"]
