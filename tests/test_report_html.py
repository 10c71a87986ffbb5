"""The self-contained index.html (tables sortable and filterable, figures inline) and the method-profile figure,
on the hand-made run of test_report; the page is opened in headless Chromium where it is installed."""
from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from test_report import FULL, SMALL, hand_records, report  # noqa: F401  (fixture)
from unlearnbench.report.figures import method_profiles, profile_figure
from unlearnbench.report.html import table_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_index_html_is_self_contained_and_holds_every_table_and_figure(report):
    page = (report / "index.html").read_text()
    figures = sorted((report / "figures").glob("*.png"))
    assert page.count('<img src="data:image/png;base64,') == len(figures) > 0
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing fetched from a network
    assert page.count('<table class="sortable">') == len(list(report.glob("*.md"))) - 1  # all but index.md
    assert '<tr data-method="WF-Net">' in page and 'id="method-filter"' in page
    assert "run_bench.py --grid hand" in page and "abc1234" in page


def test_html_tables_repeat_the_key_columns_so_a_sort_keeps_rows_whole():
    frame = pd.DataFrame([["95.0", "1.0"], ["90.0", "0.0"]], columns=pd.MultiIndex.from_tuples(
        [("mnist", "Acc_r"), ("mnist", "Acc_f")]), index=pd.MultiIndex.from_tuples(
        [("resnet18", "Original"), ("resnet18", "WF-Net <b>")], names=["Backbone", "Method"]))
    html = table_html(frame)
    assert html.count('<td class="key">resnet18</td>') == 2 and "<th>mnist · Acc_r</th>" in html
    assert '<tr data-method="WF-Net &lt;b&gt;">' in html  # escaped


def test_method_profiles_put_the_original_at_0_and_retraining_at_1():
    records = pd.DataFrame(hand_records())
    full = method_profiles(records[records["backbone"] == FULL])
    assert list(full.columns) == ["Acc_r", "Acc_f", "ZRF"]  # RT: the original has none
    assert full.loc["Original"].tolist() == [0.0, 0.0, 0.0] and full.loc["Retrained"].tolist() == [1.0, 1.0, 1.0]
    # WF-Net on the test split: Acc_r 0.90 (original 0.95, retrained 0.90), Acc_f 0.05 (0.95, 0.0), ZRF 0.60 (0.45, 0.50)
    assert full.loc["WF-Net"].tolist() == pytest.approx([1.0, 0.9 / 0.95, 3.0])
    assert profile_figure(records[records["backbone"] == SMALL]) is not None  # Acc_r and Acc_f only
    assert method_profiles(records[records["method"] != "retrain"]).empty
    costs_only = records[(records["method"] != "retrain") | (records["metric"] == "unlearn_seconds")]
    assert method_profiles(costs_only[costs_only["backbone"] == FULL]).empty  # (a KeyError: 'Retrained' before)
    assert profile_figure(costs_only[costs_only["backbone"] == FULL]) is None


def test_the_profile_figure_names_the_split_each_metric_is_read_from():
    records = pd.DataFrame(hand_records())
    full = records[records["backbone"] == FULL]
    mia = full[full["metric"] == "zrf"].assign(split="train", metric="mia_forget")  # MIA is recorded on train
    ax = profile_figure(pd.concat([full, mia])).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Acc_r\n(test)", "Acc_f\n(test)", "ZRF\n(test)",
                                                            "MIA\n(train)"]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to open the page in (Debian: the chromium package)")
def test_the_page_loads_in_headless_chromium_with_no_console_error_and_every_figure_resolves(report):
    done = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=10000", "--dump-dom", (report / "index.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert done.returncode == 0 and not console, console
    figures = len(list((report / "figures").glob("*.png")))
    assert f'<body data-images="loaded {figures}">' in done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to open the page in (Debian: the chromium package)")
def test_the_address_sorts_a_table_and_filters_the_methods_in_the_browser(report):
    # each part of the filter taken literally, case and spaces aside (before, a regular expression: "(mixed)" was a
    # group, and an unclosed "(" filtered nothing); table 1 is Table 1 (0: the methods)
    url = (report / "index.html").as_uri() + "#filter=wf-net%20|%20Retrained|(mixed|.*&sort=1:2"
    done = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120)
    dom = done.stdout
    shown = re.findall(r'<tr data-method="([^"]+)">', dom)
    hidden = re.findall(r'<tr data-method="([^"]+)" hidden="">', dom)
    assert set(shown) == {"WF-Net", "Retrained"} and "Original" in hidden
    first = dom.split('<table class="sortable">')[2]  # the second table
    first = first[:first.index("</table>")]
    column = [re.findall(r"<td[^>]*>(.*?)</td>", row)[2] for row in re.findall(r"<tr[^>]*>(.*?)</tr>", first)[1:]]
    numbers = [float(re.match(r"[-\d.]+", v).group()) for v in column if re.match(r"[-\d.]+", v)]
    assert len(numbers) >= 3 and numbers == sorted(numbers), column  # ascending after one click


def test_words_are_left_aligned_and_wrapped_and_numbers_right_aligned():
    frame = pd.DataFrame({"Paper": ["Poppi et al., \"Multi-Class Unlearning\"", "—"], "Acc_r": ["95.0 ± 1.2†", "—"]},
                         index=pd.Index(["WF-Net", "Original"], name="Method"))
    html = table_html(frame)
    assert '<th class="text">Paper</th>' in html and "<th>Acc_r</th>" in html
    assert '<td class="text">Poppi et al.' in html and "<td>95.0 ± 1.2†</td>" in html


def test_a_long_legend_gets_columns_and_profiles_off_the_scale_are_drawn_at_its_edge():
    from unlearnbench.report.figures import PROFILE_RANGE, new_figure, side_legend

    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    for k in range(24):
        ax.plot([0, 1], [k, k], label=f"method {k}")
    side_legend(ax, 3.6)
    assert ax.get_legend()._ncols == 2 and len(ax.get_legend().get_texts()) == 24  # 24 rows would not fit 3.6 in

    records = pd.DataFrame(hand_records())
    full = records[records["backbone"] == FULL]
    far = full[full["method"] == "wfnet"].assign(method="far_off")  # ZRF rescaled to 3.0: above the scale
    ax = profile_figure(pd.concat([full, far])).axes[0]
    low, high = PROFILE_RANGE
    assert ax.get_ylim() == pytest.approx((low - 0.1, high + 0.1))
    edges = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert any(list(line.get_ydata()) == [high] for line in edges)  # WF-Net's ZRF of 3.0, drawn at 2 with ▲
    assert all(low <= y <= high for line in ax.get_lines() for y in line.get_ydata())


def test_two_dozen_methods_get_lines_that_differ_in_the_profile_and_cost_figures():
    """Before: the lines took matplotlib's 10-color cycle alone, so the 11th method looked like the 1st."""
    from unlearnbench.report.figures import cost_vs_classes

    records = pd.DataFrame(hand_records())
    full = records[records["backbone"] == FULL]
    wf = full[full["method"] == "wfnet"]
    many = pd.concat([full] + [wf.assign(method=f"plugin_{k:02d}") for k in range(21)])  # 24 methods
    for fig in (profile_figure(many), cost_vs_classes(many)):
        ax = fig.axes[0]
        handles, labels = ax.get_legend_handles_labels()
        looks = {(h.get_color(), h.get_linestyle(), h.get_marker()) for h in handles}
        assert len(labels) >= 23 and len(looks) == len(labels)  # every method but perhaps the original
