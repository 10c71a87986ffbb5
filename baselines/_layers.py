"""Where a backbone's parts are, for the baselines that change one part of it: the classifier head (Boundary
Expanding widens and prunes it, Fisher forgetting treats it apart)."""
from __future__ import annotations

from torch import nn

from unlearnbench.errors import UserError


def classifier_head(model: nn.Module, num_classes: int) -> str:
    """The name of the model's output layer: its last `nn.Linear` with `num_classes` outputs (ResNet `fc`, ViT
    `head`, VGG's last classifier layer)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not names:
        raise UserError(f"{type(model).__name__} has no linear output layer with {num_classes} outputs to treat as "
                        f"its classifier head.")
    return names[-1]
