import pytest
import torch

from unlearnbench import UserError
from unlearnbench.models import BACKBONES, BackboneSpec, build_backbone, count_parameters, load_weights

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


def test_width_multiplier_shrinks_and_is_named():
    full = BackboneSpec("resnet18")
    small = BackboneSpec("resnet18", width=0.25)
    assert full.label == "resnet18" and small.label == "resnet18-w0.25"
    assert BackboneSpec("vit_tiny", 0.5, 0.25).label == "vit_tiny-w0.5-d0.25"
    assert count_parameters(build_backbone(small, 10, 3, 32)) < count_parameters(build_backbone(full, 10, 3, 32)) / 8


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
    with pytest.raises(UserError, match="Cannot read weights"):
        load_weights(target, tmp_path / "evil.pth")
