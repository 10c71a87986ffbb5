"""The pure metric functions against hand-computed values and constructed models (CPU, fast)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnbench.errors import UserError
from unlearnbench.metrics.distance import js_divergence, mean_js, softmax64
from unlearnbench.metrics.insertion_deletion import auc, deletion_curve, insertion_curve
from unlearnbench.metrics.base import METRICS
from unlearnbench.metrics.membership import balanced_indices, mia_efficacy, svc_features, svc_mia_efficacies
from unlearnbench.metrics.relearn import relearn_time
from unlearnbench.metrics.tug_of_war import tug_of_war
from unlearnbench.metrics.zrf import zrf, zrf_legacy

LN2 = math.log(2)


def _random_probs(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return softmax64(3 * torch.randn(n, c, generator=g))


# ---------------------------------------------------------------- divergence


def test_softmax64_is_float64_rows_summing_to_one() -> None:
    p = softmax64(torch.randn(5, 7))
    assert p.dtype == torch.float64
    assert torch.allclose(p.sum(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-15)


def test_js_of_identical_rows_is_exactly_zero_and_zrf_exactly_one() -> None:
    p = _random_probs(8, 10, 0)
    p[0] = F.one_hot(torch.tensor(3), 10).double()
    assert torch.equal(js_divergence(p, p), torch.zeros(8, dtype=torch.float64))
    assert zrf(p, p) == 1.0
    assert zrf_legacy(p[1:].log(), p[1:].log()) == 1.0


def test_one_hot_against_uniform_over_ten_classes() -> None:
    p = F.one_hot(torch.tensor([0, 4]), 10).double()
    q = torch.full((2, 10), 0.1, dtype=torch.float64)
    # m = (0.55, 0.05 × 9): KL(p‖m) = ln(1/0.55), KL(q‖m) = 0.1 ln(0.1/0.55) + 0.9 ln 2
    expected = 0.5 * (math.log(20 / 11) + 0.1 * math.log(2 / 11) + 0.9 * LN2)
    assert expected == pytest.approx(0.5256, abs=1e-4)
    js = js_divergence(p, q)
    assert not torch.isnan(js).any()
    assert js.tolist() == pytest.approx([expected, expected], abs=1e-14)
    assert zrf(p, q) == pytest.approx(1 - expected, abs=1e-14)
    assert mean_js(p, q) == pytest.approx(expected, abs=1e-14)


def test_two_class_hand_computed() -> None:
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    # m = (0.75, 0.25)
    expected = 0.5 * (math.log(1 / 0.75) + 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert js_divergence(p, q).item() == pytest.approx(expected, abs=1e-14)


def test_js_symmetric_bounded_by_ln2_and_reaching_it_on_disjoint_support() -> None:
    p, q = _random_probs(64, 10, 1), _random_probs(64, 10, 2)
    js = js_divergence(p, q)
    assert torch.allclose(js, js_divergence(q, p), rtol=0, atol=1e-15)
    assert (js > 0).all() and (js <= LN2 + 1e-12).all()
    a, b = F.one_hot(torch.tensor([0]), 3).double(), F.one_hot(torch.tensor([2]), 3).double()
    assert js_divergence(a, b).item() == pytest.approx(LN2, abs=1e-15)


def test_mean_js_is_mean_of_rows() -> None:
    p, q = _random_probs(5, 4, 3), _random_probs(5, 4, 4)
    assert mean_js(p, q) == pytest.approx(js_divergence(p, q).mean().item(), abs=1e-15)
    assert mean_js(p, q) != pytest.approx(js_divergence(p, q).sum().item())


def test_zrf_legacy_hand_computed_and_matches_bad_teaching_formula() -> None:
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    # m = (0.7, 0.3); KL(m‖·) terms, summed over the N×C = 2 entries and divided by 2
    kl_mp = 0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5)
    kl_mq = 0.7 * math.log(0.7 / 0.9) + 0.3 * math.log(0.3 / 0.1)
    expected = 1 - (0.5 * kl_mp + 0.5 * kl_mq) / 2
    assert zrf_legacy(p.log(), q.log()) == pytest.approx(expected, abs=1e-14)
    assert zrf_legacy(p.log(), q.log()) != pytest.approx(zrf(p, q), abs=1e-3)
    pp, qq = _random_probs(6, 5, 5), _random_probs(6, 5, 6)
    m = (pp + qq) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = 1 - (0.5 * F.kl_div(pp.log(), m) + 0.5 * F.kl_div(qq.log(), m)).item()
    assert zrf_legacy(pp.log(), qq.log()) == pytest.approx(reference, abs=1e-14)



def test_zrf_legacy_stays_finite_where_a_probability_underflows() -> None:
    # the first row's second probability is e^-1000: 0 in any float, so ln of the softmax would be -inf
    logits = torch.tensor([[1000.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    log_p, log_q = torch.log_softmax(logits, dim=1), torch.zeros(2, 2, dtype=torch.float64) - math.log(2)
    assert torch.softmax(logits, dim=1)[0, 1] == 0
    # by hand: row 0 has p = (1, e^-1000), q = (½, ½) → m = (¾, ¼); row 1 has p = q = m = (½, ½), terms 0
    row0 = (0.5 * (0.75 * math.log(0.75) + 0.25 * (math.log(0.25) + 1000))
            + 0.5 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)))
    assert zrf_legacy(log_p, log_q) == pytest.approx(1 - row0 / 4, abs=1e-12)
    with pytest.raises(ValueError, match="log-probabilities"):
        zrf_legacy(log_p.exp(), log_q.exp())  # probabilities by mistake

# ---------------------------------------------------------------- relearn


def _separable_problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 2, generator=g)
    return x, (x[:, 0] > 0).long()


def _forget_accuracy(x: torch.Tensor, y: torch.Tensor, forget_class: int):
    def evaluate(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            keep = y == forget_class
            return (model(x[keep]).argmax(1) == forget_class).double().mean().item()

    return evaluate


def _sampler(x: torch.Tensor, y: torch.Tensor, calls: list[int]):
    def sample_epoch(epoch: int):
        calls.append(epoch)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))[:500]
        return [(x[idx[i : i + 50]], y[idx[i : i + 50]]) for i in range(0, 500, 50)]

    return sample_epoch


def _unlearned_linear() -> nn.Linear:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([3.0, -3.0]))  # predicts class 0 everywhere
    return model


def test_relearn_model_already_at_target_takes_zero_epochs() -> None:
    x, y = _separable_problem()
    model, calls = nn.Linear(2, 2), []
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
        model.bias.zero_()
    result = relearn_time(model, _sampler(x, y, calls), _forget_accuracy(x, y, 1), 0.99, lr=0.1)
    assert (result.epochs, result.relearned, calls) == (0, True, [])
    assert result.curve == [1.0]


def test_relearn_frozen_model_never_relearns() -> None:
    x, y = _separable_problem()
    model, calls = _unlearned_linear(), []
    model.requires_grad_(False)
    result = relearn_time(model, _sampler(x, y, calls), _forget_accuracy(x, y, 1), 0.9, lr=0.1, max_epochs=7)
    assert (result.epochs, result.relearned, calls) == (7, False, [])
    assert result.curve == [0.0] * 8


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 0.2)])
def test_relearn_linear_model_on_separable_problem(optimizer: str, lr: float) -> None:
    x, y = _separable_problem()
    model, calls = _unlearned_linear(), []
    model.eval()
    torch.manual_seed(0)
    result = relearn_time(model, _sampler(x, y, calls), _forget_accuracy(x, y, 1), 0.95, lr=lr, optimizer=optimizer)
    assert result.relearned
    assert 1 <= result.epochs <= 20
    assert len(result.curve) == result.epochs + 1 and calls == list(range(result.epochs))
    assert result.curve[0] == 0.0 and result.curve[-1] >= 0.95 and all(a < 0.95 for a in result.curve[:-1])
    assert not model.training


def test_relearn_budget_exhausted_and_unknown_optimizer() -> None:
    x, y = _separable_problem()
    result = relearn_time(_unlearned_linear(), _sampler(x, y, []), _forget_accuracy(x, y, 1), 0.95, lr=1e-6, max_epochs=3)
    assert (result.epochs, result.relearned, len(result.curve)) == (3, False, 4)
    with pytest.raises(UserError, match="did you mean 'adam'"):
        relearn_time(_unlearned_linear(), _sampler(x, y, []), _forget_accuracy(x, y, 1), 0.95, lr=0.1, optimizer="adan")


# ---------------------------------------------------------------- insertion / deletion


def _relevance() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    w_a = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    w_l = torch.tensor([0.5, 0.05, 0.6, 0.99, 0.0, 0.7], dtype=torch.float64)
    return {"A": (w_a, torch.full((4,), 0.01, dtype=torch.float64)), "L": (w_l, torch.zeros(6, dtype=torch.float64))}


def test_auc_trapezoid() -> None:
    assert auc([0, 0.5, 1], [0, 1, 1]) == pytest.approx(0.75)
    assert auc([0, 0.25, 1], [1, 0, 0]) == pytest.approx(0.125)


def test_deletion_closes_most_relevant_first_with_stable_ties() -> None:
    relevance = {
        "A": (torch.tensor([0.5, 0.9]), torch.tensor([0.9])),
        "B": (torch.tensor([0.9]), torch.tensor([0.1])),
    }
    closed = []

    def confidence(gates) -> float:
        closed.append([(name, kind, i) for name, pair in gates.items() for kind, g in zip("wb", pair)
                       for i in range(g.numel()) if g[i] == 0])
        return 0.0

    deletion_curve(confidence, relevance, step=0.2, ranking="global")  # 5 elements: one more closed per point
    # ties (0.9) keep the canonical order: layers in dict order, weight gates before bias gates, by index
    order = [("A", "w", 1), ("A", "b", 0), ("B", "w", 0), ("A", "w", 0), ("B", "b", 0)]
    assert [set(c) for c in closed] == [set(order[:k]) for k in range(6)]


def test_insertion_recovers_and_deletion_kills_a_single_responsible_element() -> None:
    seen: list[dict] = []

    def confidence(gates) -> float:
        seen.append({k: (w.clone(), b.clone()) for k, (w, b) in gates.items()})
        return gates["L"][0][3].item()

    relevance = _relevance()
    xs, ys = insertion_curve(confidence, relevance, step=0.05)
    assert len(seen) == 21 and xs == [k / 20 for k in range(21)]
    assert ys[0] == pytest.approx(0.01) and ys[1:] == [1.0] * 20
    for name, (w, b) in relevance.items():
        assert torch.allclose(seen[0][name][0], 1 - w) and torch.allclose(seen[0][name][1], 1 - b)
        assert (seen[-1][name][0] == 1).all() and (seen[-1][name][1] == 1).all()
    ins = auc(xs, ys)
    assert ins >= 0.95 and ins == pytest.approx(1 - 0.05 * 0.99 / 2)

    seen.clear()
    xs, ys = deletion_curve(confidence, relevance, step=0.05)
    assert len(seen) == 21 and ys == [1.0] + [0.0] * 20
    assert all((g == 1).all() for pair in seen[0].values() for g in pair)
    assert all((g == 0).all() for pair in seen[-1].values() for g in pair)
    dele = auc(xs, ys)
    assert dele <= 0.05 and dele == pytest.approx(0.025)


def test_schedule_changes_ceil_fraction_most_relevant_first() -> None:
    relevance = {"L": (torch.tensor([0.1, 0.6, 0.3, 0.5], dtype=torch.float64), torch.tensor([0.2, 0.4], dtype=torch.float64))}
    closed_sets = []

    def confidence(gates) -> float:
        w, b = gates["L"]
        closed_sets.append({("w", i) for i in range(4) if w[i] == 0} | {("b", i) for i in range(2) if b[i] == 0})
        return 0.0

    xs, _ = deletion_curve(confidence, relevance, step=0.25, ranking="global")
    assert xs == [0, 0.25, 0.5, 0.75, 1.0]
    # 6 elements: ceil(6k/4) = 0, 2, 3, 5, 6 closed; order w1, w3, b1, w2, b0, w0
    assert closed_sets == [
        set(),
        {("w", 1), ("w", 3)},
        {("w", 1), ("w", 3), ("b", 1)},
        {("w", 1), ("w", 3), ("b", 1), ("w", 2), ("b", 0)},
        {("w", 1), ("w", 3), ("b", 1), ("w", 2), ("b", 0), ("w", 0)},
    ]
    with pytest.raises(ValueError):
        deletion_curve(confidence, relevance, step=0.3)


def test_per_matrix_ranking_changes_the_same_fraction_of_every_matrix_and_global_does_not() -> None:
    """A two-layer product model, confidence = mean(A's weight gates) × mean(B's weight gates) (bias gates feed
    nothing): A's weight gates are all more relevant than B's, so the global ranking closes A entirely before it
    touches B, while the paper's per-matrix ranking closes half of each at the midpoint."""
    relevance = {"A": (torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.zeros(4)), "B": (torch.tensor([0.1, 0.2]), torch.zeros(2))}
    closed = []

    def confidence(gates) -> float:
        closed.append({(name, kind, i) for name, pair in gates.items() for kind, g in zip("wb", pair)
                       for i in range(g.numel()) if g[i] == 0})
        return float(gates["A"][0].mean() * gates["B"][0].mean())

    xs, per_matrix = deletion_curve(confidence, relevance, step=0.5)
    # per matrix at k=1: ceil(4/2) = 2 of A.w (0.9, 0.8), 2 of A.b, 1 of B.w (0.2), 1 of B.b
    assert closed[1] == {("A", "w", 0), ("A", "w", 1), ("A", "b", 0), ("A", "b", 1), ("B", "w", 1), ("B", "b", 0)}
    assert xs == [0, 0.5, 1] and per_matrix == [1.0, 0.25, 0.0]
    closed.clear()
    _, global_ = deletion_curve(confidence, relevance, step=0.5, ranking="global")
    # globally at k=1: the 6 most relevant of 12 are A's 4 weight gates and B's 2
    assert closed[1] == {("A", "w", i) for i in range(4)} | {("B", "w", 0), ("B", "w", 1)}
    assert global_ == [1.0, 0.0, 0.0]
    assert auc(xs, per_matrix) == pytest.approx(0.375) and auc(xs, global_) == pytest.approx(0.25)

    # insertion starts from the unlearned gates 1 − relevance: A.w [.1 .2 .3 .4] (mean .25), B.w [.9 .8] (.85)
    _, per_matrix = insertion_curve(confidence, relevance, step=0.5)
    _, global_ = insertion_curve(confidence, relevance, step=0.5, ranking="global")
    assert per_matrix == pytest.approx([0.25 * 0.85, (1 + 1 + 0.3 + 0.4) / 4 * (0.9 + 1) / 2, 1.0])
    assert global_ == pytest.approx([0.25 * 0.85, 1.0, 1.0])
    with pytest.raises(UserError, match="ranking"):
        deletion_curve(confidence, relevance, step=0.5, ranking="layerwise")


# ---------------------------------------------------------------- membership inference


def _mlp(d: int, c: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, c))


def test_mia_flags_memorised_members() -> None:
    n, d, c = 256, 64, 10
    g = torch.Generator().manual_seed(0)
    xm, ym = torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)
    xn, yn = torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)
    torch.manual_seed(0)
    model = _mlp(d, c)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        out = model(xm)
        if (out.argmax(1) == ym).all():
            break
        F.cross_entropy(out, ym).backward()
        opt.step()
    with torch.no_grad():
        lm, ln = model(xm), model(xn)
    assert (lm.argmax(1) == ym).all()
    h = n // 2
    assert mia_efficacy(lm[:h], ln[:h], lm[h:]) <= 0.3
    assert mia_efficacy(lm[:h], ln[:h], ln[h:]) >= 0.7
    labels_m, labels_n = (ym[:h], yn[:h], ym[h:]), (ym[:h], yn[:h], yn[h:])
    assert mia_efficacy(lm[:h], ln[:h], lm[h:], labels=labels_m) <= 0.3
    assert mia_efficacy(lm[:h], ln[:h], ln[h:], labels=labels_n) >= 0.7


def test_mia_is_chance_for_a_model_that_saw_nothing() -> None:
    n, d, c = 256, 64, 10
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = _mlp(d, c)
    with torch.no_grad():
        lm, ln = model(torch.randn(n, d, generator=g)), model(torch.randn(n, d, generator=g))
    h, on_members, on_nonmembers = n // 2, [], []
    for seed in range(5):
        a, b = lm[torch.randperm(n, generator=g)], ln[torch.randperm(n, generator=g)]
        on_members.append(mia_efficacy(a[:h], b[:h], a[h:], seed=seed))
        on_nonmembers.append(mia_efficacy(a[:h], b[:h], b[h:], seed=seed))
    assert abs(sum(on_members) / 5 - 0.5) <= 0.2
    assert abs(sum(on_nonmembers) / 5 - 0.5) <= 0.2


# ---------------------------------------------------------------- SVC membership inference (SalUn's MIA-efficacy)


def test_svc_features_hand_computed() -> None:
    """Two rows with p = (0.7, 0.2, 0.1), true labels 0 and 1; natural logarithms."""
    logits = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64).log().repeat(2, 1)
    labels = torch.tensor([0, 1])
    ln = math.log

    def feature(name):
        return svc_features(logits, labels, name)[:, 0].tolist()

    assert feature("confidence") == pytest.approx([0.7, 0.2])
    assert feature("entropy") == pytest.approx([-(0.7 * ln(0.7) + 0.2 * ln(0.2) + 0.1 * ln(0.1))] * 2)
    assert feature("m_entropy") == pytest.approx([-0.3 * ln(0.7) - 0.2 * ln(0.8) - 0.1 * ln(0.9),
                                                  -0.8 * ln(0.2) - 0.7 * ln(0.3) - 0.1 * ln(0.9)])
    assert feature("correctness") == [1.0, 0.0]
    assert svc_features(logits, labels, "prob") == pytest.approx(np.array([[0.7, 0.2, 0.1]] * 2))


def test_svc_modified_entropy_reads_each_rows_own_label_and_stays_finite_when_saturated() -> None:
    """SalUn's m_entropy indexes columns by every label in the set at once; ours must not: a row's value depends
    on its own label only, and a one-hot row (log 0) stays finite."""
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(6, 10, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    alone = [svc_features(logits[i:i + 1], labels[i:i + 1], "m_entropy")[0, 0] for i in range(6)]
    assert svc_features(logits, labels, "m_entropy")[:, 0] == pytest.approx(alone, rel=1e-12)
    saturated = torch.tensor([[100.0, 0.0, 0.0]])
    right, wrong = (svc_features(saturated, torch.tensor([y]), "m_entropy")[0, 0] for y in (0, 1))
    assert math.isfinite(wrong) and 0.0 <= right < 1e-30 < wrong  # certain and right ≈ 0; certain and wrong: huge


def _margin_logits(margins: torch.Tensor, labels: torch.Tensor, c: int = 10) -> torch.Tensor:
    """Logits with the true class `margin` above the other classes (all 0)."""
    return margins.view(-1, 1) * F.one_hot(labels, c).to(torch.float64)


def test_svc_mia_low_for_targets_like_members_and_high_for_targets_like_nonmembers() -> None:
    """Members are classified with a large margin, non-members with a small one: a forget set drawn like the
    members is judged member (efficacy near 0), one drawn like the non-members non-member (near 1)."""
    g = torch.Generator().manual_seed(0)

    def draw(n, mean):
        labels = torch.randint(0, 10, (n,), generator=g)
        return _margin_logits(mean + torch.randn(n, generator=g, dtype=torch.float64), labels), labels

    (lm, ym), (ln_, yn) = draw(400, 8.0), draw(300, 1.0)
    (lf_in, yf_in), (lf_out, yf_out) = draw(200, 8.0), draw(200, 1.0)
    features = ("confidence", "entropy", "m_entropy", "correctness", "prob")
    like_members = svc_mia_efficacies(lm, ln_, lf_in, (ym, yn, yf_in), features=features, shadow_size=250)
    like_nonmembers = svc_mia_efficacies(lm, ln_, lf_out, (ym, yn, yf_out), features=features, shadow_size=250)
    assert list(like_members) == list(features)
    for feature in ("confidence", "entropy", "m_entropy", "prob"):
        assert like_members[feature] <= 0.1 and like_nonmembers[feature] >= 0.9, (feature, like_members,
                                                                                  like_nonmembers)
    # correctness: every member is right, a sixth of the non-members wrong: only wrong targets look unseen
    assert like_members["correctness"] == 0.0 and 0.05 <= like_nonmembers["correctness"] <= 0.3


def test_svc_mia_balances_and_caps_the_shadow_sets(monkeypatch) -> None:
    """The SVC sees n = min(members, non-members, shadow_size) of each side, drawn by the seeded generator."""
    import sklearn.svm  # membership imports SVC from it when it fits an attack

    seen = []

    class Recorder(sklearn.svm.SVC):
        def fit(self, x, y):
            seen.append((len(x), int(y.sum()), int((y == 0).sum()), self.C, self.gamma, self.kernel))
            return super().fit(x, y)

    monkeypatch.setattr(sklearn.svm, "SVC", Recorder)
    g = torch.Generator().manual_seed(3)
    lm, ln_, lt = (torch.randn(n, 10, generator=g) for n in (300, 120, 50))
    labels = tuple(torch.randint(0, 10, (len(x),), generator=g) for x in (lm, ln_, lt))
    svc_mia_efficacies(lm, ln_, lt, labels, features=["confidence", "entropy"], shadow_size=None)
    svc_mia_efficacies(lm, ln_, lt, labels, features=["confidence"], shadow_size=80)
    assert seen == [(240, 120, 120, 3, "auto", "rbf")] * 2 + [(160, 80, 80, 3, "auto", "rbf")]
    first, second = balanced_indices(300, 120, seed=0, cap=80), balanced_indices(300, 120, seed=1, cap=80)
    assert len(set(first[0])) == 80 and not np.array_equal(first[0], second[0])
    assert all(np.array_equal(a, b) for a, b in zip(first, balanced_indices(300, 120, seed=0, cap=80)))


@pytest.mark.parametrize("name, settings, message", [
    ("mia_svc", {"shadow_size": 0}, "metric_settings.mia_svc.shadow_size must be a positive whole number"),
    ("mia_svc", {"shadow_size": "1000"}, "metric_settings.mia_svc.shadow_size must be a positive whole number"),
    ("mia_svc", {"shadow_size": True}, "metric_settings.mia_svc.shadow_size must be a positive whole number"),
    ("mia_svc", {"seed": 0.5}, "metric_settings.mia_svc.seed must be a whole number, got 0.5"),
    ("mia_svc", {"features": "confidence"}, "metric_settings.mia_svc.features must be a list of distinct feature"),
    ("mia_svc", {"features": []}, "metric_settings.mia_svc.features must be a list of distinct feature"),
    ("mia_svc", {"features": ["confidence", "confidence"]}, "must be a list of distinct feature types"),
    ("mia_svc", {"features": ["conf"]}, r"from confidence, entropy, m_entropy, correctness, prob, got \['conf'\]"),
    ("tow", {"shadow_size": -5}, "metric_settings.tow.shadow_size must be a positive whole number"),
    ("tow", {"seed": "0"}, "metric_settings.tow.seed must be a whole number"),
])
def test_svc_attack_settings_are_checked_with_one_sentence(name: str, settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as error:  # the plan's check, before any work
        METRICS.get(name).check({**METRICS.get(name).defaults, **settings})
    assert str(error.value).count(". ") == 0 and str(error.value).endswith(".")


# ---------------------------------------------------------------- ToW


def test_tug_of_war_hand_computed() -> None:
    """ToW = Π (1 − |Δ|): Δ forget 0.02, Δ retain 0.02, Δ test 0.03 → 0.98 · 0.98 · 0.97."""
    assert tug_of_war([(0.02, 0.0), (0.95, 0.97), (0.90, 0.93)]) == pytest.approx(0.98 * 0.98 * 0.97, abs=1e-12)
    assert tug_of_war([(0.4, 0.4), (0.9, 0.9), (0.8, 0.8)]) == 1.0  # the retrained model itself
    assert tug_of_war([(1.0, 0.0), (0.9, 0.9), (0.8, 0.8)]) == 0.0  # nothing forgotten at all
    assert tug_of_war([(0.5, 0.0), (0.5, 1.0)]) == 0.25
    with pytest.raises(ValueError, match="fractions in"):
        tug_of_war([(95.0, 97.0)])  # percentages, as RUM's tables print them, are refused


def test_relearn_that_diverges_stops_at_once_and_counts_the_cap() -> None:
    """Outputs that become non-finite (a NaN accuracy) mid-relearning: the model never comes back, so the run stops
    there and reports the cap, not relearned, diverged, the rest of the curve 0 (a non-finite output classifies
    nothing); before, argmax read NaN rows as class 0."""
    x, y = _separable_problem()
    calls, seen = [], iter([0.0, 0.2, math.nan])
    result = relearn_time(_unlearned_linear(), _sampler(x, y, calls), lambda model: next(seen), 0.95, lr=0.1,
                          max_epochs=6)
    assert (result.epochs, result.relearned, result.diverged) == (6, False, True)
    assert result.curve == [0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0] and calls == [0, 1]
