"""The benchmark scripts run end to end on small data (their figures are measured, never asserted)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_time_to_accuracy_prints_every_epoch_and_the_target(tmp_path):
    argv = [sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--dataset", "mnist5k",
            "--backbone", "vgg16", "--width", "0.0625", "--device", "cpu", "--recipe", "epochs=2",
            "--target", "0.5", "--cache-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.split() and line.split()[0] in ("1", "2")]
    assert [r[0] for r in rows] == ["1", "2"]
    seconds = [float(r[1]) for r in rows]
    assert 0 < seconds[0] < seconds[1]  # cumulative training seconds
    assert float(rows[1][2]) > 0.5
    assert "target 50.00% reached at epoch" in done.stdout


def test_time_to_accuracy_refuses_a_malformed_recipe_override_in_one_sentence():
    argv = [sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--dataset", "mnist5k",
            "--recipe", "epochs"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--recipe expects KEY=VALUE, got 'epochs'." in done.stderr and "Traceback" not in done.stderr


def test_compare_runs_counts_the_rows_a_change_moved_and_ignores_timings(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from compare_runs import compare
    from method_figures import read_records

    old = read_records(ROOT / "reports" / "smoke-cpu")
    new = old.copy()
    zrf = new.index[(new.metric == "zrf") & (new.split == "test") & (new.method == "wfnet")][0]
    new.loc[zrf, "value"] += 0.03
    new.loc[new.metric == "unlearn_seconds", "value"] *= 2  # timings differ on every run: never counted
    summary, means = compare(old, new, "zrf", "test")
    assert "rows in one run only: 0" in summary and "differing: 1\n  zrf: 1 rows differ" in summary
    moved = means[means.change != 0]
    assert list(moved.index.get_level_values("method")) == ["wfnet"] and moved.change.iloc[0] == 1.0  # 3 / 3 classes


def test_sota_spread_summarises_a_runs_seeds_and_the_worst_of_them():
    """The figures behind the SOTA behaviour test's bounds (reports/sota-spread), read back from a committed run."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "sota_spread.py"), "--records",
            str(ROOT / "reports" / "sota-spread" / "records.csv.gz")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    msg = next(line.split() for line in done.stdout.splitlines()
               if line.startswith("vgg16-w0.0625") and " msg " in line)
    assert msg[2:5] == ["s0:", "89.2", "/"] and msg[-3:] == ["89.2", "/", "54.0"]  # README's table: seeds 0-2
    assert sum(" s2: " in line for line in done.stdout.splitlines()) == 34  # 17 methods x 2 backbones
