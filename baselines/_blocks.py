"""Building blocks the state-of-the-art baselines share: a random sample of the retained training data, the
distillation loss of the teacher-student methods (SCRUB, Bad Teacher) and a step schedule that lets a method made
of phases (max and min steps, impair and repair epochs) run through the one fine-tuning loop of `_finetuning`."""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench.data import Split
from unlearnbench.errors import UserError
from unlearnbench.unlearner import UnlearnTask


def retain_sample(task: UnlearnTask, fraction: float) -> Split:
    """A uniformly drawn `fraction` (0 < fraction ≤ 1) of D_r(c) of the training split, drawn with the task's
    generator, so the same task draws the same sample."""
    if not 0 < fraction <= 1:
        raise UserError(f"The retain fraction must be in (0, 1], got {fraction}.")
    retain = task.data.train.retain(task.forget_class)
    count = max(1, round(fraction * len(retain)))
    return retain.subset(torch.randperm(len(retain), generator=task.generator)[:count])


def distillation_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) between the teacher's class probabilities (already softened by `temperature`) and the
    student's softmax at `temperature`, summed over classes, averaged over the batch and scaled by T² so its
    gradients keep their size across temperatures (Hinton et al., the distillation loss SCRUB uses)."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs.float(), reduction="batchmean") * temperature ** 2


@torch.no_grad()
def teacher_probs(teacher: nn.Module, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """The softmax at `temperature` of a frozen teacher's logits on `x` (teacher in eval mode: its BatchNorm uses
    running statistics and its dropout is off)."""
    teacher.eval()
    return F.softmax(teacher(x).float() / temperature, dim=1)


def batches_per_pass(size: int, batch_size: int) -> int:
    """How many batches one pass over `size` samples takes (the last one may be short)."""
    return math.ceil(size / batch_size)


def phased_loss(phases: list[tuple[int, Callable[[nn.Module], torch.Tensor]]]) -> tuple[int, Callable]:
    """(total steps, loss closure) for a run made of phases, each `(steps, loss_fn)`: the closure gives the loss of
    the phase the run is in, so one `finetune` call (one optimiser, one divergence guard) runs them in order."""
    schedule: Iterator[Callable] = (fn for steps, fn in phases for _ in range(steps))
    return sum(steps for steps, _ in phases), lambda net: next(schedule)(net)
