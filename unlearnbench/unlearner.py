"""The `Unlearner` contract every method implements, and the models methods hand back."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from .data import ImageData
from .models import BackboneSpec, penultimate_features
from .training import Recipe


class UnlearnedModel(nn.Module):
    """A model that answers `for_class(c)`: a plain module giving the logits of the model unlearned on class c."""

    def for_class(self, forget_class: int) -> nn.Module:
        """A plain module x → logits behaving as the model unlearned on `forget_class`."""
        raise NotImplementedError(f"{type(self).__name__} does not define for_class(forget_class), which every "
                                  f"UnlearnedModel must")

    def classes(self) -> list[int]:
        """The forget classes this model can serve."""
        raise NotImplementedError(f"{type(self).__name__} does not define classes(), which every UnlearnedModel "
                                  f"must")

    def trainable_copy(self, forget_class: int) -> nn.Module:
        """A deep copy of the model for `forget_class` whose weights train (relearn time fine-tunes it).

        Override when some parameters must stay fixed (WF-Net keeps its α row and trains the backbone)."""
        model = copy.deepcopy(self.for_class(forget_class))
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def features(self, x: torch.Tensor, forget_class: int, num_classes: int) -> torch.Tensor:
        """Penultimate features [N, D] of the model for `forget_class` on the batch x (the `probe` metric reads
        them): by default the input of the classifier head of `for_class(forget_class)`, so a method that changes
        the path (WF-Net's filters) is seen through. Override where the head is not the last linear layer with
        `num_classes` outputs."""
        return penultimate_features(self.for_class(forget_class), x, num_classes)

    def relevance(self, forget_class: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """Per-layer (weight-gate, bias-gate) relevance for `forget_class`, each [C_out] and equal to
        1 − gate, for methods whose unlearning closes gates (WF-Net); None for all others."""
        return None

    def artifacts(self) -> dict[str, torch.Tensor]:
        """Tensors worth keeping beside the records (WF-Net: its α matrices); saved per cell by the harness."""
        return {}

    def diagnostics(self) -> dict[str, float]:
        """Numbers about the unlearning run itself (steps taken, divergence flags), recorded as metrics."""
        return {}

    def gated(self, gates: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
        """A module x → logits with every gate set to the given values (insertion/deletion); only for
        models whose `relevance` is not None."""
        raise NotImplementedError(f"{type(self).__name__} has no gates.")


class SingleClassModel(UnlearnedModel):
    """The result of a per-class method: one network, unlearned on one class."""

    def __init__(self, net: nn.Module, forget_class: int) -> None:
        super().__init__()
        self.net = net
        self.forget_class = int(forget_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def for_class(self, forget_class: int) -> nn.Module:
        if int(forget_class) != self.forget_class:
            raise ValueError(f"This model was unlearned on class {self.forget_class}, not {forget_class}.")
        return self.net

    def classes(self) -> list[int]:
        return [self.forget_class]


class SharedModel(UnlearnedModel):
    """One network answering for every class unchanged (the original model's row)."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def for_class(self, forget_class: int) -> nn.Module:
        return self.net

    def classes(self) -> list[int]:
        return list(range(self.num_classes))


@dataclass
class UnlearnTask:
    """Everything a method receives. Never modify `original` in place: copy it (`task.copy_original()`)."""

    original: nn.Module
    data: ImageData
    forget_class: int | None
    forget_classes: list[int]  # the round's classes: the grid's for a one-round method, [forget_class] per class
    params: dict
    recipe: Recipe
    backbone: BackboneSpec
    seed: int
    retrained: Callable[[int], nn.Module]
    new_model: Callable[[], nn.Module]
    progress: bool = False
    generator: torch.Generator = field(default_factory=torch.Generator)

    @property
    def device(self) -> torch.device:
        return self.data.device

    def copy_original(self) -> nn.Module:
        """A trainable deep copy of the original model."""
        model = copy.deepcopy(self.original)
        for p in model.parameters():
            p.requires_grad_(True)
        return model


class Unlearner:
    """Base class of unlearning methods; subclass it in a file under methods/, baselines/ or --plugins DIR.

    Declare `name`, `label` (its name in tables and figures; default `name`; unique among the methods),
    `parameters` (name → default; a
    grid may sweep them), `per_class` (True: the harness
    calls `unlearn` once per forget class; False: once for all classes, and the returned model serves every
    class), `search_space` (name → `search_space.Float/Int/Choice`: the ranges the tuning protocol searches,
    each holding its default), `family_parameters` / `family_search_space` (backbone family → what that family
    changes, e.g. {"vit": {"lr": 3e-4}}), `paper` and `venue` (the method's paper and where and when it
    appeared; every report's methods table prints them; `label`, `paper` and `venue` are a class's own, not
    inherited: a subclass is another method), `uses_retain` (False only if the result depends on no
    training or validation image outside the forget class(es): the conformance suite checks it), and override
    `skip` to refuse a backbone or dataset with a reason; `max_classes` skips datasets with more classes than it
    (counted in their files: an ImageNet-100 tree has 100) where its cost grows with them. `parameter_ranges` (name → rule, e.g.
    `config.at_least(1)`, `above(0)`, `one_of(...)`) declares the values a parameter may take; override
    `check_parameters` for any other rule (the harness checks every value's type against its default's). Timing,
    seeding, tuning, metrics and storage are the harness's job.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    parameters: ClassVar[dict] = {}
    family_parameters: ClassVar[dict[str, dict]] = {}
    search_space: ClassVar[dict] = {}
    parameter_ranges: ClassVar[dict] = {}
    family_search_space: ClassVar[dict[str, dict]] = {}
    per_class: ClassVar[bool] = True
    paper: ClassVar[str] = ""
    venue: ClassVar[str] = ""
    uses_retain: ClassVar[bool] = True
    max_classes: ClassVar[int | None] = None

    @classmethod
    def card(cls) -> dict:
        """What the methods table of a report says about this method: its own label (else its name), paper and
        venue, never a base method's (a subclass of Fine-tune was labelled and credited as Fine-tune)."""
        own = {attr: cls.__dict__.get(attr) or "" for attr in ("label", "paper", "venue")}
        return {**own, "label": own["label"] or cls.name, "uses_retain": cls.uses_retain, "per_class": cls.per_class}

    def skip(self, dataset: str, backbone: BackboneSpec) -> tuple[bool, str | None]:
        """Return (True, reason) when this method cannot run on `dataset` × `backbone`."""
        return False, None

    def check_parameters(self, params: dict) -> None:
        """Raise UserError, one sentence naming the parameter, its value and what is allowed, for a parameter set
        (defaults, tuned values and a grid's overrides) this method cannot run with; the harness calls it for every
        parameter set of a grid when it is planned, before any work. The base applies `parameter_ranges`."""
        from .config import check_ranges

        check_ranges(params, self.parameter_ranges, lambda key: f"Parameter '{key}' of method '{self.name}'")

    def default_parameters(self, backbone: BackboneSpec) -> dict:
        """The parameter defaults for `backbone`: `parameters`, updated by `family_parameters[backbone.family]`."""
        return {**self.parameters, **self.family_parameters.get(backbone.family, {})}

    def space(self, backbone: BackboneSpec) -> dict:
        """The tuning ranges for `backbone`: `search_space`, updated by `family_search_space[backbone.family]`."""
        return {**self.search_space, **self.family_search_space.get(backbone.family, {})}

    def unlearn(self, task: UnlearnTask) -> UnlearnedModel:
        """Return the unlearned model for `task.forget_class` (per-class) or for all `task.forget_classes`."""
        raise NotImplementedError
