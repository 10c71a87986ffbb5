"""Weight-Filtering (WF) layers of WF-Net (arXiv 2304.02049).

Every ``nn.Conv2d`` of a CNN, or every attention ``qkv`` projection
(``nn.Linear`` named ``*.qkv``) of a ViT, is wrapped in place by a
:class:`WeightFilter` holding two learnable matrices ``alpha_w`` and
``alpha_b`` of shape ``[num_classes, C_out]``.  For a sample whose forget class
is ``c`` the layer computes the original operator with its weights scaled by
``sigmoid(alpha_w[c])`` per output channel and its bias by
``sigmoid(alpha_b[c])``.  Because the mask is per output channel this is
computed as output scaling, without per-sample weight copies::

    out_i = sigmoid(alpha_w[c_i]) * op(x_i; W, bias=None) + sigmoid(alpha_b[c_i]) * b

The backbone calls its inner modules with fixed signatures (``self.qkv(x)``),
so the per-sample classes and optional gate overrides travel through a shared
:class:`FilterState` that :class:`FilteredModel` sets around each backbone call.

Mask selection inside one :class:`WeightFilter`, in order of precedence:

1. ``gates`` holds the layer's name → ``(gate_w, gate_b)`` are the masks for
   every sample (the forget class is ignored for that layer);
2. a forget class is set → ``sigmoid(alpha_w[c_i])``, ``sigmoid(alpha_b[c_i])``;
3. otherwise → pass-through: the wrapped module is called unchanged, so the
   output is bit-for-bit the original one.

For a wrapped module without bias ``alpha_b`` exists (so every layer has the
same α layout) but never affects the output and receives no gradient.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Literal, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Gates = Mapping[str, tuple[Tensor, Tensor]]
ForgetClass = Union[int, Tensor, None]

__all__ = ["FilterState", "WeightFilter", "FilteredModel", "FilterView"]


class FilterState:
    """Per-call selection shared by all filters of one model.

    ``classes`` is ``None`` (no class) or a 1-D LongTensor of length 1 (same
    class for the whole batch) or B (one class per sample). ``gates`` maps
    layer names to ``(gate_w, gate_b)`` overrides of shape ``[C_out]`` each.
    """

    def __init__(self) -> None:
        self.classes: Optional[Tensor] = None
        self.gates: Gates = {}

    @contextmanager
    def select(self, classes: Optional[Tensor], gates: Optional[Gates] = None) -> Iterator[None]:
        """Context manager setting ``classes``/``gates``; the previous values are
        restored on exit, also when the body raises. Yields ``None``."""
        previous = (self.classes, self.gates)
        self.classes, self.gates = classes, dict(gates or {})
        try:
            yield
        finally:
            self.classes, self.gates = previous


class WeightFilter(nn.Module):
    """Wraps an ``nn.Conv2d`` (masked per output channel) or an ``nn.Linear``
    (masked per output feature, used for ViT ``qkv``) with class-indexed masks.

    The wrapped module is kept as ``self.op`` with its parameters untouched.
    ``state`` is the shared :class:`FilterState` (a private one if omitted);
    ``name`` is the key looked up in ``state.gates``.
    """

    def __init__(
        self,
        op: Union[nn.Conv2d, nn.Linear],
        num_classes: int,
        alpha_init: float = 3.0,
        state: Optional[FilterState] = None,
        name: str = "",
    ) -> None:
        super().__init__()
        if not isinstance(op, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"WeightFilter wraps nn.Conv2d or nn.Linear, got {type(op).__name__}")
        self.op = op
        self.name = name
        self.state = state if state is not None else FilterState()
        c_out = op.out_channels if isinstance(op, nn.Conv2d) else op.out_features
        kw = dict(dtype=torch.float32, device=op.weight.device)
        self.alpha_w = nn.Parameter(torch.full((num_classes, c_out), float(alpha_init), **kw))
        self.alpha_b = nn.Parameter(torch.full((num_classes, c_out), float(alpha_init), **kw))

    @property
    def out_channels(self) -> int:
        """Number of masked output channels/features (``C_out``)."""
        return self.alpha_w.shape[1]

    def _masks(self) -> Optional[tuple[Tensor, Tensor]]:
        """Returns ``(mask_w, mask_b)`` of shape ``[k, C_out]`` (k = 1 or B), or
        ``None`` for pass-through."""
        gate = self.state.gates.get(self.name)
        if gate is not None:
            return gate[0].reshape(1, -1), gate[1].reshape(1, -1)
        classes = self.state.classes
        if classes is None:
            return None
        return torch.sigmoid(self.alpha_w[classes]), torch.sigmoid(self.alpha_b[classes])

    def forward(self, x: Tensor) -> Tensor:
        """Returns the filtered output, same shape/dtype as ``self.op(x)``."""
        masks = self._masks()
        if masks is None:
            return self.op(x)
        if isinstance(self.op, nn.Conv2d):
            out = self.op._conv_forward(x, self.op.weight, None)
        else:
            out = F.linear(x, self.op.weight)
        mask_w, mask_b = masks
        k = mask_w.shape[0]
        if k not in (1, out.shape[0]):
            raise ValueError(f"{k} forget classes for a batch of {out.shape[0]} in layer {self.name!r}")
        # [k, C, 1, 1] for conv outputs [B, C, H, W]; [k, 1, ..., C] for linear outputs [B, ..., C].
        if isinstance(self.op, nn.Conv2d):
            shape = (k, -1, 1, 1)
        else:
            shape = (k,) + (1,) * (out.dim() - 2) + (-1,)
        out = out * mask_w.to(device=out.device, dtype=out.dtype).reshape(shape)
        if self.op.bias is not None:
            bias = mask_b.to(out.device) * self.op.bias
            out = out + bias.to(out.dtype).reshape(shape)
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.alpha_w.shape[0]}, out_channels={self.out_channels}"


def _is_qkv(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] == "qkv"


class FilteredModel(nn.Module):
    """A backbone whose Conv2d layers (CNNs) or ``qkv`` projections (ViTs) are
    replaced in place by :class:`WeightFilter` layers.

    ``target``: ``"conv"`` wraps every ``nn.Conv2d``; ``"qkv"`` wraps every
    ``nn.Linear`` named ``*.qkv`` (nothing else, not the patch embedding);
    ``"auto"`` (default) means ``"qkv"`` if the backbone has such a module, else
    ``"conv"``. New α parameters are created on the wrapped weights' device.
    Layer names are the backbone's module names (``layer1.0.conv1``,
    ``blocks.3.attn.qkv``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        alpha_init: float = 3.0,
        target: Literal["auto", "conv", "qkv"] = "auto",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.state = FilterState()
        modules = list(backbone.named_modules())
        if target == "auto":
            target = "qkv" if any(_is_qkv(n, m) for n, m in modules) else "conv"
            if target == "conv" and any(isinstance(m, nn.MultiheadAttention) for _, m in modules):
                # (torchvision's ViT: its only Conv2d is the patch embedding, which the method never filters)
                raise ValueError("the backbone has attention layers but no `qkv` Linear projection (timm's "
                                 "Attention): WF-Net filters a ViT's qkv projections; pass target='conv' to "
                                 "filter its convolutions instead")
        if target == "qkv":
            chosen = [(n, m) for n, m in modules if _is_qkv(n, m)]
        elif target == "conv":
            chosen = [(n, m) for n, m in modules if isinstance(m, nn.Conv2d)]
        else:
            raise ValueError(f"unknown target {target!r}")
        if not chosen:
            raise ValueError(f"no layer to wrap for target {target!r}")
        for name, module in chosen:
            parent_name, _, child = name.rpartition(".")
            wf = WeightFilter(module, num_classes, alpha_init, self.state, name)
            setattr(backbone.get_submodule(parent_name), child, wf)

    def forward(self, x: Tensor, forget_class: ForgetClass = None, gates: Optional[Gates] = None) -> Tensor:
        """Returns the backbone's logits.

        ``forget_class``: ``None`` → the original model exactly (for layers not
        in ``gates``); an int in ``[0, num_classes)`` or a LongTensor ``[B]``
        (classes may differ per sample) → each sample as the model unlearned on
        its class. ``gates``: ``{layer_name: (gate_w [C_out], gate_b [C_out])}``
        replacing the masks of those layers for every sample.
        """
        if gates:
            unknown = set(gates) - {n for n, _ in self.named_filters()}
            if unknown:
                raise KeyError(f"gates for unknown layers: {sorted(unknown)}")
        with self.state.select(self._classes(forget_class, x), gates):
            return self.backbone(x)

    def _classes(self, forget_class: ForgetClass, x: Tensor) -> Optional[Tensor]:
        """Returns ``forget_class`` as a 1-D LongTensor on ``x``'s device, or ``None``."""
        if forget_class is None:
            return None
        if isinstance(forget_class, Tensor):
            if forget_class.dim() == 0:
                forget_class = forget_class.reshape(1)
            if forget_class.dim() != 1 or forget_class.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"forget_class must be [1] or [{x.shape[0]}], got {tuple(forget_class.shape)}")
            forget_class = forget_class.long()
            inside = ((forget_class >= 0) & (forget_class < self.num_classes)).all()  # -1 would pick the last row
            message = f"forget_class outside [0, {self.num_classes})"
            if forget_class.is_cuda:
                torch._assert_async(inside, message)  # checked on the GPU, without waiting for it
            elif not inside:
                raise ValueError(message)
            return forget_class.to(x.device)
        if not 0 <= int(forget_class) < self.num_classes:
            raise ValueError(f"forget_class {forget_class} outside [0, {self.num_classes})")
        return torch.tensor([int(forget_class)], device=x.device)

    def named_filters(self) -> Iterator[tuple[str, WeightFilter]]:
        """Yields ``(layer_name, WeightFilter)`` in module order."""
        for name, module in self.backbone.named_modules():
            if isinstance(module, WeightFilter):
                yield name, module

    def alpha_parameters(self) -> list[nn.Parameter]:
        """Returns all α parameters (``alpha_w``, ``alpha_b`` of every filter)."""
        return [p for _, f in self.named_filters() for p in (f.alpha_w, f.alpha_b)]

    def freeze_backbone(self) -> None:
        """Sets ``requires_grad`` False on every parameter except α (α: True)."""
        alphas = {id(p) for p in self.alpha_parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in alphas)

    @torch.no_grad()
    def relevance(self, c: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Returns ``{layer_name: (1 - sigmoid(alpha_w[c]), 1 - sigmoid(alpha_b[c]))}``,
        detached tensors of shape ``[C_out]``; the bias part is empty (shape ``[0]``)
        for a layer without bias, whose α_b gates nothing (insertion/deletion
        must not count such gates as elements)."""
        return {
            n: (1 - torch.sigmoid(f.alpha_w[c]),
                1 - torch.sigmoid(f.alpha_b[c]) if f.op.bias is not None else f.alpha_b.new_empty(0))
            for n, f in self.named_filters()
        }

    def for_class(self, c: int) -> "FilterView":
        """Returns a :class:`FilterView` over a deep copy of this model (this
        model is not modified) computing ``x → self(x, forget_class=c)`` with α
        frozen and every backbone parameter trainable (relearn time trains it)."""
        model = copy.deepcopy(self)
        alphas = {id(p) for p in model.alpha_parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) not in alphas)
        return FilterView(model, c)

    def alpha_state_dict(self) -> dict[str, Tensor]:
        """Returns ``{f"{layer}.alpha_w": …, f"{layer}.alpha_b": …}`` (detached
        copies), the only tensors WF-Net adds to the original weights."""
        sd: dict[str, Tensor] = {}
        for n, f in self.named_filters():
            sd[f"{n}.alpha_w"] = f.alpha_w.detach().clone()
            sd[f"{n}.alpha_b"] = f.alpha_b.detach().clone()
        return sd

    @torch.no_grad()
    def load_alpha_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        """Copies α values from ``sd`` (as made by :meth:`alpha_state_dict`);
        raises ``KeyError`` on missing/unexpected keys, ``ValueError`` on shape
        mismatch."""
        params = {f"{n}.{k}": getattr(f, k) for n, f in self.named_filters() for k in ("alpha_w", "alpha_b")}
        if set(sd) != set(params):
            raise KeyError(
                f"missing {sorted(set(params) - set(sd))}, unexpected {sorted(set(sd) - set(params))}"
            )
        for key, p in params.items():
            if sd[key].shape != p.shape:
                raise ValueError(f"{key}: shape {tuple(sd[key].shape)} != {tuple(p.shape)}")
            p.copy_(sd[key])


class FilterView(nn.Module):
    """``x → model(x, forget_class=c, gates=gates)``: a plain module over a :class:`FilteredModel` (shared, not
    copied) with the class and/or gate overrides fixed."""

    def __init__(self, model: FilteredModel, forget_class: Optional[int] = None,
                 gates: Optional[Gates] = None) -> None:
        super().__init__()
        self.model = model
        self.forget_class = None if forget_class is None else int(forget_class)
        self.gates = dict(gates) if gates else None
        self.training = model.training  # a view starts in its model's mode (nn.Module would say train)

    def forward(self, x: Tensor) -> Tensor:
        """Returns the logits [B, N_c] under the fixed class and gates."""
        return self.model(x, forget_class=self.forget_class, gates=self.gates)
