"""Shared stages of a (dataset, backbone, seed) group: the original model, retrained models, a random model."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from .data import ImageData
from .errors import UserError
from .models import BackboneSpec, backbone_key, build_backbone
from .cost import CostMeter
from .store import BoundedMemo, Cache, code_hash, derive_seed, device_name, key_versions, stable_hash
from .training import Recipe, compute_setting, finite_logits, prepare, train

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
STAGE_LOGIT_BYTES = 1 * 2**30  # the stage models' logits a worker keeps for its group's cells


def stage_key_base(dataset_key: dict, backbone: BackboneSpec, recipe: Recipe, seed: int,
                   device: torch.device) -> dict:
    """What every stage model of a (dataset, backbone, seed) group is keyed by (`backbone` with its local weights
    file already resolved: `with_local_weights`)."""
    return {"dataset": dataset_key, "backbone": backbone_key(backbone), "recipe": dataclasses.asdict(recipe),
            "seed": seed, **compute_setting(device),
            "versions": key_versions(),
            "code": code_hash("data", "disk_images", "datasets", "models", "training", "stages", "cost", "seeds")}


def stage_model_key(base: dict, kind: str, forget_class: int | None, replicate: int = 0) -> str:
    """The cache key of stage model `kind` ('original', 'retrained') of `forget_class`, seed replicate `replicate`."""
    return stable_hash({**base, "kind": kind, "forget_class": forget_class,
                        **({"replicate": replicate} if replicate else {})})


def model_state_summary(model: torch.nn.Module) -> tuple[list[float], list[bool]]:
    """What tells whether a model was changed in place, read in one pass without copying it: each parameter's and
    buffer's sum and (floating point) L2 norm in float64, which an optimiser step, BatchNorm statistics updated in
    train mode and any write (through `.data` too) move, and each module's train/eval flag."""
    parts = []
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and t.numel():
            parts.append(t.sum(dtype=torch.float64).reshape(1))
            if t.is_floating_point():
                parts.append(torch.linalg.vector_norm(t, dtype=torch.float64).reshape(1))
    values = torch.cat(parts).tolist() if parts else []  # one transfer from the device, not one per tensor
    return values, [m.training for m in model.modules()]


def same_state(before: tuple[list[float], list[bool]], after: tuple[list[float], list[bool]]) -> bool:
    """Summaries equal, NaN equal to NaN."""
    return before[1] == after[1] and len(before[0]) == len(after[0]) and all(
        a == b or (a != a and b != b) for a, b in zip(before[0], after[0]))


class Stages:
    """Builds, trains and caches the models every cell of one (dataset, backbone, seed) group shares."""

    def __init__(self, data: ImageData, dataset_key: dict, backbone: BackboneSpec, recipe: Recipe, seed: int,
                 cache: Cache, data_root: str | Path | None = None, progress: bool = False, log=print) -> None:
        self.backbone = backbone = with_local_weights(backbone, recipe.epochs, data_root)
        self.data = data = normalised_for(data, backbone)
        height = int(data.train.images.shape[-2])
        if backbone.family == "vit" and height != data.image_size:  # (timm's own error names neither)
            raise UserError(f"Backbone {backbone.label} needs square images, but dataset {data.name}'s are "
                            f"{data.image_size}x{height} px; set 'image_size' on the dataset to resize them.")
        self.recipe = recipe
        self.seed = seed
        self.cache = cache
        self.progress = progress
        self.log = log
        self._key_base = stage_key_base(dataset_key, backbone, recipe, seed, data.device)
        self._memory: dict[str, nn.Module] = {}
        self._logits = BoundedMemo(STAGE_LOGIT_BYTES)
        self._costs: dict[str, dict] = {}
        self._summaries: dict[int, tuple] = {}  # id of a stage model in memory → its state when it came in

    def new_model(self, seed: int | None = None) -> nn.Module:
        """A freshly initialised backbone for this group's data (seeded with `seed`, default the group seed),
        never loaded with pretrained weights: the random model of ZRF and the fresh layers methods draw are random."""
        torch.manual_seed(self.seed if seed is None else seed)
        spec = dataclasses.replace(self.backbone, pretrained=None)
        model = build_backbone(spec, self.data.num_classes, self.data.channels, self.data.image_size)
        return prepare(model, self.data.device)

    def model_key(self, kind: str, forget_class: int | None, replicate: int = 0) -> str:
        return stage_model_key(self._key_base, kind, forget_class, replicate)

    def original(self) -> nn.Module:
        """The original model trained on the full training split (or pretrained weights when epochs is 0)."""
        return self.stage("original", None)[0]

    def retrained(self, forget_class: int, replicate: int = 0) -> nn.Module:
        """The original recipe, from scratch, on D_r(c) of the training split; replicate k > 0 is the same recipe
        from another seed (initialisation and batch order), cached like the first (the `epsilon` metric)."""
        return self.stage("retrained", int(forget_class), replicate)[0]

    def random_model(self, seed: int) -> nn.Module:
        """ZRF's randomly initialised model, never trained, initialised from a seed derived from `seed` (the
        metric's setting) rather than from `seed` itself: `new_model(s)` for a group seed s is the initialisation of
        that group's original and what EU-k re-initialises its last layers to, and ZRF's reference must be
        independent of the models it scores."""
        name = f"random-{seed}"
        if name not in self._memory:
            self._memory[name] = self.new_model(derive_seed(["zrf random model", seed])).eval()
        return self._memory[name]

    def stage_logits(self, model: nn.Module, split: str) -> torch.Tensor | None:
        """Logits of one of this group's frozen stage models (original, retrained, random) on a whole split,
        computed once per worker and shared by every cell of the group, within STAGE_LOGIT_BYTES (least recently
        used out; a split larger than that is computed each time); None for any other model."""
        if not any(model is m for m in self._memory.values()):
            return None
        return self._logits.get((id(model), split), lambda: finite_logits(model, self.data, split),
                                lambda logits: logits.nbytes)

    def summary(self, model: nn.Module) -> tuple[list[float], list[bool]]:
        """`model_state_summary` of stage model `model` the first time a cell is given it, read once: each cell's
        check that its method left the model as given compares with it after the method ran."""
        if id(model) not in self._summaries:
            self._summaries[id(model)] = model_state_summary(model)
        return self._summaries[id(model)]

    def discard(self, model: nn.Module) -> None:
        """Forget `model`, a stage model a method changed in place, its summary and every stage logit kept: the
        next call loads it again from the cache (or trains it)."""
        for name in [n for n, m in self._memory.items() if m is model]:
            del self._memory[name]
        self._summaries.pop(id(model), None)
        self._logits = BoundedMemo(STAGE_LOGIT_BYTES)

    def stage(self, kind: str, forget_class: int | None, replicate: int = 0) -> tuple[nn.Module, dict | None]:
        """A stage model ('original', or 'retrained' for `forget_class`, of seed replicate `replicate`) and, when
        this call did not train it (a cache or memory hit), what its training cost, so a method that takes it
        ready-made can be charged; with `waited_seconds` where this call waited while another process trained it
        (time the caller's meter must not count besides the charge)."""
        name = (kind if forget_class is None else f"{kind}-{forget_class}") + (f"-r{replicate}" if replicate else "")
        if name in self._memory:
            return self._memory[name], self._costs[name]
        key = self.model_key(kind, forget_class, replicate)
        seed = self.seed if forget_class is None else self.seed * 1000 + forget_class + 1
        if replicate:
            seed = derive_seed([seed, "replicate", replicate])
        model = self.new_model(seed if replicate else None)
        meta, waited = self.cache.load_model(kind, key, model), 0.0
        if meta is None:  # train under the model's lock: a worker that waited for another's finds it cached
            start = time.perf_counter()
            with self.cache.model_lock(kind, key):
                meta = self.cache.load_model(kind, key, model)
                if meta is None:
                    if self.cache.has_model(kind, key):  # (checked under the lock: no save is half done)
                        self.log(f"stage {name} of {self.data.name}/{self.backbone.label} seed {self.seed}: its "
                                 f"cached file is damaged or does not load, so it is trained again (cells cached "
                                 f"with the earlier model keep their values)")
                    self._train_stage(name, kind, key, model, forget_class, seed)
                else:
                    waited = time.perf_counter() - start
        charge = None
        model.eval()  # however it came: loaded, trained, or (a 0-epoch recipe) its pretrained weights just read
        if meta is not None:
            self._costs[name] = charge = meta.get("cost", {})
            if waited:  # this call's own: the caller's meter ran while another process trained the model
                charge = {**charge, "waited_seconds": waited}
        for p in model.parameters():
            p.requires_grad_(False)
        self._memory[name] = model
        return model, charge

    def _train_stage(self, name: str, kind: str, key: str, model: nn.Module, forget_class: int | None,
                     seed: int) -> None:
        """Train stage model `name` in place (or load its pretrained weights) and cache it with its cost."""
        if self.recipe.epochs == 0 and forget_class is not None:
            raise UserError(f"The {self.data.name} recipe trains 0 epochs (its originals are pretrained "
                            f"weights), so there is no recipe to retrain {self.backbone.label} without class "
                            f"{forget_class}: drop what needs retrained models or give the grid a `recipe:` "
                            f"with epochs.")
        with CostMeter(self.data.device) as cost:
            if self.recipe.epochs == 0 or self.backbone.pretrained:
                self._load_pretrained(model)  # the original, or the starting point of training
            if self.recipe.epochs > 0:
                split = self.data.train if forget_class is None else self.data.train.retain(forget_class)
                desc = f"{kind} {self.backbone.label}" + ("" if forget_class is None else f" −{forget_class}")
                train(model, self.data, self.recipe, seed=seed, split=split, progress=self.progress, desc=desc)
        self._costs[name] = {"wall_seconds": cost.wall_seconds, "device_seconds": cost.device_seconds,
                             "peak_memory_bytes": cost.peak_memory_bytes, "device": device_name(self.data.device)}
        self.cache.save_model(kind, key, model, {"kind": kind, "forget_class": forget_class,
                                                 "cost": self._costs[name], **self._key_base})
        self.log(f"stage {name} of {self.data.name}/{self.backbone.label} seed {self.seed}: trained and cached")

    def _load_pretrained(self, model: nn.Module) -> None:
        from .models import load_weights

        if not self.backbone.pretrained:  # (with_local_weights found no file under <data-root>/weights/)
            reason = no_weights_reason(self.data.name, self.backbone)
            raise UserError(f"{reason[0].upper()}{reason[1:]}.")
        load_weights(model, self.backbone.pretrained)


def no_weights_reason(dataset: str, backbone: BackboneSpec) -> str:
    """Why an epochs-0 recipe's original cannot be made when `backbone` names no weights and none were found."""
    return (f"the {dataset} recipe trains 0 epochs, so {backbone.label} needs pretrained weights: set 'pretrained' "
            f"on the backbone or put {backbone.name}.safetensors under <data-root>/weights/")


def normalised_for(data: ImageData, backbone: BackboneSpec) -> ImageData:
    """`data` normalised as `backbone`'s pretrained weights expect, where it loads them and names a `mean` and `std`
    (every model of its group then reads inputs so normalised); else as the dataset normalises them."""
    if not backbone.pretrained or backbone.mean is None:
        return data
    check_normalisation(backbone, data.name, data.channels)
    return dataclasses.replace(data, mean=tuple(backbone.mean), std=tuple(backbone.std))


def check_normalisation(backbone: BackboneSpec, dataset: str, channels: int) -> None:
    """Refuse `backbone`'s input normalisation where it gives another number of values than `dataset`'s images have
    channels (planning checks it where the dataset's channels are known before loading, loading everywhere)."""
    if backbone.mean is not None and len(backbone.mean) != channels:
        raise UserError(f"'mean' and 'std' of backbone {backbone.label} give {len(backbone.mean)} values, but "
                        f"dataset {dataset} has {channels} channels; give one value a channel.")


def with_local_weights(backbone: BackboneSpec, epochs: int, data_root: str | Path | None) -> BackboneSpec:
    """`backbone` as a recipe of `epochs` epochs uses it: where that is 0 and it names no `pretrained` file, naming
    the one under <data-root>/weights/ (<name>.safetensors, .pth or .pt) that its original loads, so that the file's
    contents key the stage models and cells built on it (`backbone_key`); otherwise (or with no such file) as is."""
    if epochs != 0 or backbone.pretrained or data_root is None:
        return backbone
    found = next((p for p in (Path(data_root) / "weights" / f"{backbone.name}{s}" for s in WEIGHT_SUFFIXES)
                  if p.is_file()), None)
    return dataclasses.replace(backbone, pretrained=str(found)) if found else backbone
