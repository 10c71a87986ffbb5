"""Membership-inference efficacy on the training forget set D_f(c)."""
from __future__ import annotations

from ..errors import UserError
from .base import MetricContext, register_metric
from .membership import ATTACK_NAME, ATTACK_NAME_WITH_LABELS, mia_efficacy

ATTACKS = (ATTACK_NAME, ATTACK_NAME_WITH_LABELS)


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
