"""The fine-tuning loop the baselines share: a loss closure, a step budget, a stopping rule, divergence detection,
BatchNorm statistics handling, and the search space every fine-tuning baseline is tuned over.

The shipped grids use parameters chosen by the tuning protocol (`unlearnbench.tuning`); the trial histories are
under reports/tuning/.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unlearnbench.config import above, at_least, one_of
from unlearnbench.data import ImageData, Split
from unlearnbench.errors import UserError
from unlearnbench.search_space import Choice, Float, Int
from unlearnbench.training import OPTIMIZERS, accuracy, autocast, make_optimizer, predict_logits
from unlearnbench.unlearner import SingleClassModel, Unlearner, UnlearnTask

MOMENTUM = 0.9  # SGD momentum of every baseline fine-tune (no weight decay: the runs are a few dozen steps)


NORM_STATISTICS = ("batch", "frozen")

# What every fine-tuning baseline searches (a method adds its own terms, e.g. NegGrad+'s α): SGD learning rates for
# the CNNs, AdamW ones for the ViTs, the step budget, the stopping threshold, the batch size and how BatchNorm
# normalises (ViTs have no BatchNorm: their range holds the one value "batch").
FINETUNE_SPACE = {"lr": Float(1e-4, 0.3, log=True), "steps": Int(5, 200, log=True), "stop_acc": Float(0.0, 0.2),
                  "batch_size": Choice((16, 32, 64, 128)), "norm_statistics": Choice(NORM_STATISTICS)}
FINETUNE_VIT_SPACE = {"lr": Float(1e-5, 1e-2, log=True), "norm_statistics": Choice(("batch",))}


class FinetuningUnlearner(Unlearner):
    """Base of the fine-tuning baselines: the shared search space, the ViT optimiser (AdamW) and its range."""

    family_parameters: ClassVar[dict[str, dict]] = {"vit": {"optimizer": "adamw", "lr": 3e-4}}
    search_space: ClassVar[dict] = FINETUNE_SPACE
    family_search_space: ClassVar[dict[str, dict]] = {"vit": FINETUNE_VIT_SPACE}

    # the shared fine-tuning parameters (`finetune` reads them); a subclass adds its own to these
    parameter_ranges: ClassVar[dict] = {
        "lr": above(0), "batch_size": at_least(1), "steps": at_least(0), "check_every": at_least(1),
        "stop_acc": (lambda v: 0 <= v <= 1, "in [0, 1]"), "optimizer": one_of(OPTIMIZERS),
        "norm_statistics": one_of(NORM_STATISTICS)}


@dataclass(frozen=True)
class FinetuneOutcome:
    """How a fine-tune ended: optimiser steps taken, whether the stopping rule fired, whether the loss diverged."""

    steps: int
    reached_target: bool
    diverged: bool

    def diagnostics(self) -> dict[str, float]:
        """The outcome as numbers a harness can record beside the metrics: steps, reached_target, diverged (0/1)."""
        return {"steps": float(self.steps), "reached_target": float(self.reached_target),
                "diverged": float(self.diverged)}


def endless_batches(data: ImageData, split: Split, batch_size: int, generator: torch.Generator,
                    what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised (x, y) batches of `split`, reshuffled with `generator` on every pass, forever; `what` names the
    split in the error raised when it is empty."""
    refuse_empty(split, what)
    while True:
        yield from data.batches(split, batch_size, shuffle=True, generator=generator)


def refuse_empty(split: Split, what: str) -> None:
    """One sentence naming `what` where `split` holds no sample to fine-tune on."""
    if len(split) == 0:
        raise UserError(f"The {what} is empty, so there is nothing to fine-tune on.")


def relabelled_forget_set(task: UnlearnTask) -> Split:
    """D_f(c) of the training split with every label replaced, once, by a class drawn uniformly among the others."""
    forget = task.data.train.forget(task.forget_class)
    shift = torch.randint(1, task.data.num_classes, (len(forget),), generator=task.generator)
    labels = (task.forget_class + shift.to(forget.labels.device)) % task.data.num_classes
    return Split(forget.images, labels)


def cross_entropy_parts(model: nn.Module, *batches: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """Mean cross-entropy of `model` on each (x, y) batch, from one forward pass over their concatenation."""
    logits = model(torch.cat([x for x, _ in batches]))
    sizes = [len(y) for _, y in batches]
    return [F.cross_entropy(out, y) for out, (_, y) in zip(logits.split(sizes), batches)]


def held_out_forget_set(task: UnlearnTask) -> Split:
    """Class c of the validation split (never test): the held-out slice of D_f(c) a stopping rule measures."""
    held_out = task.data.val.forget(task.forget_class)
    if len(held_out) == 0:
        raise UserError(f"The validation split holds no sample of class {task.forget_class}, which the stopping rule "
                        f"needs; use a val_fraction above 0.")
    return held_out


def finetune(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], task: UnlearnTask, *,
             held_out: Split | None = None, before_step: Callable[[nn.Module], None] | None = None,
             after_step: Callable[[nn.Module], None] | None = None) -> FinetuneOutcome:
    """Take up to `task.params['steps']` optimiser steps on `loss_fn(model)` (in place) and return how it ended.

    The optimiser is `task.params['optimizer']` at learning rate `task.params['lr']` (SGD with momentum 0.9, no
    weight decay). The model trains in train mode except for BatchNorm, which `task.params['norm_statistics']`
    decides (see `set_norm_statistics`): "batch" normalises with each batch's statistics and updates the running
    ones, as ordinary fine-tuning does; "frozen" keeps the original model's running statistics, so batches drawn
    from one class (D_f(c) alone) cannot move them (benchmarks/baseline_norm_statistics.py measures both).

    Stopping rule: with `held_out` (see `held_out_forget_set`), every `task.params['check_every']` steps the model's
    accuracy on it is measured and the run ends once it is at most `task.params['stop_acc']`.
    Divergence: weights and buffers are snapshotted whenever they have just given a finite loss (every `check_every`
    steps, every step for methods without that parameter); a non-finite loss, non-finite held-out logits or
    non-finite weights at the end restore the last snapshot and end the run as diverged, without raising.
    `before_step(model)` runs between backward and the optimiser step (e.g. to mask gradients), `after_step(model)`
    right after it (e.g. to put frozen weights back).
    """
    params = task.params
    check_every = int(params.get("check_every", 1))
    optimizer = make_optimizer(model.parameters(), params["optimizer"], params["lr"], momentum=MOMENTUM)
    norm_statistics = params.get("norm_statistics", "batch")
    set_norm_statistics(model, norm_statistics)
    snapshot = {name: t.clone() for name, t in model.state_dict().items()}
    budget = int(params["steps"])
    steps, reached, diverged = 0, False, False
    bar = tqdm(total=budget, desc="fine-tune", disable=not task.progress, leave=False, mininterval=1.0)
    while steps < budget and not reached:
        with autocast(task.device):
            loss = loss_fn(model)
        if not torch.isfinite(loss):
            diverged = True
            break
        if steps % check_every == 0:  # copied into the tensors kept above: a deep copy a step cost ~8 % of a run
            for name, t in model.state_dict().items():
                snapshot[name].copy_(t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before_step is not None:
            before_step(model)
        optimizer.step()
        if after_step is not None:
            after_step(model)
        steps += 1
        bar.update()
        if held_out is not None and steps % check_every == 0:
            logits = predict_logits(model, task.data, held_out)
            if not torch.isfinite(logits).all():
                diverged = True
                break
            reached = accuracy(logits, held_out.labels) <= params["stop_acc"]  # (each module's mode restored)
    bar.close()
    diverged = diverged or not _finite_state(model)
    if diverged:
        model.load_state_dict(snapshot)
    return FinetuneOutcome(steps, reached, diverged)


def set_norm_statistics(model: nn.Module, mode: str) -> None:
    """Put `model` in train mode with its BatchNorm layers normalising as `mode` says: "batch" (train mode: batch
    statistics, running ones updated) or "frozen" (eval mode: the running statistics, never updated; the affine
    weights still train)."""
    if mode not in NORM_STATISTICS:
        raise UserError(f"Unknown norm_statistics '{mode}'; choose one of: {', '.join(NORM_STATISTICS)}.")
    model.train()
    if mode == "frozen":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _finite_state(model: nn.Module) -> bool:
    """True when every floating-point parameter and buffer (BatchNorm's running statistics too) is finite."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


class FinetunedModel(SingleClassModel):
    """A fine-tuning baseline's result: the network unlearned on one class, plus how its fine-tune ended
    (`diverged`, and `diagnostics()` that the harness records beside the metrics)."""

    def __init__(self, net: nn.Module, forget_class: int, outcome: FinetuneOutcome) -> None:
        super().__init__(net, forget_class)
        self.outcome = outcome

    @property
    def diverged(self) -> bool:
        """True when the loss went NaN/inf and the last finite weights were restored."""
        return self.outcome.diverged

    def diagnostics(self) -> dict[str, float]:
        return self.outcome.diagnostics()
