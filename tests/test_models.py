import pytest
import torch

from unlearnbench import UserError
from unlearnbench.models import BACKBONES, BackboneSpec, build_backbone, load_weights

SMALL = {"vgg16": 0.125, "resnet18": 0.125, "vit_tiny": 0.34, "vit_small": 0.17}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_output_shape_small_inputs(name, channels, size):
    model = build_backbone(BackboneSpec(name, SMALL[name], 0.25), 10, channels, size).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_output_shape_imagenet_resolution(name):
    width = 1.0 if name == "vgg16" else SMALL[name]
    model = build_backbone(BackboneSpec(name, width, 0.25), 1000, 3, 224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("name,library,architecture", [
    ("vgg16", "torchvision", "vgg16_bn"), ("resnet18", "torchvision", "resnet18"),
    ("vit_tiny", "timm", "vit_tiny_patch16_224"), ("vit_small", "timm", "vit_small_patch16_224")])
def test_full_size_backbones_at_224_px_load_the_published_weights_and_compute_as_their_architectures(
        name, library, architecture):
    """The paper's ImageNet originals are published weights (torchvision's VGG-16-BN and ResNet-18, timm's ViTs):
    each full-size backbone at 224 px takes a reference model's state dict (every name and shape) and then
    computes that model's outputs."""
    import timm
    import torchvision

    torch.manual_seed(0)
    reference = (getattr(torchvision.models, architecture)() if library == "torchvision"
                 else timm.create_model(architecture, pretrained=False)).eval()
    ours = build_backbone(BackboneSpec(name), 1000, 3, 224).eval()
    ours.load_state_dict(reference.state_dict())  # strict
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_width_multiplier_shrinks_and_is_named():
    full = BackboneSpec("resnet18")
    small = BackboneSpec("resnet18", width=0.25)
    assert full.label == "resnet18" and small.label == "resnet18-w0.25"
    assert BackboneSpec("vit_tiny", 0.5, 0.25).label == "vit_tiny-w0.5-d0.25"
    sizes = [sum(p.numel() for p in build_backbone(spec, 10, 3, 32).parameters()) for spec in (small, full)]
    assert sizes[0] < sizes[1] / 8


def test_families():
    assert {n: BACKBONES.get(n).family for n in BACKBONES} == {
        "vgg16": "cnn", "resnet18": "cnn", "vit_tiny": "vit", "vit_small": "vit"}


def test_pretrained_weights_load_from_a_local_file(tmp_path):
    from safetensors.torch import save_model

    source = build_backbone(BackboneSpec("resnet18", 0.125), 10, 3, 32)
    save_model(source, str(tmp_path / "w.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pth")
    x = torch.randn(2, 3, 32, 32)
    for file in ("w.safetensors", "w.pth"):
        loaded = build_backbone(BackboneSpec("resnet18", 0.125, pretrained=str(tmp_path / file)), 10, 3, 32)
        assert torch.equal(loaded.eval()(x), source.eval()(x))


def test_weights_of_another_architecture_or_pickled_code_are_refused(tmp_path):
    other = build_backbone(BackboneSpec("vgg16", 0.125), 10, 3, 32)
    torch.save(other.state_dict(), tmp_path / "vgg.pth")
    target = build_backbone(BackboneSpec("resnet18", 0.125), 10, 3, 32)
    with pytest.raises(UserError, match="do not fit"):
        load_weights(target, tmp_path / "vgg.pth")

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="Cannot read weights") as refused:
        load_weights(target, tmp_path / "evil.pth")
    # torch's advice (load with weights_only=False, i.e. run the pickled code) is not passed on; ours is
    assert "weights_only" not in str(refused.value) and str(refused.value).endswith("holding a plain state dict.")


def test_unusable_weights_files_are_one_sentence_saying_what_is_wrong(tmp_path):
    """An empty file (the error handler itself crashed: IndexError), a folder, weights of another width (the
    message ended at torch's colon) and a non-dict each get one sentence naming the problem."""
    from safetensors.torch import save_model

    target = build_backbone(BackboneSpec("vgg16", 0.125), 10, 3, 32)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty.pt: the file is empty; give a .safetensors or .pt state dict\.$"):
        load_weights(target, tmp_path / "empty.pt")
    with pytest.raises(UserError, match=r"Pretrained weights file .* is a folder; give the path"):
        load_weights(target, tmp_path)
    save_model(build_backbone(BackboneSpec("vgg16", 0.0625), 10, 3, 32), str(tmp_path / "narrow.safetensors"))
    with pytest.raises(UserError, match=r"do not fit this architecture: 0.0.weight has shape \[4, 3, 3, 3\] "
                                        r"where the model expects \[8, 3, 3, 3\] \(\d+ more shapes differ\); give"):
        load_weights(target, tmp_path / "narrow.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="are a list, not a state dict"):
        load_weights(target, tmp_path / "list.pt")


def test_subsampled_pointwise_conv_equals_a_strided_1x1_conv_in_values_and_gradients():
    from unlearnbench.models import SubsampledPointwiseConv

    torch.manual_seed(0)
    plain = torch.nn.Conv2d(4, 8, 1, stride=2, bias=False).double()  # float64: the native kernel, not oneDNN
    swapped = SubsampledPointwiseConv(4, 8, 1, stride=2, bias=False).double()
    swapped.load_state_dict(plain.state_dict())
    # odd size: the last row and column are kept, as a strided conv keeps them
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64).relu()
    xs = x.clone().requires_grad_(True)
    ref = plain(x.requires_grad_(True))
    ref.square().sum().backward()
    out = swapped(xs)
    out.square().sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(xs.grad, x.grad)
    torch.testing.assert_close(swapped.weight.grad, plain.weight.grad)
    resnet = build_backbone(BackboneSpec("resnet18", 0.0625), 10, 1, 28)
    assert sum(isinstance(m, SubsampledPointwiseConv) for m in resnet.modules()) == 3  # the three downsamples


def test_narrow_resnet_trains_on_real_mnist_without_crashing(tmp_path):
    """Regression: oneDNN's strided 1×1 backward corrupted the heap for resnet18-w0.0625 on real MNIST batches."""
    import subprocess
    import sys

    script = (
        "import torch, torch.nn.functional as F\n"
        "from unlearnbench.data import load_dataset\n"
        "from unlearnbench.models import BackboneSpec, build_backbone\n"
        "torch.set_num_threads(1); torch.manual_seed(0)\n"
        "data = load_dataset('mnist5k', device=torch.device('cpu'))\n"
        "model = build_backbone(BackboneSpec('resnet18', 0.0625), 10, 1, 28)\n"
        "batches = data.batches(data.train, 64, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0))\n"
        "for _, (x, y) in zip(range(6), batches):\n"
        "    F.cross_entropy(model(x), y).backward()\n"
        "print('trained')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]


def test_a_vit_patch_larger_than_the_image_is_one_sentence():
    with pytest.raises(UserError, match=r"'patch' of backbone 'vit_tiny' must be at most the image size, 28 px, "
                                        r"got 29"):
        build_backbone(BackboneSpec("vit_tiny", 0.0625, patch=29), 10, 1, 28)
    whole_image = build_backbone(BackboneSpec("vit_tiny", 0.0625, patch=28), 10, 1, 28)
    assert whole_image(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
