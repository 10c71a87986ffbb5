"""Reports from a hand-made records.csv: Table 1/2, cost and paper-comparison cells checked one by one (means,
confidence intervals and paired tests against hand-computed values), LaTeX structure, Markdown index, and PNG + PDF
figures written headless."""
from __future__ import annotations

import gzip
import itertools
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file

from unlearnbench.errors import UserError
from unlearnbench.report import (filter_class_heatmap, load_paper_results, select_shared_filters, table1,
                                 write_report)
from unlearnbench.report.stats import holm, signed_rank_p, t_half_width
from unlearnbench.report.names import discovered_cards
from unlearnbench.report.tables import MISSING, Table, methods_table, table2
from unlearnbench.report.figures import load_relevance, relearn_curves, relearn_figure
from unlearnbench.report.formats import LATEX_PACKAGES, latex_text, write_table
from unlearnbench.report.paper import backbone_family, full_dataset_name, paper_value
from unlearnbench.report.records import load_runs
from unlearnbench.store import FAILURE_COLUMNS, RECORD_COLUMNS

FULL, SMALL = "resnet18", "vit_tiny-w0.333-d0.333-p7"
MIB = 2**20
# base values of the per-class metrics; a record's value is base + 0.02 × class + 0.04 × seed, so a seed's mean
# over classes 0, 1 is base + 0.01 + 0.04 × seed and the mean over seeds 0, 1 is base + 0.03 (std 0.04/√2)
BASE = {
    (FULL, "original"): {"acc_retain": 0.95, "acc_forget": 0.95, "zrf": 0.45},
    (FULL, "retrain"): {"acc_retain": 0.90, "acc_forget": 0.0, "zrf": 0.50},
    (FULL, "wfnet"): {"acc_retain": 0.90, "acc_forget": 0.05, "zrf": 0.60, "insertion": 0.70, "deletion": 0.10},
    (SMALL, "original"): {"acc_retain": 0.85, "acc_forget": 0.85},
    (SMALL, "retrain"): {"acc_retain": 0.80, "acc_forget": 0.0},
    (SMALL, "wfnet"): {"acc_retain": 0.70, "acc_forget": 0.0, "insertion": 0.80, "deletion": 0.20},
}
# two-sided 97.5 % quantiles of Student's t with 1, 3 and 9 degrees of freedom (printed tables)
T975 = {1: 12.706204736, 3: 3.182446305, 9: 2.262157163}
# a hand cell's 4 values (2 seeds × 2 classes, in %) are m − 3, m − 1, m + 1, m + 3: SD √(20/3), 95 % half-width
HALF4 = T975[3] * np.sqrt(20 / 3) / 2  # = 4.11
# relearn epochs and relearned flag per (seed, class), resnet18 only (vit: not measured)
RELEARN = {"retrain": {(0, 0): (10, 1), (0, 1): (100, 0), (1, 0): (30, 1), (1, 1): (50, 1)},
           "wfnet": {(0, 0): (100, 0), (0, 1): (100, 0), (1, 0): (20, 1), (1, 1): (100, 0)}}


def hand_records() -> list[dict]:
    """2 backbones × 3 methods × 2 forget classes × 2 seeds on 'mnist', with known values."""
    rows = []
    peak = {(0, 0): 100, (0, 1): 200, (1, 0): 150, (1, 1): 120}  # MiB per (seed, class) of retrain
    for (backbone, method), base in BASE.items():
        for seed in (0, 1):
            def add(c, split: str, metric: str, value: float) -> None:
                rows.append({"dataset": "mnist", "backbone": backbone, "method": method, "params": "{}",
                             "seed": seed, "forget_class": c, "split": split, "metric": metric, "value": value})

            for c in (0, 1):
                for metric, b in base.items():
                    for split in ("train", "test") if metric.startswith("acc") else ("test",):
                        shift = -0.05 if split == "test" and metric.startswith("acc") else 0.0
                        add(c, split, metric, b + shift + 0.02 * c + 0.04 * seed)
                if backbone == FULL and method in RELEARN:
                    epochs, relearned = RELEARN[method][(seed, c)]
                    add(c, "train", "relearn_epochs", epochs)
                    add(c, "train", "relearned", relearned)
                    for epoch in range(epochs + 1):  # the curve stops where the class relearned
                        add(c, "train", f"relearn_curve_{epoch}", epoch / 100)
                if method == "retrain":  # per-class method: one cost row per class
                    add(c, "all", "unlearn_seconds", 2.0 + c + 2 * seed)
                    add(c, "all", "peak_memory_bytes", peak[(seed, c)] * MIB)
                    add(c, "all", "serving_bytes", MIB)
            if method == "wfnet":  # all-class method: one cost row per cell, no forget class
                add(None, "all", "unlearn_seconds", 1.5 + seed)
                add(None, "all", "serving_bytes", 1.5 * MIB)
    return rows


def make_run(folder: Path, relearn_cap: int | None = 100) -> Path:
    """A run folder of hand_records(); its config.yaml records `relearn_cap` (None: no metric settings)."""
    folder.mkdir(parents=True)
    frame = pd.DataFrame(hand_records(), columns=RECORD_COLUMNS)
    frame["forget_class"] = frame["forget_class"].astype("Int64")
    frame["v_torch"], frame["device"] = "2.0", "cpu (test)"
    frame.to_csv(folder / "records.csv", index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "command": "run_bench.py --grid hand", "grid": {"name": "hand", "datasets": [{"name": "mnist"}]},
        "device": "cpu", "versions": {"torch": "2.0"}, "git_commit": "abc1234",
        **({"metric_settings": {"relearn": {"max_epochs": relearn_cap}}} if relearn_cap else {})}))
    (folder / "log.txt").write_text("2026-01-02T03:04:05Z start\n2026-01-02T03:09:05Z finished\n")
    pd.DataFrame([{"dataset": "mnist", "backbone": FULL, "method": "random_labels", "seed": 0, "forget_class": 1,
                   "status": "failed", "reason": "ValueError: boom"}],
                 columns=FAILURE_COLUMNS).to_csv(folder / "failures.csv", index=False)
    gen = torch.Generator().manual_seed(0)
    alphas = {f"features.{i}.alpha_w": torch.randn(2, 16, generator=gen) for i in (0, 2, 10)}
    alphas.update({f"features.{i}.alpha_b": torch.randn(2, 16, generator=gen) for i in (0, 2, 10)})
    (folder / "artifacts" / "wfnet").mkdir(parents=True)
    save_file(alphas, str(folder / "artifacts" / "wfnet" / f"mnist__{FULL}__seed0.safetensors"))
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    return write_report([run])


def read(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report / f"{name}.csv", dtype={"params": str})


def cell(values: pd.DataFrame, backbone: str, method: str, column: str) -> pd.Series:
    rows = values[(values["backbone"] == backbone) & (values["method"] == method) & (values["column"] == column)]
    assert len(rows) == 1, (backbone, method, column)
    return rows.iloc[0]


def test_table1_cells_are_means_over_classes_then_seeds(report):
    values = read(report, "table1")
    assert set(values.loc[values["column"].str.startswith("Acc"), "split"]) == {"train"}
    for backbone, method, column, mean in [(FULL, "original", "Acc_r", 98.0), (FULL, "wfnet", "Acc_r", 93.0),
                                           (FULL, "wfnet", "Acc_f", 8.0), (FULL, "retrain", "ZRF", 53.0),
                                           (SMALL, "wfnet", "Acc_r", 73.0)]:
        row = cell(values, backbone, method, column)
        assert row["mean"] == pytest.approx(mean)
        assert row["std"] == pytest.approx(4 / np.sqrt(2))
        assert (row["seeds"], row["classes"], row["n"]) == (2, 2, 4)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(mean - HALF4), pytest.approx(mean + HALF4))
    # ZRF is measured on the test split only; the train table falls back to it
    assert cell(values, FULL, "wfnet", "ZRF")["split"] == "test"
    # RT: seed means (10+100)/2 = 55 and (30+50)/2 = 40; classes not relearned 1 and 0
    rt, n = cell(values, FULL, "retrain", "RT"), cell(values, FULL, "retrain", "RT n")
    assert rt["mean"] == pytest.approx(47.5) and rt["std"] == pytest.approx(np.std([55, 40], ddof=1))
    rt_half = T975[3] * np.std([10, 100, 30, 50], ddof=1) / 2  # the interval pools the 4 (seed, class) values
    assert rt["ci_high"] - rt["mean"] == pytest.approx(rt_half) and rt["n"] == 4
    assert n["mean"] == pytest.approx(0.5) and n["n"] == 2  # summed within a seed: one value per seed
    assert cell(values, FULL, "wfnet", "RT n")["mean"] == pytest.approx(1.5)
    assert values[(values["backbone"] == SMALL) & values["column"].isin(["ZRF", "RT", "RT n"])].empty

    md = (report / "table1.md").read_text()
    assert "| resnet18 | Original | 98.0 ± 4.1 | 98.0 ± 4.1 | 48.0 ± 4.1 | — |" in md
    assert f"|  | Retrained | 93.0 ± 4.1 | 3.0 ± 4.1 | 53.0 ± 4.1 | 47.5 ± {rt_half:.1f} (0.5) |" in md
    assert "| vit_tiny-w0.333-d0.333-p7 | Original | 88.0 ± 4.1 | 88.0 ± 4.1 | — | — |" in md
    assert "n = 4 unless the cell shows [n=k]" in md and "none can be marked" in md  # 4 pairs: p ≥ 2/16


def test_table1_paired_tests_against_wfnet_and_retrain(report):
    """Acc_r (train, resnet18): original − retrain and original − WF-Net are +5 in all 4 pairs, WF-Net − retrain
    0: exact two-sided p 2/2⁴ = 0.125, 0.125 and 1; Holm over these 3 distinct tests: 0.375, 0.375, 1."""
    values = read(report, "table1")
    original, retrain, wfnet = (cell(values, FULL, m, "Acc_r") for m in ("original", "retrain", "wfnet"))
    assert (original["p_vs_retrain"], original["p_vs_wfnet"]) == (pytest.approx(0.125), pytest.approx(0.125))
    assert (original["p_vs_retrain_holm"], original["p_vs_wfnet_holm"]) == (pytest.approx(0.375),) * 2
    assert wfnet["p_vs_retrain"] == retrain["p_vs_wfnet"] == 1.0
    assert wfnet["p_vs_retrain_holm"] == retrain["p_vs_wfnet_holm"] == 1.0  # one test, counted once
    assert pd.isna(wfnet["p_vs_wfnet"]) and pd.isna(retrain["p_vs_retrain"])  # no test against itself
    # RT: retrain − WF-Net per (seed, class) is −90, 0, +10, −50; the zero drops: W+ = 1 of 3 ranks, p = 2·2/8
    assert cell(values, FULL, "retrain", "RT")["p_vs_wfnet"] == pytest.approx(0.5)
    summary = read(report, "all_metrics")  # the same tests on the same values, in fractions
    row = summary[(summary["backbone"] == FULL) & (summary["method"] == "original") & (summary["split"] == "train")
                  & (summary["metric"] == "acc_retain")].iloc[0]
    assert (row["mean"], row["ci_high"], row["n"]) == (pytest.approx(0.98), pytest.approx(0.98 + HALF4 / 100), 4)
    assert (row["p_vs_retrain"], row["p_vs_retrain_holm"]) == (pytest.approx(0.125), pytest.approx(0.375))
    md = (report / "all_metrics.md").read_text()
    assert "| acc_retain | 0.98 | [0.9389, 1.021] | 4 | 0.028 | 2 | 2 | 0.38 | 0.38 |" in md  # original, train


def significance_records() -> pd.DataFrame:
    """Acc_f (train) on 2 seeds × 5 forget classes, unit k = 5·seed + class: retrain 0.10, WF-Net 0.10 + 0.01(k+1),
    random labels 0.10 ± 0.01(k+1) (+ for even k), original 0.95."""
    rows = []
    for seed, c in itertools.product((0, 1), range(5)):
        k = 5 * seed + c
        for method, value in (("original", 0.95), ("retrain", 0.10), ("wfnet", 0.10 + 0.01 * (k + 1)),
                              ("random_labels", 0.10 + (-1) ** k * 0.01 * (k + 1))):
            rows.append({"dataset": "mnist", "backbone": FULL, "method": method, "params": "{}", "seed": seed,
                         "forget_class": c, "split": "train", "metric": "acc_forget", "value": value})
    return pd.DataFrame(rows).astype({"forget_class": "Int64"})


def exact_signed_rank_p(d) -> float:
    """Two-sided exact Wilcoxon p of distinct nonzero differences `d`, by enumerating all 2^n sign flips."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[np.asarray(d) > 0].sum()
    total = ranks.sum()
    w = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))])
    extreme = min(observed, total - observed)
    return min(1.0, 2 * np.mean(w <= extreme))


def test_significance_marks_and_holm_on_ten_pairs(tmp_path):
    """With 10 pairs a two-sided p can reach 2/2¹⁰. The 5 distinct tests of the column: original–WF-Net,
    retrain–WF-Net, original–retrain (every pair on one side: 2/1024 each), random labels–WF-Net (5 zeros dropped,
    5 negative: 2/32) and random labels–retrain (alternating signs: enumerated). Holm: 5/512 for the three
    smallest, then 2 · 2/32, then the largest unchanged."""
    table = table1(significance_records())
    values = table.values.set_index("method")
    alternating = [(-1) ** k * (k + 1) for k in range(10)]
    p_rl_retrain = exact_signed_rank_p(alternating)
    assert p_rl_retrain > 0.125
    expected = {"original": (1 / 512, 5 / 512, 1 / 512, 5 / 512), "retrain": (1 / 512, 5 / 512, np.nan, np.nan),
                "wfnet": (np.nan, np.nan, 1 / 512, 5 / 512),
                "random_labels": (1 / 16, 1 / 8, p_rl_retrain, p_rl_retrain)}
    for method, p in expected.items():
        got = values.loc[method, ["p_vs_wfnet", "p_vs_wfnet_holm", "p_vs_retrain", "p_vs_retrain_holm"]]
        assert got.to_numpy(float) == pytest.approx(np.array(p), nan_ok=True), method
    shown = table.display[("mnist", "Acc_f")]
    rl = 100 * np.array([0.10 + 0.01 * a for a in alternating])
    assert shown[(FULL, "Original")] == "95.0 ± 0.0†‡"
    assert shown[(FULL, "Retrained")] == "10.0 ± 0.0†"
    assert shown[(FULL, "WF-Net")] == f"15.5 ± {T975[9] * np.std(np.arange(1, 11), ddof=1) / np.sqrt(10):.1f}‡"
    assert shown[(FULL, "Random Labels")] == f"9.5 ± {T975[9] * np.std(rl, ddof=1) / np.sqrt(10):.1f}"
    assert "† / ‡: differs from WF-Net / Retrained" in table.caption and "none can be marked" not in table.caption
    # a failed cell leaves WF-Net 9 values: its n is shown, and it is paired with retrain on those 9 only
    records = significance_records()
    fewer = table1(records[~((records["method"] == "wfnet") & (records["seed"] == 1) & (records["forget_class"] == 4))])
    assert fewer.display.loc[(FULL, "WF-Net"), ("mnist", "Acc_f")].endswith("‡ [n=9]")
    assert fewer.values.set_index("method").loc["wfnet", "p_vs_retrain"] == pytest.approx(2 / 2**9)
    assert "n = 10 unless the cell shows [n=k]" in fewer.caption


def crowded_records(dataset: str, methods: int) -> pd.DataFrame:
    """Acc_f (train) of `methods` methods (original, retrain, WF-Net and plugins) on 1 seed × 3 forget classes."""
    names = ["original", "retrain", "wfnet"] + [f"plugin_{i}" for i in range(methods - 3)]
    return pd.DataFrame([{"dataset": dataset, "backbone": FULL, "method": m, "params": "{}", "seed": 0,
                          "forget_class": c, "split": "train", "metric": "acc_forget", "value": 0.1 * i + 0.01 * c}
                         for i, m in enumerate(names) for c in range(3)]).astype({"forget_class": "Int64"})


def test_the_caption_says_no_cell_can_be_marked_only_where_no_column_could_be():
    """Holm adjusts within a column of one dataset: 15 methods at n = 3 (27 tests, a mark needs 11 pairs) beside 4
    at n = 10 (5 tests, 8 pairs), whose cells are marked; the count of methods over the whole table said 29 tests
    and that none could be marked."""
    table = table1(pd.concat([crowded_records("cifar10", 15), significance_records()], ignore_index=True))
    assert table.display.loc[(FULL, "Original"), ("mnist", "Acc_f")] == "95.0 ± 0.0†‡ [n=10]"
    assert "none can be marked" not in table.caption
    records = significance_records()
    few = records[(records["seed"] == 0) & (records["forget_class"] < 4)]  # n = 4 < 8: no column can mark
    table = table1(pd.concat([crowded_records("cifar10", 15), few], ignore_index=True))
    assert "(k = 5 to 27 here: 8 to 11 pairs), which no column's cells have, so none can be marked" in table.caption
    assert "with 5 tests in a column a mark needs at least 8 pairs" in table1(few).caption
    two = crowded_records("cifar10", 3).query("method != 'wfnet'")  # original against retrain: one test
    assert "with 1 test in a column a mark needs at least 6 pairs" in table1(two).caption  # (was "1 tests")


def test_statistics_against_hand_values():
    assert t_half_width([np.sqrt(20 / 3)], [4])[0] == pytest.approx(HALF4)
    assert np.isnan(t_half_width([0.0], [1])[0])
    for d in ([1.5, -2.5, 3.5, 4.5, -0.5, 6.5], [3, -1, 4, -1.5, 5, 9, 2.5, -6]):
        assert signed_rank_p(np.array(d) + 7.0, np.full(len(d), 7.0)) == pytest.approx(exact_signed_rank_p(d))
    assert signed_rank_p([0.2, 0.3], [0.2, 0.3]) == 1.0 and np.isnan(signed_rank_p([], []))
    # ties and zeros (accuracies of 12 (seed, class) pairs tie often): the sign-flip enumeration equals scipy's
    from scipy import stats

    for d in ([0.25, 0.25, -0.5, 0.0, 0.75, 0.25, -0.25, 0.5, 0.5, 0.0, 1.0, 0.25], [1, 1, 1, -1, 2, 2, 0, 3],
              [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [2, -2, 0, 0]):
        expected = stats.wilcoxon(np.array(d, float) / np.abs(d).max(), zero_method="wilcox", method="auto").pvalue
        assert signed_rank_p(np.array(d) + 7.0, np.full(len(d), 7.0)) == pytest.approx(expected, rel=1e-12)
    rng = np.random.default_rng(0)  # without ties, from 1 to 16 differences (scipy's exact distribution beyond 13)
    for n in range(1, 17):
        d = rng.permutation(np.arange(1, n + 1)) * rng.choice([-1.0, 1.0], n) + rng.uniform(0, 0.4, n)
        expected = stats.wilcoxon(d / np.abs(d).max(), zero_method="wilcox", method="auto").pvalue
        assert signed_rank_p(d + 7.0, np.full(n, 7.0)) == pytest.approx(expected, rel=1e-12), n
    assert holm([0.01, 0.04, np.nan, 0.03]) == pytest.approx([0.03, 0.06, np.nan, 0.06], nan_ok=True)
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])


def test_table1_test_split_and_single_seed(report, tmp_path):
    test = read(report, "table1_test")
    assert cell(test, FULL, "original", "Acc_r")["mean"] == pytest.approx(93.0)
    records = pd.DataFrame(hand_records())
    records = records.assign(forget_class=records["forget_class"].astype("Int64"))
    one_seed = table1(records[records["seed"] == 0])  # 2 classes: n = 2, t with 1 degree of freedom
    assert one_seed.display.loc[(FULL, "WF-Net"), ("mnist", "Acc_r")] == f"91.0 ± {T975[1]:.1f}"
    half = T975[1] * np.std([10, 100], ddof=1) / np.sqrt(2)
    assert one_seed.display.loc[(FULL, "Retrained"), ("mnist", "RT (n)")] == f"55.0 ± {half:.1f} (1)"
    one_value = table1(records[(records["seed"] == 0) & (records["forget_class"] != 1)])
    assert one_value.display.loc[(FULL, "WF-Net"), ("mnist", "Acc_r")] == "90.0"  # n = 1: no interval
    assert "no ± here: no cell has more than one value (n = 1)" in one_value.caption


def test_plugin_methods_and_parameter_sweeps_get_their_own_rows():
    records = pd.DataFrame(hand_records())
    plugin = records[records["method"] == "wfnet"].assign(method="my_plugin")
    sweep = records[records["method"] == "retrain"].assign(params='{"lr": 0.1}')
    frame = pd.concat([records, plugin, sweep], ignore_index=True)
    table = table1(frame.assign(forget_class=frame["forget_class"].astype("Int64")))
    assert list(table.display.loc[FULL].index) == ["Original", "Retrained (lr=0.1)", "Retrained (defaults)",
                                                    "WF-Net", "my_plugin"]
    assert table.display.loc[(FULL, "my_plugin"), ("mnist", "Acc_r")] == "93.0 ± 4.1"


def test_a_sweep_s_figure_legends_name_the_parameters_that_differ_and_fit_beside_the_axes(tmp_path):
    """Two tuned settings of one method (every parameter in its label, ~150 characters each) made the side legend
    as wide as the figure: constrained layout gave up (a UserWarning) and saved the figure with its legend cut off,
    both settings shown as "Retrained". A legend names a setting by the parameters that differ, wrapped."""
    import warnings

    from unlearnbench.report.figures import legend_labels, per_class_bars, save_figure

    records = pd.DataFrame(hand_records())
    records = records[records["backbone"] == FULL]
    common = {"batch_size": 64, "check_every": 1, "optimizer": "sgd", "norm_statistics": "batch", "stop_acc": 0.05}
    sweep = [records[records["method"] == "retrain"].assign(params=json.dumps({**common, **p}, sort_keys=True))
             for p in ({"lr": 0.000832, "mask_ratio": 0.698, "schedule": "phased", "steps": 85},
                       {"lr": 0.132, "mask_ratio": 0.644, "schedule": "mixed", "steps": 16})]
    frame = pd.concat([records[records["method"] != "retrain"], *sweep], ignore_index=True)
    fig = per_class_bars(frame, "test")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"Retrained (lr=0.000832,\n  mask_ratio=0.698,\n  schedule=phased, steps=85)",
            "Retrained (lr=0.132,\n  mask_ratio=0.644,\n  schedule=mixed, steps=16)"} < set(labels)
    assert max(len(line) for label in labels for line in label.splitlines()) <= 40
    defaults_too = pd.concat([records, records[records["method"] == "retrain"].assign(params='{"lr": 0.1}')])
    assert set(legend_labels(defaults_too).values()) == {"Original", "WF-Net", "Retrained (lr=default)",
                                                         "Retrained (lr=0.1)"}  # params "{}": the defaults
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constrained layout's "axes sizes collapsed to zero"
        save_figure(fig, tmp_path, "sweep")


def test_a_side_legend_of_many_wrapped_labels_widens_the_figure_by_their_columns_not_the_axes():
    """The side legend's extra columns are as wide as their longest line: at a fixed 1.7 in a column, 20 wrapped
    settings of one method squeezed a cost figure's axes to 1.1 in (its legend overlapping them)."""
    from unlearnbench.report.figures import cost_vs_classes

    records = pd.DataFrame(hand_records())
    records = records[records["backbone"] == FULL]
    sweep = [records[records["method"] == "retrain"].assign(params=json.dumps(
        {"lr": 0.001 * (k + 1), "mask_ratio": 0.1 * k, "steps": 10 + k, "schedule": "phased" if k % 2 else "mixed"},
        sort_keys=True)) for k in range(20)]
    fig = cost_vs_classes(pd.concat([records[records["method"] != "retrain"], *sweep], ignore_index=True))
    fig.canvas.draw()  # constrained layout places the axes
    assert len(fig.axes[0].get_legend().get_texts()) == 21 and fig.get_size_inches()[0] > 10
    assert fig.axes[0].get_position().width * fig.get_size_inches()[0] > 3.0


def test_a_sweep_s_rows_sort_numbers_as_numbers():
    records = pd.DataFrame(hand_records())
    sweep = [records[records["method"] == "retrain"].assign(params=p)
             for p in ('{"lambda_1": 10}', '{"lambda_1": 2}', '{"lambda_1": 0.5}', '{"lambda_1": "auto"}')]
    frame = pd.concat([records[records["method"] != "retrain"]] + sweep, ignore_index=True)
    table = table1(frame.assign(forget_class=frame["forget_class"].astype("Int64")))
    assert list(table.display.loc[FULL].index) == ["Original", "Retrained (lambda_1=0.5)", "Retrained (lambda_1=2)",
                                                    "Retrained (lambda_1=10)", "Retrained (lambda_1=auto)", "WF-Net"]


def test_a_sweep_s_paper_comparison_rows_sort_numbers_as_numbers():
    """Before: the comparison sorted a sweep's rows by their label's text (lambda_1=10 before lambda_1=2)."""
    from unlearnbench.report.paper import paper_comparison
    from unlearnbench.report.tables import table2

    records = pd.DataFrame(hand_records())
    sweep = [records[records["method"] == "retrain"].assign(params=p)
             for p in ('{"lambda_1": 10}', '{"lambda_1": 2}', '{"lambda_1": 0.5}')]
    frame = pd.concat([records[records["method"] != "retrain"]] + sweep, ignore_index=True)
    frame = frame.assign(forget_class=frame["forget_class"].astype("Int64"))
    values = paper_comparison(table1(frame, "train"), table2(frame), frame).values
    rows = values[(values["backbone"] == FULL) & (values["column"] == "Acc_r") & values["ours"].notna()]
    assert list(rows["method"]) == ["Original", "Retrained (lambda_1=0.5)", "Retrained (lambda_1=2)",
                                    "Retrained (lambda_1=10)", "WF-Net"]


def test_table2_insertion_deletion(report):
    values = read(report, "table2")
    assert set(values["method"]) == {"wfnet"}
    assert cell(values, FULL, "wfnet", "Ins")["mean"] == pytest.approx(0.73)
    assert cell(values, SMALL, "wfnet", "Del")["mean"] == pytest.approx(0.23)
    assert "| resnet18 | WF-Net | 0.73 ± 0.04 | 0.13 ± 0.04 |" in (report / "table2.md").read_text()


def test_table2_adds_the_global_ranking_columns_only_where_they_were_recorded():
    records = pd.DataFrame(hand_records())
    assert list(table2(records).display.columns.get_level_values(1).unique()) == ["Ins", "Del"]
    ranked = records[records["metric"].isin(["insertion", "deletion"])]
    global_ = ranked.assign(metric=ranked["metric"] + "_global", value=ranked["value"] / 2)
    table = table2(pd.concat([records, global_], ignore_index=True))
    assert list(table.display.columns.get_level_values(1).unique()) == ["Ins", "Del", "Ins global", "Del global"]
    assert table.display.loc[(FULL, "WF-Net"), ("mnist", "Ins global")] == "0.36 ± 0.02"
    assert table.display.loc[(FULL, "WF-Net"), ("mnist", "Ins")] == "0.73 ± 0.04"


def test_cost_table_sums_per_class_runs_and_keeps_one_round(report):
    values = read(report, "cost")
    # retrain: per-seed sums 2+3 = 5 and 4+5 = 9 s; peak memory the larger class run: 200 and 150 MiB
    wall = cell(values, FULL, "retrain", "Wall s")
    assert wall["mean"] == pytest.approx(7.0) and wall["std"] == pytest.approx(np.std([5, 9], ddof=1))
    # one value per seed (the sum over its classes): n = 2, and WF-Net's one round is paired with it by seed
    assert wall["n"] == 2 and wall["ci_high"] - 7.0 == pytest.approx(T975[1] * np.std([5, 9], ddof=1) / np.sqrt(2))
    assert wall["p_vs_wfnet"] == pytest.approx(0.5)  # 5 − 1.5 and 9 − 2.5: both positive, p = 2/2²
    assert cell(values, FULL, "retrain", "Peak extra memory MiB")["mean"] == pytest.approx(175.0)
    assert cell(values, FULL, "retrain", "Serving MiB")["mean"] == pytest.approx(2.0)
    assert cell(values, FULL, "wfnet", "Wall s")["mean"] == pytest.approx(2.0)
    assert cell(values, FULL, "wfnet", "Serving MiB")["mean"] == pytest.approx(1.5)
    assert cell(values, FULL, "wfnet", "N_c")["mean"] == 2
    md = (report / "cost.md").read_text()
    assert f"| WF-Net | 2 | 2.0 ± {T975[1] / 2:.1f} | — | — | 1.50 ± 0.00 |" in md  # seconds 1.5, 2.5
    assert "mean over a cell's n seeds (n = 2 unless" in md


def test_cost_table_counts_the_classes_of_a_seed_and_table2_names_its_split():
    """Before: N_c counted the classes of all seeds together (4 here) while each seconds value sums one seed's."""
    from unlearnbench.report.tables import cost_table

    records = pd.DataFrame(hand_records())
    records.loc[records["seed"] == 1, "forget_class"] += 2  # seed 0 forgets classes 0 and 1, seed 1 classes 2 and 3
    records = records.assign(forget_class=records["forget_class"].astype("Int64"))
    assert cell(cost_table(records).values, FULL, "retrain", "N_c")["mean"] == 2
    assert "AUC of the α relevance order on the test split," in table2(records).caption


def test_paper_comparison_differences_and_not_run(report):
    values = read(report, "paper_comparison")

    def pick(method: str, column: str, backbone: str = FULL) -> pd.Series:
        return values[(values["backbone"] == backbone) & (values["method"] == method)
                      & (values["column"] == column)].iloc[0]

    wf = pick("WF-Net", "Acc_r")  # paper: ResNet-18 MNIST WF-Net Acc_r 94.0
    assert (wf["paper"], wf["difference"]) == (pytest.approx(94.0), pytest.approx(-1.0))
    assert (wf["ours_ci_low"], wf["n"]) == (pytest.approx(93.0 - HALF4), 4)
    assert "| Table 1 | mnist | resnet18 | Original | Acc_r | 98.0 ± 4.1 | 4 | 99.6 |" in (
        report / "paper_comparison.md").read_text()
    zrf = pick("Original", "ZRF")  # paper 47.0 on training sets; ours 48.0 on the test split: not compared
    assert pd.isna(zrf["difference"]) and zrf["note"] == "ours: test split; the paper: training sets"
    small = pick("WF-Net", "Acc_r", SMALL)  # paper ViT-T 93.5; ours 73.0
    assert small["difference"] == pytest.approx(-20.5) and small["note"] == "reduced size"
    assert pick("WF-Net", "Ins")["difference"] == pytest.approx(0.73 - 0.79)
    missing = pick("Random Labels", "RT")
    assert missing["note"] == "not run" and pd.isna(missing["ours"]) and missing["paper"] == pytest.approx(15.7)
    # the run relearned up to the paper's 100 epochs: RT is compared (paper ResNet-18 MNIST Retrained 43.6 (0))
    assert pick("Retrained", "RT")["difference"] == pytest.approx(47.5 - 43.6)
    # RT n counts classes never relearned: over this run's 2 forget classes, not the paper's 10, so no difference
    counted = pick("Retrained", "RT n")
    assert pd.isna(counted["difference"]) and "counted over 2 of 10 classes: not comparable" in counted["note"]
    assert "| 2 of 10 classes |" in (report / "paper_comparison.md").read_text()
    from unlearnbench.report.paper import paper_comparison

    records, _ = load_runs([report.parent])
    two_classes = {**load_paper_results(), "classes": {"mnist": 2, "cifar10": 10, "imagenet": 1000}}
    table = paper_comparison(table1(records, "train"), table2(records), records, two_classes)
    compared = table.values
    rn = compared[(compared["backbone"] == FULL) & (compared["method"] == "Retrained") & (compared["column"] == "RT n")]
    assert rn["difference"].item() == pytest.approx(0.5)  # the same count over as many classes as the paper's
    # a mean over seeds shown with its decimal, as Table 1 shows it (it was rounded to a whole class: "+0")
    shown = table.display.xs((FULL, "Retrained", "RT n"), level=("Backbone", "Method", "Value")).iloc[0]
    assert shown["Difference"] == "+0.5" and shown["Ours"].startswith(f"{rn['ours'].item():.1f} ± ")
    assert shown["Paper"] == "0"


def test_paper_comparison_says_not_measured_for_a_method_run_without_the_metric():
    """Before: a method run without relearning had its RT rows noted "not run" and sorted above its other rows."""
    from unlearnbench.report.paper import paper_comparison

    records = pd.DataFrame(hand_records())
    records = records[~((records["method"] == "wfnet") & records["metric"].str.startswith("relearn"))]
    records = records.assign(forget_class=records["forget_class"].astype("Int64"))
    values = paper_comparison(table1(records, "train"), table2(records), records).values
    wf = values[(values["backbone"] == FULL) & (values["method"] == "WF-Net") & (values["table"] == "Table 1")]
    assert list(wf["column"]) == ["Acc_r", "Acc_f", "ZRF", "RT", "RT n"]
    assert list(wf["note"].iloc[3:]) == ["not measured"] * 2 and wf["ours"].iloc[3:].isna().all()


@pytest.mark.parametrize("caps, shown", [((6,), "6"), ((None,), "not recorded")])
def test_paper_comparison_shows_the_relearn_cap_instead_of_an_rt_difference(tmp_path, caps, shown):
    """A run that stopped relearning before the paper's 100 epochs (or does not say where) has no comparable RT:
    the difference cell shows its cap(s), the note says why, and every other value is still compared."""
    runs = [make_run(tmp_path / f"run{i}", relearn_cap=cap) for i, cap in enumerate(caps)]
    out = write_report(runs, tmp_path / "report")
    values = read(out, "paper_comparison")
    rt = values[(values["backbone"] == FULL) & values["column"].isin(["RT", "RT n"]) & values["ours"].notna()]
    assert len(rt) == 4 and rt["difference"].isna().all()  # Retrained and WF-Net, RT and RT n
    assert (rt["note"] == f"relearn cap {shown} epochs, the paper's 100: not comparable").all()
    assert (out / "paper_comparison.md").read_text().count(f"| cap {shown} |") == 4
    wf = values[(values["backbone"] == FULL) & (values["method"] == "WF-Net") & (values["column"] == "Acc_r")]
    assert wf["difference"].item() == pytest.approx(-1.0)
    assert f"RT: relearn epochs (cap: {shown}; a class that never relearns counts the cap)" in (
        out / "table1.md").read_text()


def test_paper_values_and_families():
    paper = load_paper_results()
    assert "2304.02049" in paper["source"]
    assert paper_value(paper, "table1", "imagenet", "vgg16", "original", "ZRF") == pytest.approx(35.0)  # printed 0.35
    assert paper_value(paper, "table1", "cifar10", "vit_small", "wfnet", "RT n") == 8
    assert np.isnan(paper_value(paper, "table1", "imagenet", "vgg16", "retrain", "Acc_r"))
    assert np.isnan(paper_value(paper, "table2", "mnist", "vgg16", "retrain", "Ins"))
    assert backbone_family(SMALL) == "vit_tiny" and backbone_family("resnet18-w0.0625") == "resnet18"
    assert full_dataset_name("mnist-1000perclass") == "mnist" and full_dataset_name("fashion-mnist") == "fashion-mnist"


def check_latex(text: str) -> None:
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", text):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack.pop() == env
    long = "longtable" in text  # the layout of a long table: header, then footers, then the body
    assert not stack and ("tabular" in text or long)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert text.count(rule) >= 1
    assert text.index(r"\toprule") < text.index(r"\midrule") < text.index(r"\bottomrule")
    plain = re.sub(r"(?<!\\)\$[^$]*(?<!\\)\$", "", text)  # drop inline math such as $\pm$
    assert not re.search(r"(?<!\\)[_%#]", plain), "unescaped special character"
    spec = re.search(r"\\begin\{(?:tabular|longtable)\}\{(\w+)\}", text)[1]
    body = (text[text.index(r"\endlastfoot"):text.index(r"\end{longtable}")] if long
            else text[text.index(r"\midrule"):text.index(r"\bottomrule")])
    for line in body.splitlines():
        if line.endswith(r"\\"):
            assert len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1, line


def test_latex_is_structurally_valid(report):
    tex = sorted(report.glob("*.tex"))
    assert {p.stem for p in tex} >= {"table1", "table1_test", "table2", "paper_comparison", "cost", "all_metrics"}
    for path in tex:
        check_latex(path.read_text())
    table = (report / "table1.tex").read_text()
    assert r"vit\_tiny-w0.333-d0.333-p7" in table and r"98.0 $\pm$ 4.1" in table


def test_latex_is_ascii_and_greek_letters_are_math(report):
    for path in sorted(report.glob("*.tex")):
        assert path.read_text().isascii(), path.name
    assert r"$\alpha$" in (report / "table2.tex").read_text()  # the caption's α, which pdflatex would reject raw
    assert latex_text("σ(α) ≤ ℓ1 — Δ") == r"$\sigma$($\alpha$) $\leq$ $\ell$1 -- $\Delta$"
    assert latex_text("Α μ Μ ο") == r"A $\mu$ M o"  # capitals LaTeX has no command for are Latin letters
    assert latex_text("1.0 ± 0.2†‡") == r"1.0 $\pm$ 0.2\dag{}\ddag{}"
    with pytest.raises(UserError, match="No LaTeX form"):
        latex_text("表")


def _latex_packages_missing() -> str | None:
    """Why the LaTeX tables cannot be compiled here, or None when pdflatex with the tables' packages exists."""
    if shutil.which("pdflatex") is None or shutil.which("kpsewhich") is None:
        return "pdflatex is not installed (Debian: texlive-latex-base, texlive-latex-recommended, texlive-latex-extra)"
    packages = [f"{name}.sty" for name in LATEX_PACKAGES.split(",")]
    found = subprocess.run(["kpsewhich", *packages], capture_output=True, text=True).stdout
    if not all(p in found for p in packages):
        return f"one of {LATEX_PACKAGES} is missing (Debian: texlive-latex-recommended, texlive-latex-extra)"
    return None


def compile_latex(path: Path, folder: Path) -> str:
    """pdflatex's log of a document that inputs the table `path` (asserting it compiled)."""
    doc = folder / f"{path.stem}-doc.tex"
    doc.write_text(f"\\documentclass{{article}}\n\\usepackage{{{LATEX_PACKAGES}}}\n"
                   f"\\begin{{document}}\n\\input{{{path}}}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stdout.splitlines() if line.startswith("!")]
    assert done.returncode == 0 and (folder / f"{path.stem}-doc.pdf").exists(), (path.name, errors)
    return (folder / f"{path.stem}-doc.log").read_text(errors="replace")


@pytest.mark.skipif(_latex_packages_missing() is not None, reason=str(_latex_packages_missing()))
def test_every_latex_table_compiles_with_pdflatex(report, tmp_path):
    marked = write_table(table1(significance_records(), name="marked"), tmp_path)["tex"]  # † ‡ in cells and caption
    assert r"\dag{}\ddag{}" in marked.read_text()
    # "p < 0.05" in the caption: a bare < is typeset as ¡ in the default OT1 encoding
    assert r"p \textless{} 0.05" in marked.read_text() and "<" not in marked.read_text()
    for path in sorted(report.glob("*.tex")) + [marked]:
        compile_latex(path, tmp_path)


@pytest.mark.skipif(_latex_packages_missing() is not None, reason=str(_latex_packages_missing()))
def test_a_long_table_breaks_across_pages_and_a_wide_one_fits_the_line(tmp_path):
    index = pd.MultiIndex.from_product(
        [["mnist"], [f"backbone_{i}" for i in range(4)] + ["a}b", "c{d"], [f"method {j}" for j in range(20)]],
        names=["Dataset", "Backbone", "Method"])
    long = pd.DataFrame({"Acc_r": [f"{k}.0 ± 0.1" for k in range(120)]}, index=index)
    wide = pd.DataFrame({f"a rather long column name {k}": ["12.3 ± 4.5"] * 3 for k in range(12)},
                        index=pd.Index(["x", "y", "z"], name="Method"))
    for name, frame in (("long", long), ("wide", wide)):
        path = write_table(Table(name, name, "A caption.", frame.reset_index(), frame), tmp_path)["tex"]
        log = compile_latex(path, tmp_path)
        assert "Float too large" not in log and "Overfull" not in log, name  # no row lost, nothing past the margin
        if name == "long":
            assert r"\begin{longtable}" in path.read_text() and "multirow" not in path.read_text()
            assert re.search(r"Output written on \S+ \(([3-9]|\d\d+) pages", log)  # 120 rows over pages


def pdf_text(pdf: Path) -> str:
    """The text pdflatex's `pdf` shows, one TJ operator a line: its strings, a space where it moves on by more than a
    fifth of an em (a word space; smaller moves are kerns)."""
    shown = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", pdf.read_bytes(), re.S):
        try:
            content = zlib.decompressobj().decompress(stream)
        except zlib.error:
            continue
        for array in re.findall(rb"\[((?:\((?:[^)\\]|\\.)*\)|[^\]])*)\]\s*TJ", content):
            shown.append("".join(string.decode("latin-1") if string else " " * (float(move) < -200)
                                 for string, move in re.findall(rb"\(((?:[^)\\]|\\.)*)\)|(-?[\d.]+)", array)))
    return "\n".join(shown)


@pytest.mark.skipif(_latex_packages_missing() is not None, reason=str(_latex_packages_missing()))
def test_a_wide_long_table_fits_the_line_and_keeps_every_row(tmp_path):
    """A longtable cannot be shrunk: a wide one (a Table 1 of three datasets, a paper comparison with a note) must
    wrap, take a smaller font or split into longtables of column groups, and still show every cell."""
    backbones = ["vit_small-w0.25-d0.333-p8", "resnet18-w0.0625", "vgg16-w0.125"]
    datasets = ["mnist-400perclass-val100perclass", "cifar10-400perclass-val100perclass", "fashion-mnist-400perclass"]
    rows = range(100, 160)  # each cell shows its own number: row.column
    table1_like = pd.DataFrame(
        [[f"{r}.{c:02d} ± 12.5" for c in range(12)] for r in rows],
        index=pd.MultiIndex.from_product([backbones, [f"Method number {k}" for k in range(20)]],
                                         names=["Backbone", "Method"]),
        columns=pd.MultiIndex.from_product([datasets, ["Acc_r", "Acc_f", "ZRF", "RT (n)"]]))
    comparison_like = pd.DataFrame(
        [[f"{r}.00 ± 0.5", f"{r}.01", f"{r}.02", f"+{r}.03",
          f"paper {r}.04: mnist; reduced size; relearn cap 6 epochs, the paper's 100: not comparable"] for r in rows],
        index=pd.MultiIndex.from_product(
            [["Table 1"], datasets[:1], backbones, ["Original", "Random Labels", "Negative Gradients", "SCRUB"],
             ["Acc_r", "Acc_f", "ZRF", "RT", "RT n"]], names=["Table", "Dataset", "Backbone", "Method", "Value"]),
        columns=["Ours", "n", "Paper", "Difference", "Note"])
    for name, frame in (("wide", table1_like), ("comparison", comparison_like)):
        path = write_table(Table(name, name, "A caption.", frame.reset_index(), frame), tmp_path)["tex"]
        compile_latex(path, tmp_path)
        log = compile_latex(path, tmp_path)  # a longtable settles its column widths on the second run
        overfull = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
        assert max(overfull, default=0) <= 2 and "Float too large" not in log, (name, overfull)
        text = pdf_text(tmp_path / f"{name}-doc.pdf")
        missing = [f"{r}.{c:02d}" for r in rows for c in range(frame.shape[1])
                   if not re.search(rf"(?<![\d.]){r}\.{c:02d}(?!\d)", text)]
        assert not missing, (name, missing)
        assert "Table 1:" in text and "Table 2:" not in text  # a continuation keeps the table's number


@pytest.mark.skipif(_latex_packages_missing() is not None, reason=str(_latex_packages_missing()))
def test_a_short_table_too_wide_for_its_text_wraps_it_and_a_wide_table_of_numbers_shrinks(tmp_path):
    """Before: the methods table (a long Paper column) was shrunk by adjustbox to about a quarter of its size."""
    methods = pd.DataFrame({"Paper": [f"Author{i} et al., \"A rather long title of a paper number {i} about "
                                      f"unlearning\", arXiv 2304.0{i:04d}" for i in range(15)],
                            "Venue": ["CVPR 2020"] * 15},
                           index=pd.Index([f"Method {i}" for i in range(15)], name="Method"))
    numbers = pd.DataFrame([[f"{r}.{c:02d} ± 12.5" for c in range(14)] for r in range(15)],
                           columns=[f"Column {c}" for c in range(14)])
    for name, frame, wraps in (("methods", methods, True), ("numbers", numbers, False)):
        path = write_table(Table(name, name, "A caption.", frame.reset_index(), frame), tmp_path)["tex"]
        latex = path.read_text()
        assert ("\\begin{longtable}" in latex) == wraps and ("adjustbox" in latex) != wraps, name
        compile_latex(path, tmp_path)
        log = compile_latex(path, tmp_path)
        overfull = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
        assert max(overfull, default=0) <= 2, (name, overfull)


def test_a_long_table_that_fits_keeps_its_labels_whole_and_writes_a_missing_cell():
    """Before: a long table's outer row labels were always cut to just under their natural width, so they wrapped
    ('CIFAR-10' and 'VGG' on two rows), and a missing (NaN) cell raised TypeError."""
    from unlearnbench.report.formats import to_latex

    frame = pd.DataFrame({"Acc": ["1.0"] * 49 + [None]}, index=pd.MultiIndex.from_product(
        [["CIFAR-10 VGG", "MNIST small"], [f"m{i}" for i in range(25)]], names=["Group", "Method"]))
    latex = to_latex(Table("t", "t", "A caption.", frame.reset_index(), frame))
    assert "\\begin{longtable}" in latex and "CIFAR-10 VGG" in latex and "MNIST small" in latex
    assert "nan" in latex


def test_index_shows_tables_links_figures_and_provenance(report):
    index = (report / "index.md").read_text()
    for text in ("run_bench.py --grid hand", "**hand**", "abc1234", "cpu (test)", "torch 2.0",
                 "2026-01-02T03:04:05Z", "1 failed (reasons in failures.csv)", "[CSV](table1.csv)", "[LaTeX](paper_comparison.tex)",
                 "| resnet18 | Original | 98.0 ± 4.1 |", "figures/heatmap__mnist__resnet18__seed0.png"):
        assert text in index, text
    for link in re.findall(r"\]\(([^)]+)\)", index):
        assert (report / link).is_file(), link


def test_figures_written_as_png_and_pdf(report):
    stems = {p.stem for p in (report / "figures").iterdir()}
    for stem in (f"heatmap__mnist__{FULL}__seed0", f"per_class__mnist__{FULL}", f"relearn__mnist__{FULL}",
                 f"cost__mnist__{FULL}", f"per_class__mnist__{SMALL}"):
        assert stem in stems
        assert (report / "figures" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (report / "figures" / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    assert f"relearn__mnist__{SMALL}" not in stems  # no relearn metric there: skipped, no crash


def test_relearn_curves_are_drawn_carried_to_the_longest_and_kept_out_of_the_tables(report):
    records = pd.DataFrame(hand_records())
    records = records[records["backbone"] == FULL].assign(forget_class=lambda f: f["forget_class"].astype("Int64"))
    curves = relearn_curves(records)
    assert curves.groupby(["method", "seed", "forget_class"])["epoch"].agg(list).map(list(range(101)).__eq__).all()
    stopped = curves[(curves["method"] == "retrain") & (curves["seed"] == 0) & (curves["forget_class"] == 0)]
    assert stopped.set_index("epoch")["value"][[5, 10, 50, 100]].tolist() == pytest.approx([0.05, 0.1, 0.1, 0.1])
    ax = relearn_figure(records).axes[0]
    assert ax.get_title().startswith("Relearn curves")  # not the fallback dots of relearn epochs
    drawn = [len(line.get_xdata()) for line in ax.lines if len(line.get_xdata())]  # (legend handles are empty)
    assert drawn == [101, 101]  # one line per method, over epochs 0…100
    summary = read(report, "all_metrics")
    assert "relearn_epochs" in set(summary["metric"]) and not summary["metric"].str.startswith("relearn_curve").any()


def test_a_relearn_curve_at_0_or_100_percent_is_drawn_inside_the_axes(report):
    """A curve that stays at 0 % (a retrained model that never relearns within the cap) was drawn on the axes'
    bottom edge, under the spine and half clipped: invisible. Both limits leave a margin now."""
    records = pd.DataFrame(hand_records())
    records = records[records["backbone"] == FULL].assign(forget_class=lambda f: f["forget_class"].astype("Int64"))
    curve = records["metric"].str.startswith("relearn_curve")
    records.loc[curve, "value"] = np.where(records.loc[curve, "method"] == "retrain", 0.0, 1.0)
    fig = relearn_figure(records)
    fig.canvas.draw()
    ax = fig.axes[0]
    lines = [line for line in ax.lines if len(line.get_xdata())]
    assert sorted({float(v) for line in lines for v in line.get_ydata()}) == [0.0, 100.0]
    for line in lines:
        y = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))[:, 1]
        margin = line.get_linewidth() * fig.dpi / 72  # the line's full width in pixels, clear of either spine
        assert (y > ax.bbox.y0 + margin).all() and (y < ax.bbox.y1 - margin).all()


def test_shared_filter_selection():
    rel = torch.zeros(3, 12)
    for c, top in enumerate([(0, 1), (1, 2), (2, 3)]):
        rel[c, list(top)] = torch.tensor([0.9, 0.8])
    assert select_shared_filters(rel, top_k=2, min_shared=2) == [1, 2]
    assert select_shared_filters(rel, top_k=2, min_shared=1) == [0, 1, 2, 3]
    assert select_shared_filters(rel, top_k=2, min_shared=3) == []
    assert select_shared_filters(torch.ones(2, 4), top_k=2, min_shared=2) == [0, 1]  # ties: lower index first
    assert select_shared_filters(torch.rand(4, 5), top_k=10, min_shared=4) == [0, 1, 2, 3, 4]  # k capped at C_out


def test_heatmap_caption_states_the_paper_s_selection_rule(report):
    index = (report / "index.md").read_text()
    assert "the filters among the 10 most relevant of at least 2 classes (the paper's Figure 3 rule" in index


def test_heatmap_and_relevance_file(report, tmp_path):
    relevance, classes = load_relevance(report.parent / "artifacts" / "wfnet" / f"mnist__{FULL}__seed0.safetensors")
    assert list(relevance) == ["features.0", "features.2", "features.10"] and classes == ["0", "1"]
    gen = torch.Generator().manual_seed(0)
    alpha = torch.randn(2, 16, generator=gen)
    assert torch.allclose(relevance["features.0"], 1 - torch.sigmoid(alpha.double()))
    fig = filter_class_heatmap(relevance, ["zero", "one"], top_k=3)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["features.0", "features.2", "features.10"]
    fig.savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0


BROKEN_ALPHA = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:50]),
    "class names not JSON": lambda path: save_file({"l.alpha_w": torch.zeros(2, 3)}, str(path), {"classes": "[a"}),
    "alpha_w not classes × filters": lambda path: save_file({"l.alpha_w": torch.zeros(3)}, str(path)),
    "forget classes not its rows": lambda path: save_file({"l.alpha_w": torch.zeros(2, 3)}, str(path),
                                                          {"forget_classes": "[1, 2]"}),
}


@pytest.mark.parametrize("broken", BROKEN_ALPHA)
def test_an_alpha_file_that_cannot_be_drawn_is_one_sentence_naming_it(tmp_path, capsys, broken):
    from unlearnbench.cli import main

    run = make_run(tmp_path / "run")
    alpha = run / "artifacts" / "wfnet" / f"mnist__{FULL}__seed0.safetensors"
    BROKEN_ALPHA[broken](alpha)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {alpha} is not a readable WF-Net α file") and len(err.splitlines()) == 1, err
    if broken == "truncated":  # (once: the same path for every breakage)
        alpha.unlink()  # as the sentence says: the report is then written without that heatmap
        assert main(["report", str(run)]) == 0 and (run / "report" / "index.md").is_file()


def test_the_index_says_how_many_cells_the_latest_run_took_from_the_cache(tmp_path):
    """A cell served from the cache keeps the records of the run that computed it, its seconds and memory
    included; the index said nothing of it, so a cost table of cached cells read as this run's measurements. Each
    run's facts now give its latest run's counts: the run's own report quotes its own (it logs them first), and a
    latest run that did not finish is said so, not given an earlier run's counts."""
    from unlearnbench.grid import load_grid
    from unlearnbench.runner import RunOptions, run

    from conftest import write_grid

    grid = load_grid(str(write_grid(tmp_path, methods=["original"], forget_classes=[0])))
    options = RunOptions(out=tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu", progress=False)
    facts = []
    for _ in range(2):
        result = run(grid, options)
        index = (result.run_dir / "report" / "index.md").read_text()
        facts.append(next(line for line in index.splitlines() if line.startswith("- latest run: ")))
    assert facts[0].startswith("- latest run: 1 cells computed, 0 from cache, 0 failed, 0 skipped (a cell from the "
                               "cache keeps the records of the run that computed it: its seconds and memory")
    assert facts[1].startswith("- latest run: 0 cells computed, 1 from cache, 0 failed, 0 skipped (")
    rows = len(result.records)
    assert f"- records: {rows}\n" in index
    records = result.run_dir / "records.csv"  # cut at a line's end: it reads as a whole, shorter file
    records.write_text("".join(records.read_text().splitlines(keepends=True)[:-1]))
    assert (f"- records: {rows - 1}, **but the latest run wrote {rows}**: records.csv was cut or edited since"
            in (write_report([result.run_dir]) / "index.md").read_text())
    log = result.run_dir / "log.txt"
    planned = next(line for line in log.read_text().splitlines() if " cells to run" in line)
    log.write_text(log.read_text() + planned + "\n")  # a third run planned, then cut short
    assert "- latest run: did not finish (its log has no counts)" in (
        write_report([result.run_dir]) / "index.md").read_text()
    log.write_text("2026-01-02T03:04:05Z start\n")  # a log of neither: nothing said
    assert "- latest run:" not in (write_report([result.run_dir]) / "index.md").read_text()


def test_merging_runs_drops_duplicates_and_needs_out(report, tmp_path):
    run = report.parent
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report", "artifacts"))
    merged, sources = load_runs([run, copy])
    single, _ = load_runs([run])
    assert len(merged) == len(single) and [s.path for s in sources] == [run, copy]
    # one folder named twice, also by another path to it, is one run, where it was last named (before: two runs)
    _, sources = load_runs([copy, run, copy.parent / ".." / copy.parent.name / "copy"])
    assert [s.path for s in sources] == [run, copy.parent / ".." / copy.parent.name / "copy"]
    assert write_report([copy, copy]) == copy / "report"  # one folder: no --out needed
    # a report into a folder another report is writing (a run's own, and `report` on it) is refused, not interleaved
    # (before: each removed the files the other had just written as an earlier report's)
    from unlearnbench.store import RunFolder

    with RunFolder(copy / "report").lock("report"):
        with pytest.raises(UserError, match=f"^Report folder {copy / 'report'} is in use by another report; wait"):
            write_report([copy])
    with pytest.raises(UserError):
        write_report([run, copy])
    out = write_report([run, copy], tmp_path / "merged")
    index = (out / "index.md").read_text()
    assert f"## Run 1: `{run}`" in index and f"## Run 2: `{copy}`" in index
    # says what load_runs keeps (the last folder's value), not "exact duplicates" dropped
    note = f"({len(merged)} records: each value once, the last folder's where several record it (a cell's relearn"
    assert note in index and note.replace("'", "&#x27;") in (out / "index.html").read_text()
    assert "exact duplicates" not in index
    assert read(out, "table1").equals(read(report, "table1"))
    # the same cells from a run at another commit count once (the later folder's), so sums do not double
    records = pd.read_csv(copy / "records.csv")
    records.assign(git_commit="fffffff").to_csv(copy / "records.csv", index=False)
    again, _ = load_runs([run, copy])
    assert len(again) == len(single) and set(again.git_commit) == {"fffffff"}


def test_all_metrics_lists_the_svc_mia_and_tow_rows_by_name():
    """The published-MIA and ToW rows reach the all-metrics table under their own names, averaged over classes."""
    from unlearnbench.report.tables import metrics_summary

    names = ["mia_forget", "mia_svc_confidence", "mia_svc_entropy", "mia_svc_m_entropy", "tow", "tow_mia"]
    records = pd.DataFrame([{"dataset": "mnist", "backbone": FULL, "method": "wfnet", "params": "{}", "seed": 0,
                             "forget_class": c, "split": "train", "metric": name, "value": 0.1 * i + 0.02 * c}
                            for i, name in enumerate(names) for c in (0, 1)])
    summary = metrics_summary(records)
    assert summary.values.set_index("metric")["mean"].to_dict() == pytest.approx(
        {name: 0.1 * i + 0.01 for i, name in enumerate(names)})
    assert set(summary.display.index.get_level_values("Metric")) == set(names)


def test_methods_table_gives_each_methods_paper_retained_data_rounds_and_parameter_source():
    frame = pd.DataFrame(hand_records(), columns=RECORD_COLUMNS)
    extra = [{"dataset": "mnist", "backbone": b, "method": "delete", "params": "{}", "seed": 0, "forget_class": 0,
              "split": "test", "metric": "acc_forget", "value": 0.0} for b in (FULL, SMALL)]
    extra.append({**extra[0], "metric": "tuning_seconds", "split": "all", "value": 12.0})  # tuned on one group
    records = pd.concat([frame, pd.DataFrame(extra, columns=RECORD_COLUMNS)], ignore_index=True)
    cards = {**discovered_cards(), "delete": {**discovered_cards()["delete"], "paper": "From the run's config"}}
    table = methods_table(records, cards)
    shown = table.display
    assert list(shown.index) == ["Original", "Retrained", "WF-Net", "DELETE"]  # the paper's order, then by name
    assert shown.loc["DELETE", "Paper"] == "From the run's config"
    assert shown.loc["DELETE", "Retained data"] == "no" and shown.loc["Retrained", "Retained data"] == "yes"
    assert shown.loc["WF-Net", "One run unlearns"] == "all classes"
    assert shown.loc["DELETE", "One run unlearns"] == "one class"
    assert shown.loc["DELETE", "Parameters"] == "tuned (1 of 2 dataset × backbone)"
    assert shown.loc["WF-Net", "Parameters"] == "defaults / grid"
    assert "2304.02049" in shown.loc["WF-Net", "Paper"] and shown.loc["Original", "Paper"] == "the reference row"


def test_the_report_reads_method_cards_from_the_runs_config(tmp_path):
    run = make_run(tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["methods"] = {"wfnet": {"label": "WF-Net", "paper": "A card the run recorded", "venue": "Somewhere 2030",
                                   "uses_retain": True, "per_class": False}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    index = (write_report([run]) / "index.md").read_text()
    methods = index[index.index("### Methods"):index.index("### Table 1")]
    assert "A card the run recorded" in methods and "Somewhere 2030" in methods
    assert "Retrained" in methods  # a method without a recorded card falls back to the discovered one


def test_a_method_tuned_differently_per_dataset_is_one_row_with_every_datasets_values():
    """Tuned parameters differ between datasets; they are no sweep: one WF-Net row, both datasets' cells filled
    (two rows before, the second unlabelled and each with the other dataset's cells missing)."""
    rows = [{"dataset": ds, "backbone": FULL, "method": "wfnet", "params": params, "seed": 0, "forget_class": c,
             "split": "train", "metric": metric, "value": value}
            for ds, params in (("mnist", '{"lr": 0.1}'), ("cifar10", '{"lr": 0.01}')) for c in (0, 1)
            for metric, value in (("acc_retain", 0.9), ("acc_forget", 0.0))]
    table = table1(pd.DataFrame(rows).astype({"forget_class": "Int64"}), "train")
    assert list(table.display.index) == [(FULL, "WF-Net")]
    assert MISSING not in [table.display.iloc[0][(ds, "Acc_r")] for ds in ("mnist", "cifar10")]


def small_run(folder: Path, rows: list[dict], relearn_cap: int | None = None, failures: list[dict] = ()) -> Path:
    """A run folder of `rows` (records), a config.yaml recording `relearn_cap` (None: none) and `failures`."""
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=RECORD_COLUMNS).astype({"forget_class": "Int64"}).to_csv(folder / "records.csv",
                                                                                         index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump({"grid": {"name": "small"}, **(
        {"metric_settings": {"relearn": {"max_epochs": relearn_cap}}} if relearn_cap else {})}))
    pd.DataFrame(list(failures), columns=FAILURE_COLUMNS).to_csv(folder / "failures.csv", index=False)
    return folder


def class_rows(method: str = "retrain", seeds=(0,), classes=(0, 1, 2), params: str = "{}") -> list[dict]:
    """Per (seed, class): 10 unlearning seconds, accuracies on the train split, 4 relearn epochs, and class 2
    never relearned."""
    rows = []
    for seed, c in itertools.product(seeds, classes):
        for split, metric, value in (("all", "unlearn_seconds", 10.0), ("train", "acc_retain", 0.9),
                                     ("train", "acc_forget", 0.0), ("train", "relearn_epochs", 4.0),
                                     ("train", "relearned", float(c != 2))):
            rows.append({"dataset": "mnist", "backbone": FULL, "method": method, "params": params, "seed": seed,
                         "forget_class": c, "split": split, "metric": metric, "value": value})
    return rows


@pytest.mark.parametrize("caps", [(5, 100), (100, 5), (None, 100), (100, None)])
def test_merged_runs_of_other_relearn_caps_show_the_largest_cap_s_relearn_values(tmp_path, caps):
    """The same cells in two folders whose relearn caps differ (or one recording none): every other value counts
    once (kept twice, each within-seed sum doubled: Wall s 60 for 3 classes × 10 s), and RT is the larger cap's
    in either folder order (before: the mean of both caps' values, 4.5 from 5 and 4, reported as one figure)."""
    from unlearnbench.report.paper import paper_comparison
    from unlearnbench.report.tables import cost_table, relearn_caps

    def rows(cap):  # under cap 5, class 0 and 1 relearn at the cap; class 2 never, and diverges only under 100
        base = [{**r, "value": 5.0} if cap != 100 and r["metric"] == "relearn_epochs" else r for r in class_rows()]
        return base + [{**r, "metric": "relearn_diverged", "value": float(cap == 100 and r["forget_class"] == 2)}
                       for r in base if r["metric"] == "relearned"]

    runs = [small_run(tmp_path / f"run{i}", rows(cap), cap) for i, cap in enumerate(caps)]
    records, _ = load_runs(runs)
    assert cell(cost_table(records).values, FULL, "retrain", "Wall s")["mean"] == pytest.approx(30.0)
    assert relearn_caps(records)[("mnist", FULL, "retrain", "{}")] == (100.0,)
    assert len(records[records["metric"] == "acc_retain"]) == 3 and len(records[records["metric"] == "relearned"]) == 3
    diverged = records[records["metric"] == "relearn_diverged"]  # the larger cap's too, beside its RT
    assert diverged.sort_values("forget_class")["value"].tolist() == [0.0, 0.0, 1.0]
    main = table1(records, "train")
    assert cell(main.values, FULL, "retrain", "RT")["mean"] == pytest.approx(4.0)
    assert cell(main.values, FULL, "retrain", "RT n")["mean"] == 1.0  # class 2, once, though measured under both caps
    assert "RT: relearn epochs (cap: 100; " in main.caption
    rt = paper_comparison(main, table2(records), records).values
    assert rt[(rt["method"] == "Retrained") & (rt["column"] == "RT")]["difference"].notna().all()  # the paper's cap


def curve_rows(method: str, curves: dict[int, list[float]], cap: int) -> list[dict]:
    """Relearn rows on the val split, one class per entry of `curves` (its forget accuracy per epoch): relearned
    where it stopped before `cap`, as relearning ends then."""
    rows = []
    for c, curve in curves.items():
        done = len(curve) - 1 < cap
        values = [("relearn_epochs", float(len(curve) - 1 if done else cap)), ("relearned", float(done))]
        values += [(f"relearn_curve_{e}", v) for e, v in enumerate(curve)]
        rows += [{"dataset": "mnist", "backbone": FULL, "method": method, "params": "{}", "seed": 0,
                  "forget_class": c, "split": "val", "metric": m, "value": v} for m, v in values]
    return rows


def test_a_later_folders_relearn_curve_replaces_an_earlier_ones_whole_and_an_unrelearned_one_stops_at_its_cap(
        tmp_path):
    """Merging runs kept relearn curves value by value: a re-run whose class relearned sooner (epoch 1 here, where
    the earlier run took 3) kept the earlier run's epochs 2 and 3 after its end, and the figure drew the class
    relearned, then dropping to 0.3. Separately, a class that never relearned under a cap of 2 was drawn flat to
    the other cells' cap of 4, epochs it never ran: a cell's curves now end at its cap."""
    early = small_run(tmp_path / "a", curve_rows("retrain", {0: [0.1, 0.2, 0.3, 0.9]}, 4), 4)
    later = small_run(tmp_path / "b", curve_rows("retrain", {0: [0.1, 0.9]}, 4), 4)
    for runs, expected in (([early, later], [0.1, 0.9]), ([later, early], [0.1, 0.2, 0.3, 0.9])):
        records, _ = load_runs(runs)
        kept = records[records["metric"].str.startswith("relearn_curve_")].sort_values("metric")
        assert kept["value"].tolist() == expected
        assert records[records["metric"] == "relearn_epochs"]["value"].tolist() == [len(expected) - 1]

    capped = curve_rows("finetune", {0: [0.1, 0.1, 0.2], 1: [0.5, 0.8]}, 2)  # class 1 relearned at epoch 1
    merged, _ = load_runs([early, small_run(tmp_path / "c", capped, 2)])
    curves = relearn_curves(merged).set_index(["method", "forget_class", "epoch"])["value"]
    assert curves["retrain", 0].tolist() == [0.1, 0.2, 0.3, 0.9]
    assert curves["finetune", 0].tolist() == [0.1, 0.1, 0.2]  # not relearned under cap 2: not drawn past it
    assert curves["finetune", 1].tolist() == [0.5, 0.8, 0.8]  # relearned: carried, to its cap (its mean no jump)
    single = relearn_curves(merged.drop(columns="relearn_max_epochs"))  # records without caps: to the longest
    assert single[single["method"] == "finetune"].groupby("forget_class").size().tolist() == [4, 4]


def test_merging_folders_computed_under_other_settings_is_refused_naming_what_differs(tmp_path):
    """Before, `report A B` pooled one dataset × backbone's values from folders computed on another device type
    or precision, from other files, or under other metric settings (relearning at another learning rate) into one
    column without a word; the runner already refuses to pool them into one folder. So are grids that trained its
    models by other recipes or carved another validation split (an original of 2 epochs was tabled beside methods
    unlearnt from one of 1). Settings that only choose which values are recorded (splits), a relearn cap (kept
    apart, see at_largest_cap), recipe sections for other backbones and other datasets merge."""
    relearn = {"optimizer": "sgd", "lr": 0.01, "max_epochs": 100, "eval_split": "val"}
    base = {"grid": {"name": "small"}, "compute": {"device_type": "cpu", "precision": "float32"},
            "files": {"mnist": {"tree": "/data/a", "train": {"n": 3, "files": "0a"}}},
            "metric_settings": {"relearn": relearn, "zrf": {"seed": 0, "splits": ["test"], "legacy": False},
                                "mia_svc": {"features": ["confidence"], "seed": 0},
                                "insertion_deletion": {"step": 0.05, "ranking": "per_matrix"}}}

    def folder(name: str, rows: list[dict], **changes) -> Path:
        run = small_run(tmp_path / name, rows)
        config = {**base, **changes}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        return run

    # grids that read back: the recipe each trained mnist × resnet18 with and the validation carve are compared
    grid = {"name": "small", "datasets": ["mnist"], "backbones": [FULL], "methods": ["retrain", "finetune"],
            "recipe": {"epochs": 1, "vit": {"epochs": 7}}}
    base["grid"] = grid
    base["tuned_values"] = {f"mnist/{FULL}/finetune": {"lr": 0.1}}
    first = folder("first", class_rows())
    assert len(load_runs([first, folder("vit", class_rows("finetune"), grid={**grid, "recipe": {"epochs": 1}})])[0])
    allowed = {"metric_settings": {  # values recorded apart, extra rows beside the same values, a setting not
        "relearn": {"optimizer": "sgd", "lr": 0.01, "max_epochs": 5, "eval_split": "test", "seed": 0},  # recorded
        "zrf": {"seed": 0, "splits": ["test", "train"], "legacy": True}, "mia": {"seed": 3},
        "mia_svc": {"features": ["confidence", "entropy"], "seed": 0},
        "insertion_deletion": {"step": 0.05, "ranking": "both"}},
        "files": {"mnist": {"tree": "/elsewhere/a", "train": {"n": 3, "files": "0a"}}}}  # the same files, moved
    assert len(load_runs([first, folder("caps", class_rows("finetune"), **allowed)])[0]) == 2 * len(class_rows())
    other_data = [{**r, "dataset": "cifar10"} for r in class_rows()]
    elsewhere = folder("elsewhere", other_data, compute={"device_type": "cuda", "precision": "bfloat16"})
    assert set(load_runs([first, elsewhere])[0]["dataset"]) == {"mnist", "cifar10"}  # no dataset in common
    for name, changes, said in [
        ("gpu", {"compute": {"device_type": "cuda", "precision": "bfloat16"}},
         "device and precision (cpu, float32 against cuda, bfloat16)"),
        ("lr", {"metric_settings": {"relearn": {**relearn, "lr": 0.5}}}, "relearn settings (lr 0.01 against 0.5)"),
        ("tree", {"files": {"mnist": {"tree": "/data/a", "train": {"n": 3, "files": "0b"}}}}, "data files (other"),
        ("global", {"metric_settings": {"insertion_deletion": {"step": 0.05, "ranking": "global"}}},
         "insertion_deletion settings (ranking 'per_matrix' against 'global')"),
        ("epochs", {"grid": {**grid, "recipe": {"epochs": 2}}}, "training recipes (epochs 1 against 2)"),
        ("carve", {"grid": {**grid, "val_fraction": 0.5}}, "validation carves (val_fraction 0.1 against 0.5)"),
        ("retuned", {"tuned_values": {f"mnist/{FULL}/finetune": {"lr": 0.5}}},
         "tuned parameters of finetune (tuned again between the runs)"),
        ("norm", {"grid": {**grid, "backbones": [{"name": FULL, "mean": [0.5] * 3, "std": [0.5] * 3}]}},
         "input normalisations (mean, std (None, None) against ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))"),
    ]:
        with pytest.raises(UserError) as exc:
            load_runs([first, folder(name, class_rows("finetune"), **changes)])
        assert str(exc.value).startswith(f"{first} and {tmp_path / name} hold results of mnist / {FULL} computed "
                                         f"under other {said}")
        assert str(exc.value).endswith("report them separately.") and "\n" not in str(exc.value)


def test_a_validation_split_taken_from_the_test_images_merges_whatever_the_val_fraction():
    """`val_from: test` (the paper grid's ImageNet) carves nothing from the training images: another val_fraction
    trained the same models."""
    from unlearnbench.grid import parse_grid
    from unlearnbench.report.records import training_differences, training_setups

    grid = {"name": "p", "datasets": [{"name": "imagenet", "test_per_class": 5, "val_from": "test"}, "mnist"],
            "backbones": ["resnet18"], "methods": ["original", "wfnet"]}
    label = parse_grid(grid).datasets[0].label
    setups = [training_setups({"grid": {**grid, "val_fraction": f}}) for f in (0.1, 0.2)]
    assert training_differences(*(s[label, "resnet18"] for s in setups)) == []
    assert training_differences(*(s["mnist", "resnet18"] for s in setups)) == [
        "validation carves (val_fraction 0.1 against 0.2)"]


def test_cells_measured_under_different_relearn_caps_keep_their_own(tmp_path):
    """Merged runs of other cells under other caps: each keeps its values and the caption lists both caps."""
    from unlearnbench.report.tables import relearn_caps

    runs = [small_run(tmp_path / "run0", class_rows(), 5), small_run(tmp_path / "run1", class_rows("finetune"), 100)]
    records, _ = load_runs(runs)
    assert relearn_caps(records) == {("mnist", FULL, "finetune", "{}"): (100.0,),
                                     ("mnist", FULL, "retrain", "{}"): (5.0,)}
    assert "RT: relearn epochs (caps: 5, 100 by cell; " in table1(records, "train").caption
    on_val = [{**r, "split": "val"} for r in class_rows()]  # relearning read on another split: its own values
    records, _ = load_runs([small_run(tmp_path / "run2", class_rows(), 5), small_run(tmp_path / "run3", on_val, 100)])
    relearn = records[records["metric"] == "relearn_epochs"]
    assert sorted(relearn.groupby("split")["relearn_max_epochs"].unique().map(list).tolist()) == [[5.0], [100.0]]


def test_a_class_recorded_twice_in_a_seed_counts_once_in_the_spread_over_seeds():
    """Before: the SD over seeds weighted a class listed twice in a seed twice (0.118 here, for seeds whose
    classes agree), while the mean and interval already counted it once."""
    from unlearnbench.report.tables import seed_stats

    rows = pd.DataFrame([{"method": "m", "seed": s, "forget_class": c, "value": v}
                         for s, c, v in ((0, 0, 0.0), (0, 0, 0.0), (0, 1, 1.0), (1, 0, 0.0), (1, 1, 1.0))])
    stats = seed_stats(rows, ["method"]).iloc[0]
    assert (stats["mean"], stats["n"], stats["std"], stats["classes"]) == (0.5, 4, 0.0, 2)


def test_a_run_folder_whose_records_are_gzipped_as_reports_keep_them_is_read(tmp_path):
    """Before: `run_bench.py report reports/smoke-cpu/methods-all` said "No records.csv in …"."""
    run = small_run(tmp_path / "run", class_rows(), 100)
    plain, _ = load_runs([run])
    (run / "records.csv.gz").write_bytes(gzip.compress((run / "records.csv").read_bytes()))
    (run / "records.csv").unlink()
    pd.testing.assert_frame_equal(load_runs([run])[0], plain)
    text = gzip.decompress((run / "records.csv.gz").read_bytes()).decode().replace(",0.9\n", ",oops\n", 1)
    (run / "records.csv.gz").write_bytes(gzip.compress(text.encode()))
    with pytest.raises(UserError, match=r"records.csv.gz line 3: value 'oops' of metric acc_retain is not a number"):
        load_runs([run])


def test_a_cell_that_failed_in_the_latest_run_is_left_out_and_the_index_says_so(tmp_path):
    """A re-run into a folder recomputed a cell and it failed: records.csv keeps the earlier run's records, but
    the report no longer shows them as current results (a per-class cell: its class's rows; a one-round cell, whose
    rows name every class: all of them) and its index says so."""
    one_round = [{**r, "method": "wfnet"} for r in class_rows()]
    one_round.append({**one_round[0], "forget_class": None, "metric": "serving_bytes", "value": 1.0})
    failed = {"dataset": "mnist", "backbone": FULL, "params": "{}", "seed": 0, "status": "failed", "reason": "boom"}
    run = small_run(tmp_path / "run", class_rows() + one_round, 100, [
        {**failed, "method": "retrain", "forget_class": 1}, {**failed, "method": "wfnet", "forget_class": None},
        {**failed, "method": "retrain", "forget_class": 1, "seed": 1}])  # a cell without records: nothing to leave
    records, sources = load_runs([run])
    assert sorted(records[records["method"] == "retrain"]["forget_class"].unique()) == [0, 2]
    assert "wfnet" not in set(records["method"])
    assert sources[0].failed_with_records == 2 and len(pd.read_csv(run / "records.csv")) == 2 * 15 + 1
    index = (write_report([run]) / "index.md").read_text()
    assert ("- left out: 2 cells that failed in the latest run into this folder; their earlier records stay in "
            "records.csv but are not reported as current results") in index
    assert "| Retrained | 2 | 20.0 |" in (run / "report" / "cost.md").read_text()


def test_a_report_written_again_removes_the_tables_and_figures_its_records_no_longer_give(tmp_path):
    """Before: a table or figure without data this time kept the earlier report's files, whose numbers contradicted
    the index ('No records for this table'); a file of the user's own in the folder stays."""
    run = small_run(tmp_path / "run", class_rows(), 100)
    out = write_report([run])
    assert (out / "table1.csv").is_file() and list((out / "figures").glob("*.png"))
    (out / "notes.txt").write_text("mine")
    failed = [{"dataset": "mnist", "backbone": FULL, "method": "retrain", "params": "{}", "seed": 0,
               "forget_class": c, "status": "failed", "reason": "boom"} for c in (0, 1, 2)]
    pd.DataFrame(failed, columns=FAILURE_COLUMNS).to_csv(run / "failures.csv", index=False)  # a rerun failed them
    write_report([run])
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == [".lock", ".report-files", "index.html", "index.md", "notes.txt"], left  # (.lock: one writer)
    assert "No records for this table" in (out / "index.md").read_text()


def test_a_hand_edited_manifest_removes_nothing_outside_the_report_folder_nor_a_folder_nor_this_reports_files(
        tmp_path):
    from unlearnbench.report.build import MANIFEST, _remove_stale

    report, outside = tmp_path / "report", tmp_path / "outside.txt"
    outside.write_text("mine")
    (report / "figures").mkdir(parents=True)
    (report / "figures" / "old.png").write_text("x")  # an earlier report's: removed
    (report / "table9.csv").mkdir()
    (report / "table1.csv").write_text("t")
    (report / "Table1.csv").write_text("T")  # on a case-insensitive disk the very file this report wrote
    (report / MANIFEST).write_text(f"figures/old.png\n{outside}\n../outside.txt\ntable9.csv\nTable1.csv\n")
    _remove_stale(report, [report / "table1.csv"])
    assert not (report / "figures" / "old.png").exists() and outside.read_text() == "mine"
    assert (report / "table9.csv").is_dir() and (report / "table1.csv").read_text() == "t"
    assert (report / "Table1.csv").read_text() == "T"
    assert (report / MANIFEST).read_text() == "table1.csv\n"


def test_a_method_is_named_by_the_label_its_run_recorded_though_this_process_cannot_find_it(tmp_path):
    """A plugin method reported without its --plugins folder: its label came from discovery alone, so the
    tables named it by its code name."""
    run = small_run(tmp_path / "run", class_rows(method="my_method"), 100)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["methods"] = {"my_method": {"label": "My Method", "paper": "", "venue": "", "uses_retain": True,
                                       "per_class": True}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    out = write_report([run])
    for table in ("table1", "cost", "methods"):
        assert "| My Method |" in (out / f"{table}.md").read_text(), table
    assert "my_method" not in (out / "table1.md").read_text()


def test_paper_comparison_compares_accuracies_only_on_the_paper_s_training_split(tmp_path):
    """A run with test-split accuracies only: its Acc_r/Acc_f are shown beside the paper's training-set values with
    no difference, and the note says which split each is (before: a difference and an empty note)."""
    from unlearnbench.report.paper import paper_comparison

    rows = [r for r in hand_records() if r["split"] != "train" or not r["metric"].startswith("acc")]
    records = pd.DataFrame(rows).astype({"forget_class": "Int64"}).assign(relearn_max_epochs=100.0)
    table = paper_comparison(table1(records, "test"), table2(records), records)
    values, display = table.values, table.display

    def pick(frame, backbone, method, column):
        return frame[(frame["backbone"] == backbone) & (frame["method"] == method) & (frame["column"] == column)]

    for column in ("Acc_r", "Acc_f"):
        row = pick(values, FULL, "WF-Net", column)
        assert row["difference"].isna().all() and row["paper"].notna().all(), column
        assert row["note"].item() == "ours: test split; the paper: training sets"
        assert display.loc[("Table 1", "mnist", FULL, "WF-Net", column), "Difference"] == MISSING
    assert pick(values, SMALL, "WF-Net", "Acc_r")["note"].item() == (
        "reduced size; ours: test split; the paper: training sets")
    assert pick(values, FULL, "Retrained", "RT")["difference"].item() == pytest.approx(47.5 - 43.6)  # still compared
    assert "compared only where this run measured them on the training split" in table.caption


def test_a_seed_whose_total_lacks_a_class_is_flagged(tmp_path):
    """Summed cells (cost seconds, RT's count of classes not relearned) where a seed lacks a class (its cell
    failed) have a smaller total: flagged [k of N classes], with the legend in the caption."""
    from unlearnbench.report.tables import cost_table

    rows = [r for r in class_rows(seeds=(0, 1)) if (r["seed"], r["forget_class"]) != (1, 2)]
    rows += class_rows("random_labels", seeds=(0, 1))
    records = pd.DataFrame(rows).astype({"forget_class": "Int64"})
    cost = cost_table(records)
    assert cost.display.loc[("mnist", FULL, "Retrained"), "Wall s"] == "25.0 ± 63.5 [2 of 3 classes]"
    assert cost.display.loc[("mnist", FULL, "Random Labels"), "Wall s"] == "30.0 ± 0.0"
    assert "[k of N classes]: a seed's total covers only k of the N forget classes" in cost.caption
    main = table1(records, "train")
    assert main.display.loc[(FULL, "Retrained"), ("mnist", "RT (n)")].endswith("(0.5 [2 of 3 classes])")
    assert main.display.loc[(FULL, "Random Labels"), ("mnist", "RT (n)")].endswith("(1)")
    assert "[k of N classes]" in main.caption

    # one seed, or the same class failed in every seed: flagged against the other methods of the dataset × backbone
    # (before: only against another seed of the same cell, so nothing was flagged)
    rows = [r for r in class_rows(seeds=(0,)) if r["forget_class"] != 2] + class_rows("random_labels", seeds=(0,))
    rows += [{**r, "method": "wfnet", "forget_class": None} for r in class_rows(seeds=(0,), classes=(0,))
             if r["metric"] == "unlearn_seconds"]  # a one-round method's cost: over no class, never flagged
    records = pd.DataFrame(rows).astype({"forget_class": "Int64"})
    cost = cost_table(records)
    assert cost.display.loc[("mnist", FULL, "Retrained"), "Wall s"] == "20.0 [2 of 3 classes]"
    assert cost.display.loc[("mnist", FULL, "WF-Net"), "Wall s"] == "10.0"
    assert "[k of N classes]" in cost.caption
    assert table1(records, "train").display.loc[(FULL, "Retrained"), ("mnist", "RT (n)")].endswith(
        "(0 [2 of 3 classes])")


def test_wfnet_alpha_heatmaps_of_a_sweep_and_of_merged_runs_do_not_overwrite_one_another(tmp_path):
    """Each α file gets its own figure, named by its setting in a sweep and by its run folder in a merged report
    (before, a sweep's artifacts and two folders' same-named files were all drawn to one figure name)."""
    from unlearnbench.discovery import discover
    from unlearnbench.grid import expand
    from unlearnbench.grid import load_grid
    from unlearnbench.report.names import params_tag
    from unlearnbench.runner import _collect_artifacts

    from conftest import write_grid

    grid = load_grid(str(write_grid(tmp_path, methods=[{"name": "wfnet", "params": {"lr": [0.1, 0.3]}}])))
    cells = expand(grid, discover()[0], {"mnist5k": 10})  # lr 0.3 is WF-Net's default
    swept = next(c for c in cells if c.params_dict["lr"] == 0.1)
    gen = torch.Generator().manual_seed(0)
    for i, c in enumerate(cells):
        save_file({f"features.{k}.alpha_{w}": torch.randn(2, 16, generator=gen) for w in "wb" for k in (0, 2, 10)},
                  str(tmp_path / f"{i}.safetensors"))

    class Cache:
        def artifact_path(self, key: str) -> Path:
            return tmp_path / f"{key}.safetensors"

    run = tmp_path / "run"
    _collect_artifacts(cells, {c: str(i) for i, c in enumerate(cells)}, Cache(), run, discover()[0])
    stem = "mnist5k__vgg16-w0.0625__seed0"
    assert sorted(p.name for p in (run / "artifacts" / "wfnet").iterdir()) == sorted(
        [f"{stem}.safetensors", f"{stem}{params_tag(swept.params_json)}.safetensors"])
    rows = [{"dataset": "mnist5k", "backbone": "vgg16-w0.0625", "method": "wfnet", "params": c.params_json, "seed": 0,
             "forget_class": k, "split": "train", "metric": "acc_retain", "value": 0.9} for c in cells for k in (0, 1)]
    pd.DataFrame(rows, columns=RECORD_COLUMNS).to_csv(run / "records.csv", index=False)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    index = (write_report([run, copy], tmp_path / "report") / "index.md").read_text()
    heatmaps = sorted(p.stem for p in (tmp_path / "report" / "figures").glob("heatmap__*.png"))
    assert len(heatmaps) == 4 and all(s.startswith(("heatmap__run1__", "heatmap__run2__")) for s in heatmaps)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(swept.params_dict.items()))
    assert f"WF-Net α, run 2, {stem} ({shown}): per layer" in index
    assert f"WF-Net α, run 1, {stem}: per layer" in index
    # one setting, tuned or set in the grid (not the defaults), is no sweep: its file keeps the plain name
    single = [c for c in cells if c is swept]
    _collect_artifacts(single, {swept: "0"}, Cache(), tmp_path / "single", discover()[0])
    assert [p.name for p in (tmp_path / "single" / "artifacts" / "wfnet").iterdir()] == [f"{stem}.safetensors"]


def test_the_heatmap_draws_only_the_classes_wfnet_unlearnt(tmp_path, shared_cache):
    """A WF-Net round over classes 1 and 4 of ten leaves the other eight α rows at their initial value (no gradient
    reaches them): drawn, their tied top 10 (filters #0…#9) made those filters 'shared by ≥ 2 classes' in every
    layer. The cell's α file names the classes it unlearnt and the heatmap draws those rows only; a file written
    before that metadata keeps the rows that moved."""
    from safetensors.torch import load_file

    from unlearnbench.grid import load_grid
    from unlearnbench.runner import RunOptions, run

    from conftest import write_grid

    grid = load_grid(str(write_grid(tmp_path, methods=["original", {"name": "wfnet", "params": {"max_steps": 4}}],
                                    forget_classes=[1, 4])))
    result = run(grid, RunOptions(out=tmp_path / "run", cache_dir=shared_cache, device="cpu", progress=False))
    assert not result.failures
    path = tmp_path / "run" / "artifacts" / "wfnet" / "mnist5k__vgg16-w0.0625__seed0.safetensors"
    relevance, labels = load_relevance(path)
    assert labels == ["1", "4"] and all(r.shape[0] == 2 for r in relevance.values())
    alphas = load_file(str(path))
    layer = next(iter(relevance))
    assert torch.equal(relevance[layer], 1 - torch.sigmoid(alphas[f"{layer}.alpha_w"].double())[[1, 4]])
    untrained = alphas[f"{layer}.alpha_w"][[0, 2, 3, 5, 6, 7, 8, 9]]
    assert (untrained == untrained.flatten()[0]).all()  # one value: the tie that made #0…#9 look shared
    save_file(alphas, str(tmp_path / "before.safetensors"))  # as written before the metadata
    legacy, legacy_labels = load_relevance(tmp_path / "before.safetensors")
    assert legacy_labels == ["1", "4"] and all(torch.equal(legacy[k], relevance[k]) for k in relevance)
    fig = filter_class_heatmap(relevance, labels)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["1", "4"]


# inside a value, inside a field before it, inside the row's first field (the row is then no record at all)
@pytest.mark.parametrize("cut", ["acc_retain,0.9", "acc_ret", "\nmn"])
def test_a_records_file_cut_short_in_a_row_is_refused_naming_the_line(tmp_path, cut):
    """Before: a records.csv cut inside its last row loaded, the cut value as a shorter number (0.9 of 0.9123) or the
    row with its metric's name cut and no value, and went into the tables and a rerun's records."""
    from unlearnbench.report.records import read_records

    rows = [{"dataset": "mnist", "backbone": FULL, "method": "wfnet", "params": "{}", "seed": 0, "forget_class": c,
             "split": "test", "metric": "acc_retain", "value": 0.9123, "device": "cpu", "git_commit": "abc1234"}
            for c in (1, 2)]  # provenance columns after the value, as a run writes them
    path = tmp_path / "records.csv"
    pd.DataFrame(rows, columns=RECORD_COLUMNS + ["device", "git_commit"]).to_csv(path, index=False)
    assert len(read_records(path)) == 2  # whole: loads
    text = path.read_text()
    path.write_text(text[:text.rindex(cut) + len(cut)])  # the last row, line 3, cut short
    with pytest.raises(UserError, match=r"records.csv ends in the middle of line 3: the file was cut short; "
                                         r"remove that line"):
        read_records(path)
    gz = tmp_path / "records.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))  # as reports/ keep them
    with pytest.raises(UserError, match="ends in the middle of line 3"):
        read_records(gz)
    path.write_text(text.rstrip("\n"))  # a whole last row whose newline an editor dropped
    assert len(read_records(path)) == 2
    body = text.splitlines(keepends=True)
    big = body[:1] + body[1:2] * 1500 + body[2:]  # over the 64 KiB tail the check reads of a plain file
    path.write_text("".join(big)[:-len("abc1234\n") - 3])  # cut in the last row's device field
    with pytest.raises(UserError, match="ends in the middle of line 1502:"):
        read_records(path)


def test_a_value_that_is_not_a_number_is_one_sentence_naming_its_line_and_metric(tmp_path, capsys):
    """An edited records.csv whose value is no number is refused, not silently dropped from the tables; the empty
    value (NaN) and inf that the writer itself produces still load."""
    from unlearnbench.cli import main
    from unlearnbench.report.records import read_records

    rows = [{"dataset": "mnist", "backbone": FULL, "method": "wfnet", "params": "{}", "seed": 0, "forget_class": c,
             "split": "test", "metric": metric, "value": value}
            for c, metric, value in ((1, "acc_retain", 0.9), (1, "acc_forget", float("nan")), (2, "acc_forget", np.inf))]
    run = tmp_path / "run"
    run.mkdir()
    frame = pd.DataFrame(rows, columns=RECORD_COLUMNS).astype({"forget_class": "Int64"})
    frame.to_csv(run / "records.csv", index=False)
    loaded = read_records(run / "records.csv")
    assert loaded["value"].iloc[0] == 0.9 and np.isnan(loaded["value"].iloc[1]) and loaded["value"].iloc[2] == np.inf
    text = (run / "records.csv").read_text().splitlines()
    text[3] = text[3].replace(",inf", ",abc")  # line 4: the third row, class 2's acc_forget
    (run / "records.csv").write_text("\n".join(text[:2] + [""] + text[2:]) + "\n")  # a blank line 3 pandas skips
    with pytest.raises(UserError) as refused:
        read_records(run / "records.csv")
    assert str(refused.value) == (f"{run / 'records.csv'} line 5: value 'abc' of metric acc_forget is not a number; "
                                  f"fix or remove the row.")
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 5: value 'abc' of metric acc_forget is not a number" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "report").exists()


def test_runs_whose_images_were_decoded_by_another_decoder_are_told_apart_from_other_files():
    from unlearnbench.store import config_differences

    files = {"train": {"n": 3}, "test": {"n": 1}}
    a = {"files": {"d": {**files, "decoder": "x"}}}
    assert config_differences(a, {"files": {"d": {**files, "decoder": "y"}}}, "d") == [
        "image decoder (the decoding code, or Pillow's or torchvision's version)"]
    assert config_differences(a, {"files": {"d": files}}, "d")[0].startswith("image decoder")  # before it was kept
    assert config_differences(a, {"files": {"d": {**files, "train": {"n": 4}, "decoder": "x"}}}, "d") == [
        "data files (other images, or their files changed between the runs)"]
