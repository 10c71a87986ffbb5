"""Backbones (VGG-16, ResNet-18, ViT-T, ViT-S) from torchvision/timm, adapted to 28/32 px inputs, with CPU-size variants."""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models.vgg import VGG, make_layers

from .errors import UserError, first_line
from .registry import Registry
from .seeds import file_digest

SMALL_INPUT = 64  # inputs at or below this many pixels get the CIFAR-style adaptations


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone family plus size options: `width` scales channels / embedding, `depth` scales ViT blocks,
    `patch` sets a ViT's patch size (default 4 for 28/32 px inputs, 16 for 224 px). `mean` and `std`: the input
    normalisation its pretrained weights were trained with (timm's `pretrained_cfg`; e.g. 0.5 a channel for the
    augreg ViTs), used instead of the dataset's wherever it loads pretrained weights."""

    name: str
    width: float = 1.0
    depth: float = 1.0
    patch: int | None = None
    pretrained: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def as_dict(self) -> dict:
        """The spec as plain data (a run's config.yaml), without `mean` and `std` where unset: grids written before
        they existed read back equal."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in ("mean", "std")}

    @property
    def label(self) -> str:
        """The name shown in tables: the family, plus '-w…'/'-d…' for reduced-size variants."""
        label = self.name
        if self.width != 1.0:
            label += f"-w{self.width:g}"
        if self.depth != 1.0:
            label += f"-d{self.depth:g}"
        if self.patch is not None:
            label += f"-p{self.patch}"
        return label

    @property
    def family(self) -> str:
        """'vit' for transformers, 'cnn' for convolutional backbones."""
        return BACKBONES.get(self.name).family


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    family: str
    build: Callable[[BackboneSpec, int, int, int], nn.Module]


BACKBONES: Registry[BackboneInfo] = Registry("backbone")


def register(name: str, family: str):
    def decorate(build):
        BACKBONES.register(name)(BackboneInfo(name, family, build))
        return build

    return decorate


def _scale(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@register("vgg16", "cnn")
def build_vgg16(spec: BackboneSpec, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """torchvision VGG-16 with BatchNorm; small inputs pool with ceil_mode and end in one linear layer."""
    cfg = [v if v == "M" else _scale(v, spec.width) for v in VGG16_CFG]
    features = make_layers(cfg, batch_norm=True)
    features[0] = nn.Conv2d(in_chans, cfg[0], kernel_size=3, padding=1)
    if image_size > SMALL_INPUT:
        if spec.width != 1.0:
            raise UserError("vgg16 at ImageNet resolution supports width 1 only (its classifier is fixed at 4096).")
        return VGG(features, num_classes=num_classes)
    for i, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            features[i] = nn.MaxPool2d(2, 2, ceil_mode=True)
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cfg[-2], num_classes))


class SubsampledPointwiseConv(nn.Conv2d):
    """A 1×1 convolution with stride s computed as a stride-1 convolution of every s-th pixel: the same outputs,
    parameters and state dict as `nn.Conv2d`. oneDNN's strided 1×1 backward in torch 2.14 corrupts the heap on
    the CPU for narrow layers (resnet18-w0.0625's 4 → 8 downsample crashed with 'double free or corruption')."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        sy, sx = self.stride
        return nn.functional.conv2d(input[..., ::sy, ::sx], weight, bias, 1, 0, self.dilation, self.groups)


def _subsample_pointwise_convs(model: nn.Module) -> None:
    """Replace every strided 1×1, unpadded Conv2d of `model` by an equivalent SubsampledPointwiseConv."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if (type(child) is nn.Conv2d and child.kernel_size == (1, 1) and child.stride != (1, 1)
                    and child.padding == (0, 0) and child.padding_mode == "zeros"):
                replacement = SubsampledPointwiseConv(child.in_channels, child.out_channels, 1, child.stride,
                                                      bias=child.bias is not None, groups=child.groups,
                                                      dilation=child.dilation)
                replacement.load_state_dict(child.state_dict())
                setattr(module, name, replacement)


@register("resnet18", "cnn")
def build_resnet18(spec: BackboneSpec, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """timm ResNet-18; small inputs get a 3×3 stride-1 stem and no max-pool."""
    channels = tuple(_scale(c, spec.width) for c in (64, 128, 256, 512))
    model = ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans, channels=channels)
    if image_size <= SMALL_INPUT:
        model.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if channels[0] != 64:  # timm fixes the plain stem at 64 channels; scale it with the rest
        if image_size > SMALL_INPUT:
            model.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=7, stride=2, padding=3, bias=False)
        model.bn1 = nn.BatchNorm2d(channels[0])
        model.layer1[0] = BasicBlock(channels[0], channels[0])
    _subsample_pointwise_convs(model)
    return model


def _vit(spec: BackboneSpec, num_classes: int, in_chans: int, image_size: int, dim: int, heads: int) -> nn.Module:
    heads = max(1, int(round(heads * spec.width)))
    embed_dim = max(1, int(round(dim * spec.width / heads))) * heads
    depth = max(1, int(round(12 * spec.depth)))
    patch = spec.patch or (16 if image_size > SMALL_INPUT else 4)
    if patch > image_size:
        raise UserError(f"'patch' of backbone '{spec.name}' must be at most the image size, {image_size} px, "
                        f"got {patch}.")
    # a class token as in the paper: it reads the patches only through attention, whose qkv WF-Net filters
    # (mean-pooled tokens would reach the head through the unfiltered residual path and stay classifiable)
    return VisionTransformer(img_size=image_size, patch_size=patch,
                             in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                             num_heads=heads)


@register("vit_tiny", "vit")
def build_vit_tiny(spec: BackboneSpec, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """timm ViT-Tiny (dim 192, 12 blocks, 3 heads); for 28/32 px patch 4, for 224 px patch 16."""
    return _vit(spec, num_classes, in_chans, image_size, 192, 3)


@register("vit_small", "vit")
def build_vit_small(spec: BackboneSpec, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """timm ViT-Small (dim 384, 12 blocks, 6 heads); for 28/32 px patch 4, for 224 px patch 16."""
    return _vit(spec, num_classes, in_chans, image_size, 384, 6)


def build_backbone(spec: BackboneSpec, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """Build the backbone `spec` for inputs [B, in_chans, image_size, image_size]; load local pretrained weights if named."""
    model = BACKBONES.get(spec.name).build(spec, num_classes, in_chans, image_size)
    if spec.pretrained:
        load_weights(model, spec.pretrained)
    return model


def classifier_head(model: nn.Module, num_classes: int) -> str:
    """The name of the model's output layer: its last `nn.Linear` with `num_classes` outputs (ResNet `fc`, ViT
    `head`, VGG's last classifier layer)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not names:
        raise UserError(f"{type(model).__name__} has no linear output layer with {num_classes} outputs to treat as "
                        f"its classifier head.")
    return names[-1]


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Every submodule of `model` in eval mode inside the block, and each one's own flag restored after it.
    `model.train(was_training)` would not do: a view built in train mode over a shared model in eval mode (WF-Net's
    per-class views) would switch the shared model, BatchNorm included, to train mode for good."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def penultimate_features(model: nn.Module, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The input of the model's classifier head (`classifier_head`) for the batch x, flattened to [N, D]: its
    penultimate features, whatever path the model takes to them (WF-Net's filtered layers included), computed in
    eval mode (BatchNorm statistics are read, never updated)."""
    head = model.get_submodule(classifier_head(model, num_classes))
    seen = []
    handle = head.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        with evaluating(model):
            model(x)
    finally:
        handle.remove()
    if not seen:
        raise UserError(f"{type(model).__name__}'s classifier head was not called on the way to its output.")
    return seen[-1].flatten(1)


def backbone_key(spec: BackboneSpec) -> dict:
    """A backbone as a cache key's part: its spec and, where it names local pretrained weights, their SHA-256,
    so that other weights under the same path are never a cache hit. Its input normalisation is in it only where it
    applies (with pretrained weights), so backbones that leave it unset keep their keys."""
    key = spec.as_dict() if spec.pretrained else dataclasses.replace(spec, mean=None, std=None).as_dict()
    path = Path(spec.pretrained).expanduser() if spec.pretrained else None
    if path is not None and path.is_file():
        key["pretrained_sha256"] = file_digest(path)
        key["pretrained"] = path.name  # the contents key it, not where it lies (another --data-root, a copy)
    return key


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from a local .safetensors or .pt/.pth file (never executing pickled code) into `model`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"Pretrained weights file {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                        f"give the path of a .safetensors or .pt state dict.")
    if path.stat().st_size == 0:
        raise UserError(f"Cannot read weights from {path}: the file is empty; give a .safetensors or .pt state dict.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (f"{exc.__class__.__name__}: {first_line(exc)}" if path.suffix == ".safetensors" else
                  "it is not a state dict of tensors that loads without running pickled code")
        raise UserError(f"Cannot read weights from {path}: {reason}; give a .safetensors file or a .pt/.pth "
                        f"holding a plain state dict.") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise UserError(f"Weights in {path} are a {type(state).__name__}, not a state dict (names → tensors).")
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"Weights in {path} do not fit this architecture: {_misfit(model.state_dict(), state)}; give "
                        f"weights of the same architecture and size.") from None


def _misfit(expected: dict, given: dict) -> str:
    """The first difference between a model's state dict and loaded weights, in words."""
    shapes = [k for k in expected if k in given and hasattr(given[k], "shape") and given[k].shape != expected[k].shape]
    if shapes:
        k = shapes[0]
        return (f"{k} has shape {list(given[k].shape)} where the model expects {list(expected[k].shape)}"
                f"{f' ({len(shapes) - 1} more shapes differ)' if len(shapes) > 1 else ''}")
    missing, extra = [k for k in expected if k not in given], [k for k in given if k not in expected]
    parts = ([f"{len(missing)} of the model's entries are missing (e.g. {missing[0]})"] if missing else []) + (
        [f"{len(extra)} entries are not the model's (e.g. {extra[0]})"] if extra else [])
    return ", ".join(parts) or "they do not load"
