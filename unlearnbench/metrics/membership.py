"""Membership-inference efficacy (SalUn/SCRUB style): how many forget samples an attack judges non-members;
the `mia` metric applies it to the training forget set D_f(c)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from ..errors import UserError
from .base import MetricContext, register_metric

ATTACK_NAME = "logreg-maxconf-entropy"
ATTACK_NAME_WITH_LABELS = "logreg-maxconf-entropy-trueconf"
ATTACKS = (ATTACK_NAME, ATTACK_NAME_WITH_LABELS)


def attack_features(logits: Tensor, labels: Tensor | None = None) -> np.ndarray:
    """Attack features per sample, float64 [N, 2] or [N, 3].

    Columns: max softmax probability, softmax entropy (nats) and, when labels
    are given, the probability of the true class.
    """
    p = torch.softmax(logits.detach().to("cpu", torch.float64), dim=1)
    cols = [p.max(dim=1).values, -torch.xlogy(p, p).sum(dim=1)]
    if labels is not None:
        cols.append(p.gather(1, labels.detach().to("cpu", torch.int64).view(-1, 1)).squeeze(1))
    return torch.stack(cols, dim=1).numpy()


def mia_efficacy(
    member_logits: Tensor,
    nonmember_logits: Tensor,
    target_logits: Tensor,
    *,
    labels: tuple[Tensor, Tensor, Tensor] | None = None,
    seed: int = 0,
) -> float:
    """Fraction (in [0, 1]) of target samples that the attack predicts to be non-members.

    member_logits: the model's logits on training samples it kept (retain-train),
    nonmember_logits: on samples it never saw (test split), target_logits: on
    the forget samples (D_f). A standardised logistic regression is fitted on
    `attack_features` of members (label 1) vs non-members (label 0), the larger
    set randomly subsampled (numpy generator seeded with `seed`) to the size of
    the smaller, then applied to the targets. Higher means the forget set
    looks more like unseen data. `labels` = (member, nonmember, target) true
    labels adds the true-class probability feature; record ATTACK_NAME_WITH_LABELS
    instead of ATTACK_NAME then.
    """
    member_labels, nonmember_labels, target_labels = labels if labels is not None else (None, None, None)
    members = attack_features(member_logits, member_labels)
    nonmembers = attack_features(nonmember_logits, nonmember_labels)
    targets = attack_features(target_logits, target_labels)
    if min(len(members), len(nonmembers), len(targets)) == 0:
        raise ValueError("mia_efficacy needs at least one member, non-member and target sample")
    rng = np.random.default_rng(seed)
    n = min(len(members), len(nonmembers))
    members = members[rng.choice(len(members), n, replace=False)]
    nonmembers = nonmembers[rng.choice(len(nonmembers), n, replace=False)]
    attack = make_pipeline(StandardScaler(), LogisticRegression())
    attack.fit(np.concatenate([members, nonmembers]), np.concatenate([np.ones(n), np.zeros(n)]))
    return float((attack.predict(targets) == 0).mean())


@register_metric("mia", attack=ATTACK_NAME, seed=0)
def membership_inference(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Row ('train', 'mia_forget', fraction in [0, 1] of the training D_f(c) samples judged non-members).

    The attack (`attack` setting, recorded with the run's settings) is fitted on the unlearned model's outputs
    for members = the retain view of the train split and non-members = the retain view of the test split, so
    both sides hold the same classes and the attack cannot learn "class c looks unseen" from the non-members.
    Higher means the forgotten training samples look more like data the model never saw (retrain ≈ 1).
    """
    attack = ctx.settings["attack"]
    if attack not in ATTACKS:
        raise UserError(f"Unknown mia attack '{attack}'; choose {' or '.join(ATTACKS)}.")
    views = [("train", "retain"), ("test", "retain"), ("train", "forget")]
    logits = [ctx.logits(split, view) for split, view in views]
    labels = tuple(ctx.labels(split, view) for split, view in views) if attack == ATTACK_NAME_WITH_LABELS else None
    return [("train", "mia_forget", mia_efficacy(*logits, labels=labels, seed=int(ctx.settings["seed"])))]
