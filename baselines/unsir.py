"""UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", arXiv 2111.08947; the authors' notebook is
vikram2000b/Fast-Machine-Unlearning; the implementation read for this file is the one class-unlearning benchmarks
use, if-loops/selective-synaptic-dampening, `src/forget_full_class_strategies.py` (`UNSIR`) and `src/unlearn.py`
(`UNSIR_noise_train`, `UNSIR_create_noisy_loader`, `fit_one_unlearning_cycle`)).

1. Error-maximising noise: a batch of `noise_size` inputs N (in the model's normalised input space, drawn from a
   standard normal) is trained with Adam (lr `noise_lr`, `noise_steps` steps) to maximise the frozen original's
   cross-entropy on label c, kept small by an ℓ2 term: minimise −CE(f(N), c) + `noise_weight` · mean_i ‖N_i‖².
2. Impair: one epoch of cross-entropy on the noise (repeated `noise_copies` times, label c) shuffled together with
   a sample of the retained classes (true labels), Adam at `impair_lr`, model in train mode.
3. Repair: one epoch of cross-entropy on the same retain sample alone, a fresh Adam at `repair_lr`.
Reference defaults: noise batch 32, 25 noise steps at lr 0.1, weight 0.1, 80 copies, the first 500 images of every
retained class (10 % of CIFAR's 5,000), impair and repair at lr 1e-4, batches of 32 (impair) and 128 (repair).

Departures: the retain sample is a random `retain_fraction` of D_r(c) (default 0.1, the reference's share) rather
than the first images of each class; both epochs use batches of `batch_size` (32); BatchNorm handling during impair
and repair is the shared `norm_statistics` choice (the reference's train mode is "batch"); the original is in eval
mode while the noise is learnt (the reference leaves it in train mode); every noise image is copied
`noise_copies` times (both references loop over `batch[0].size(0)`, the channel count, and so add only the first 3
noise images per copy); the noise is learnt without touching the model's gradients (the references never clear
the 25 ascent gradients it leaves on the model's parameters, so their first impair Adam step adds them in and they
inflate Adam's second-moment estimate for many steps). The impair set is never built (the references build it as a dataset): its batches
gather noise inputs by index and normalise the stored retain images per batch, so the copies cost no memory.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench import UnlearnTask
from unlearnbench.data import ImageData, Split
from unlearnbench.search_space import Choice, Float, Int
from unlearnbench.training import autocast
from ._blocks import batches_per_pass, retain_sample
from ._finetuning import (NORM_STATISTICS, FinetunedModel, FinetuneOutcome, FinetuningUnlearner,
                          cross_entropy_parts, endless_batches, finetune)


def error_maximising_noise(model: nn.Module, task: UnlearnTask) -> torch.Tensor:
    """Inputs [noise_size, C, H, W] that the frozen `model` (eval mode) misclassifies away from the forget class
    as much as the ℓ2 penalty allows (see the module docstring, step 1)."""
    p, data = task.params, task.data
    shape = (int(p["noise_size"]), data.channels, data.image_size, data.image_size)
    noise = torch.randn(shape, generator=task.generator).to(task.device).requires_grad_(True)
    labels = torch.full((shape[0],), task.forget_class, device=task.device)
    optimizer = torch.optim.Adam([noise], lr=p["noise_lr"])
    model.eval()
    for _ in range(int(p["noise_steps"])):
        with autocast(task.device):
            logits = model(noise).float()
        loss = -F.cross_entropy(logits, labels) + p["noise_weight"] * noise.pow(2).sum(dim=(1, 2, 3)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return noise.detach()


def impair_batches(noise: torch.Tensor, forget_class: int, copies: int, retain: Split, data: ImageData,
                   batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of the impair set, `copies` copies of every noise input (label `forget_class`) shuffled together with
    the retain sample, reshuffled on every pass; the set is never built: only indices are shuffled, and each batch
    gathers its noise inputs and normalises its retain images (which stay as stored, uint8, on the data's device)."""
    n_noise = copies * len(noise)
    total = n_noise + len(retain)
    while True:
        order = torch.randperm(total, generator=generator).to(retain.labels.device)
        for start in range(0, total, batch_size):
            index = order[start:start + batch_size]
            is_noise = index < n_noise
            kept = index[~is_noise] - n_noise
            x = noise.new_empty((len(index), *noise.shape[1:]))
            x[is_noise] = noise[index[is_noise] % len(noise)]
            x[~is_noise] = data.normalize(retain.images[kept]).to(x.dtype)
            y = torch.full((len(index),), forget_class, device=retain.labels.device, dtype=retain.labels.dtype)
            y[~is_noise] = retain.labels[kept]
            yield x, y


class UNSIR(FinetuningUnlearner):
    """Learn noise that maximises the forget class's error, impair on it with retained data, then repair."""

    name = "unsir"
    label = "UNSIR"
    paper = 'Tarun et al., "Fast Yet Effective Machine Unlearning", arXiv 2111.08947'
    venue = "IEEE TNNLS 2023"
    parameters = {"noise_size": 32, "noise_steps": 25, "noise_lr": 0.1, "noise_weight": 0.1, "noise_copies": 80,
                  "retain_fraction": 0.1, "optimizer": "adam", "impair_lr": 1e-4, "repair_lr": 1e-4,
                  "batch_size": 32, "norm_statistics": "batch"}
    family_parameters = {}
    search_space = {"impair_lr": Float(1e-5, 0.1, log=True), "repair_lr": Float(1e-5, 0.1, log=True),
                    "noise_copies": Int(1, 100, log=True), "retain_fraction": Float(0.1, 0.5),
                    "norm_statistics": Choice(NORM_STATISTICS)}
    family_search_space = {"vit": {"norm_statistics": Choice(("batch",))}}

    def unlearn(self, task: UnlearnTask) -> FinetunedModel:
        p, c, data = task.params, task.forget_class, task.data
        noise = error_maximising_noise(task.original, task)
        retain = retain_sample(task, p["retain_fraction"])
        copies, size = int(p["noise_copies"]), int(p["batch_size"])
        model = task.copy_original()
        outcomes = []
        impair = impair_batches(noise, c, copies, retain, data, size, task.generator)
        repair = endless_batches(data, retain, size, task.generator, f"retain sample without class {c}")
        for batches, count, lr in ((impair, copies * len(noise) + len(retain), p["impair_lr"]),
                                   (repair, len(retain), p["repair_lr"])):
            phase = dataclasses.replace(task, params={**p, "lr": lr, "steps": batches_per_pass(count, size)})
            outcomes.append(finetune(model, lambda net, batches=batches: cross_entropy_parts(net, next(batches))[0],
                                     phase))
        return FinetunedModel(model.eval(), c, FinetuneOutcome(sum(o.steps for o in outcomes), False,
                                                               any(o.diverged for o in outcomes)))
