"""benchmarks/tuning_budget.py: cost and regret of the first k trials, on a toy trials.csv."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "tuning_budget.py"


def _module():
    spec = importlib.util.spec_from_file_location("tuning_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, rows: list[tuple]) -> Path:
    """rows: (method, trial, objective, seconds, cached, error); one study per method."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{"dataset": "d", "backbone": "b", "method": m, "trial": t, "params": "{}",
                           "objective": o, "val_acc_retain": 0.9, "val_acc_forget": 0.1, "seconds": s,
                           "cached": c, "error": e} for m, t, o, s, c, e in rows])
    frame.sample(frac=1, random_state=0).to_csv(folder / "trials.csv", index=False)  # order must not matter
    return folder


TOY = [("a", 0, 0.5, 1.0, False, ""), ("a", 1, 0.3, 2.0, False, ""), ("a", 2, 0.1, 4.0, False, ""),
       # a failed trial with a low objective must never count as the best; a cached row keeps its seconds
       ("b", 0, 0.4, 10.0, False, ""), ("b", 1, 0.05, 20.0, False, "RuntimeError: boom"),
       ("b", 2, 0.2, 40.0, True, ""),
       # no successful trial among the first 1
       ("c", 0, 2.0, 100.0, False, "ValueError: x"), ("c", 1, 0.3, 200.0, False, "")]


def test_cost_and_regret_use_exactly_trials_0_to_k_minus_1(tmp_path):
    tb = _module()
    trials = tb.load_trials(_write(tmp_path / "t", TOY))
    assert [tb.cost_hours(trials, k) * 3600 for k in (1, 2, 3)] == pytest.approx([111.0, 333.0, 377.0])
    per_method = tb.cost_hours(trials, 2, by="method") * 3600
    assert per_method.to_dict() == pytest.approx({"a": 3.0, "b": 30.0, "c": 300.0})

    r1 = tb.regret(trials, 1)
    assert r1.loc["d/b/a", "regret"] == pytest.approx(0.4)
    assert r1.loc["d/b/b", "regret"] == pytest.approx(0.2)
    assert bool(r1.loc["d/b/c", "no_success"]) and pd.isna(r1.loc["d/b/c", "regret"])
    r2 = tb.regret(trials, 2)
    assert r2.loc["d/b/a", "regret"] == pytest.approx(0.2)
    assert r2.loc["d/b/b", "regret"] == pytest.approx(0.2)  # the failed 0.05 is ignored
    assert r2.loc["d/b/c", "regret"] == pytest.approx(0.0) and not r2.loc["d/b/c", "changed"]
    r3 = tb.regret(trials, 3)
    assert r3["regret"].tolist() == pytest.approx([0.0, 0.0, 0.0]) and not r3["changed"].any()


def test_the_script_prints_the_tables_and_the_combinations(tmp_path):
    one = _write(tmp_path / "one", TOY)
    two = _write(tmp_path / "two", [("a", 0, 0.2, 3600.0, False, ""), ("a", 1, 0.1, 3600.0, False, "")])
    away = _write(tmp_path / "gpu", [("a", 0, 0.2, 3600.0, False, ""), ("a", 1, 0.1, 3600.0, False, "")])
    done = subprocess.run([sys.executable, str(SCRIPT), str(one), str(two), "--elsewhere", str(away),
                           "--worker-hours", "1.5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1 rows replayed from the trial cache" in out and "3 failed rows" not in out and "2 failed rows" in out
    assert "1 studies (2 trials) were timed elsewhere" in out
    # folder two: 1 worker-hour at k=1, all of it timed elsewhere, so CPU-timed 0
    assert any(line.split()[:8] == ["1", "|", "1.00", "|", "0.00", "|", "1.00", "|"] for line in out.splitlines())
    assert "combinations within 1.5 worker-hours" in out
