"""Membership-inference efficacy: how many training forget samples D_f(c) an attack judges non-members. Two
attacks, both fitted on members = retain-train vs non-members = retain-test and applied to D_f(c) of the train
split:

- `mia` (row `mia_forget`): this suite's own attack, one standardised logistic regression on the max softmax
  probability and the entropy (`mia_efficacy`);
- `mia_svc` (rows `mia_svc_<feature>`): the attack SalUn's and ℓ1-sparse's tables report as "MIA-efficacy"
  (OPTML-Group/Unlearn-Saliency `evaluation/SVC_MIA.py`), one RBF support-vector classifier per feature type
  (`svc_mia_efficacies`); their published number is `mia_svc_confidence`.
"""
from __future__ import annotations

import weakref
from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ..config import check_ranges, one_of
from ..errors import UserError
from .base import MetricContext, register_metric

ATTACK_NAME = "logreg-maxconf-entropy"
ATTACK_NAME_WITH_LABELS = "logreg-maxconf-entropy-trueconf"
ATTACKS = (ATTACK_NAME, ATTACK_NAME_WITH_LABELS)
# (split, view) of the members, the non-members and the targets of both attacks
ATTACK_VIEWS = (("train", "retain"), ("test", "retain"), ("train", "forget"))

SVC_FEATURES = ("confidence", "entropy", "m_entropy", "correctness", "prob")
SVC_DEFAULT_FEATURES = ("confidence", "entropy", "m_entropy")
SVC_SHADOW_SIZE = 1000  # members and non-members each, at most: one fit stays well under a second on a CPU core
LOG_FLOOR = 1e-30  # log(0) is taken as log(1e-30) in the modified entropy, as the reference does


def balanced_indices(n_members: int, n_nonmembers: int, seed: int,
                     cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of n = min(n_members, n_nonmembers, cap) members and n non-members, each drawn without replacement
    by one numpy generator seeded with `seed` (members first): the attacks' balanced shadow sets."""
    rng = np.random.default_rng(seed)
    n = min(n_members, n_nonmembers, n_members if cap is None else cap)
    return rng.choice(n_members, n, replace=False), rng.choice(n_nonmembers, n, replace=False)


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
    pick_members, pick_nonmembers = balanced_indices(len(members), len(nonmembers), seed)
    n = len(pick_members)
    from sklearn.linear_model import LogisticRegression  # sklearn (a second to import) only where an attack is fit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    attack = make_pipeline(StandardScaler(), LogisticRegression())
    attack.fit(np.concatenate([members[pick_members], nonmembers[pick_nonmembers]]),
               np.concatenate([np.ones(n), np.zeros(n)]))
    return float((attack.predict(targets) == 0).mean())


def svc_features(logits: Tensor, labels: Tensor, feature: str) -> np.ndarray:
    """One feature type of the SVC attack per sample, float64 [N, 1] (`prob`: [N, C]), from softmax probabilities p
    and true labels y (natural logarithms):

    - confidence: p_y;
    - entropy: −Σ_j p_j log p_j (0 log 0 = 0);
    - m_entropy (Song & Mittal's modified entropy): −(1 − p_y) log p_y − Σ_{j≠y} p_j log(1 − p_j), with log 0
      taken as log 1e-30;
    - correctness: 1 where argmax_j p_j = y, else 0;
    - prob: the probability vector p itself.
    """
    p = torch.softmax(logits.detach().to("cpu", torch.float64), dim=1)
    y = labels.detach().to("cpu", torch.int64).view(-1, 1)
    p_y = p.gather(1, y).squeeze(1)
    if feature == "confidence":
        column = p_y
    elif feature == "entropy":
        column = -torch.xlogy(p, p).sum(dim=1)
    elif feature == "m_entropy":
        others = (p * (1 - p).clamp_min(LOG_FLOOR).log()).scatter(1, y, 0.0)
        column = -(1 - p_y) * p_y.clamp_min(LOG_FLOOR).log() - others.sum(dim=1)
    elif feature == "correctness":
        column = (p.argmax(dim=1) == y.squeeze(1)).to(torch.float64)
    elif feature == "prob":
        return p.numpy()
    else:
        raise ValueError(f"unknown SVC attack feature {feature!r}; expected one of {', '.join(SVC_FEATURES)}")
    return column.view(-1, 1).numpy()


def svc_mia_efficacies(
    member_logits: Tensor,
    nonmember_logits: Tensor,
    target_logits: Tensor,
    labels: tuple[Tensor, Tensor, Tensor],
    *,
    features: Iterable[str] = SVC_DEFAULT_FEATURES,
    shadow_size: int | None = SVC_SHADOW_SIZE,
    seed: int = 0,
) -> dict[str, float]:
    """Per feature type: the fraction (in [0, 1]) of target samples an SVC attack predicts to be non-members.

    Logits and `labels` = (member, nonmember, target) true labels as for `mia_efficacy`. Members (label 1) and
    non-members (label 0) are balanced: n = min(both sizes, shadow_size) of each (`balanced_indices`, seeded;
    shadow_size None keeps every sample of the smaller side); the same samples serve every feature type. Per
    feature type one `SVC(C=3, gamma="auto", kernel="rbf")` on the unscaled `svc_features` is fitted and applied
    to the targets, as SalUn's `SVC_MIA` does. Higher means the targets look more like unseen data.
    """
    member_labels, nonmember_labels, target_labels = labels
    if min(len(member_logits), len(nonmember_logits), len(target_logits)) == 0:
        raise ValueError("svc_mia_efficacies needs at least one member, non-member and target sample")
    picks = [torch.from_numpy(i) for i in balanced_indices(len(member_logits), len(nonmember_logits), seed,
                                                           shadow_size)]
    shadow_sets = [(side_logits.detach().cpu()[pick], side_labels.detach().cpu()[pick]) for side_logits, side_labels,
                   pick in zip((member_logits, nonmember_logits), (member_labels, nonmember_labels), picks)]
    membership = np.concatenate([np.ones(len(picks[0])), np.zeros(len(picks[1]))])
    from sklearn.svm import SVC  # sklearn (a second to import) only where an attack is fit

    efficacies = {}
    for feature in features:
        shadow = np.concatenate([svc_features(*side, feature) for side in shadow_sets])
        attack = SVC(C=3, gamma="auto", kernel="rbf").fit(shadow, membership)
        efficacies[feature] = float((attack.predict(svc_features(target_logits, target_labels, feature)) == 0).mean())
    return efficacies


def svc_attack_settings(settings: dict, metric: str) -> tuple[int | None, int]:
    """(shadow_size, seed) of a metric using the SVC attack, checked: UserError naming the bad value otherwise."""
    shadow_size, seed = settings["shadow_size"], settings["seed"]
    if shadow_size is not None and (isinstance(shadow_size, bool) or not isinstance(shadow_size, int)
                                    or shadow_size < 1):
        raise UserError(f"metric_settings.{metric}.shadow_size must be a positive whole number of samples per side "
                        f"(or null for all), got {shadow_size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"metric_settings.{metric}.seed must be a whole number, got {seed!r}.")
    return shadow_size, seed


# attack results on the group's frozen stage models (the retrained model `tow` compares with), per model: every
# cell of the group attacks the same retrained model with the same settings
_STAGE_ATTACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def svc_attack_efficacies(ctx: MetricContext, metric: str, features: Iterable[str],
                          model: nn.Module | None = None) -> dict[str, float]:
    """`svc_mia_efficacies` of `model` (default: the unlearned model; else one of the group's frozen stage models)
    on ctx's ATTACK_VIEWS, with the shadow_size and seed settings of `metric` (ctx.settings), checked. Each
    feature's attack is fitted once per (model, forget class, shadow_size, seed): `tow` reuses `mia_svc`'s
    confidence attack on the unlearned model (within the cell) and the retrained model's (across the group's
    cells). Features are fitted independently on the same seeded samples, so a memoised value equals a fresh one."""
    shadow_size, seed = svc_attack_settings(ctx.settings, metric)
    net = ctx.net if model is None else model
    key = ("svc", id(net), ctx.forget_class, shadow_size, seed)
    if model is None:  # the cell's memo: the entry keeps `net` alive, so its id stays its own
        done = ctx.results.setdefault(key, (net, {}))[1]
    else:  # weakly keyed by the stage model, which the entry must not hold, or it would never be freed
        done = _STAGE_ATTACKS.setdefault(model, {}).setdefault(key, {})
    missing = [f for f in features if f not in done]
    if missing:
        logits = [ctx.logits(split, view, model=model) for split, view in ATTACK_VIEWS]
        labels = tuple(ctx.labels(split, view) for split, view in ATTACK_VIEWS)
        done.update(svc_mia_efficacies(*logits, labels, features=missing, shadow_size=shadow_size, seed=seed))
    return {f: done[f] for f in features}


@register_metric("mia", fits_sklearn=True, check=lambda s: check_ranges(s, {"attack": one_of(ATTACKS)}, "metric_settings.mia.{}".format),
                 attack=ATTACK_NAME, seed=0)
def membership_inference(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Row ('train', 'mia_forget', fraction in [0, 1] of the training D_f(c) samples judged non-members).

    The attack (`attack` setting, recorded with the run's settings) is fitted on the unlearned model's outputs
    for members = the retain view of the train split and non-members = the retain view of the test split, so
    both sides hold the same classes and the attack cannot learn "class c looks unseen" from the non-members.
    Higher means the forgotten training samples look more like data the model never saw (retrain ≈ 1).
    """
    attack = ctx.settings["attack"]
    logits = [ctx.logits(split, view) for split, view in ATTACK_VIEWS]
    with_labels = attack == ATTACK_NAME_WITH_LABELS
    labels = tuple(ctx.labels(split, view) for split, view in ATTACK_VIEWS) if with_labels else None
    return [("train", "mia_forget", mia_efficacy(*logits, labels=labels, seed=int(ctx.settings["seed"])))]


def check_svc_settings(s: dict) -> None:
    features = s["features"]
    if (not isinstance(features, (list, tuple)) or not features
            or any(not isinstance(f, str) or f not in SVC_FEATURES for f in features)
            or len(set(features)) < len(features)):
        raise UserError(f"metric_settings.mia_svc.features must be a list of distinct feature types from "
                        f"{', '.join(SVC_FEATURES)}, got {features!r}.")
    svc_attack_settings(s, "mia_svc")


@register_metric("mia_svc", fits_sklearn=True, check=check_svc_settings, features=list(SVC_DEFAULT_FEATURES),
                 shadow_size=SVC_SHADOW_SIZE, seed=0)
def svc_membership_inference(ctx: MetricContext) -> list[tuple[str, str, float]]:
    """Rows ('train', 'mia_svc_<feature>', fraction in [0, 1] of the training D_f(c) samples judged non-members),
    one per feature type of the `features` setting (any of SVC_FEATURES).

    SalUn's "MIA-efficacy" (`mia_svc_confidence` is the number their tables print, ×100): per feature type an SVC
    fitted on the unlearned model's retain-train (members) vs retain-test (non-members) samples, at most
    `shadow_size` of each (seeded by `seed`), applied to D_f(c) of the train split. Retrain ≈ 1.
    """
    efficacies = svc_attack_efficacies(ctx, "mia_svc", ctx.settings["features"])
    return [("train", f"mia_svc_{feature}", value) for feature, value in efficacies.items()]
