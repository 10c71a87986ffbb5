"""What a smaller tuning budget would cost and lose, read from finished tuning runs (no new trials are run).

    python benchmarks/tuning_budget.py reports/tuning/smoke reports/tuning/mini-whole-val \\
        --elsewhere reports/tuning/mini-whole-val/second-wave-gpu --worker-hours 4 > reports/tuning/budget/output.txt
    python benchmarks/tuning_budget.py reports/tuning/mini-whole-val --budgets 2 4 8 --top 10
    python benchmarks/tuning_budget.py reports/tuning/smoke reports/tuning/mini-whole-val \
        --only reports/tuning/smoke=wfnet,neggrad_plus --elsewhere reports/tuning/mini-whole-val/second-wave-gpu

For every folder (a `run_bench.py tune` result holding `trials.csv`) and every budget k (1..the most trials of
any study, or `--budgets`), it prints:

- cost: the recorded `seconds` of trials 0..k-1 of every study, summed, in worker-hours (one worker = one torch
  thread, as `tune` runs them), and the same per method for the `--top` costliest methods;
- regret at k: per study, the best objective among trials 0..k-1 minus the best over all its recorded trials
  (0 when the k-trial study would pick as good a trial; the objective is |ΔAcc_r| + |ΔAcc_f| against the
  retrained model on validation, lower is better); summarised as the number of studies whose chosen trial would
  change (its best objective gets worse), the median, mean and max regret, and the studies with the largest;
- with two or more folders, which combinations of budgets fit `--worker-hours` (default 4: 2 hours × 2 workers).

Why the first k trials stand for a k-trial study. `unlearnbench/tuning.py` (run_study) builds
`optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials + 1)`, enqueues the
defaults as trial 0, then asks and tells one trial at a time in one process for `range(settings.trials)`: the
study size is never passed to the sampler or the study, only to that loop. With Optuna 5.1's TPE (multivariate by
default for one objective; `constant_liar=True` by default, which only matters for trials RUNNING at the same time,
and here none is: each trial is told before the next is asked) the parameters of trial j depend only on the seed,
the search space and trials 0..j-1 (their parameters and objectives); `n_startup_trials` counts finished trials,
not the budget. So for EVERY k (not only k ≥ startup_trials), trials 0..k-1 of an N-trial study are exactly the
trials a k-trial study with the same seed, startup_trials and search space would run, provided each trial's
objective comes out the same (a re-run replays cached trials, so it does). With k ≤ startup_trials + 1 the study
is the defaults plus random trials only: a budget that small tunes by random search. The claim would fail if the
sampler were given the budget (e.g. a budget-dependent gamma or startup count), if startup_trials were scaled
with the budget (the shipped grids set it separately: smoke 8 by default, mini 3), or if trials ran in parallel
within one study (then the constant liar makes suggestions depend on timing).

Rows. Each row is one recorded trial. `cached` rows (replayed from the trial cache by a resumed or repeated run)
keep the `seconds` stored with the cached result, i.e. what computing that trial took when it first ran, so they
are counted as cost like any other row (their number is printed). Rows with a non-empty `error` (or a non-finite
objective) are counted as cost (they took the time) but can never be the best trial, as in
`tuning_results.summarise`; a study with no successful trial among the first k is reported as such and left out
of the regret figures. A study with fewer recorded trials than k uses all it has (said in the output).

`--only FOLDER=M1,M2,...` keeps only those methods' studies of one folder (e.g. the methods a grid runs by
default, without `--methods all`).

`--elsewhere DIR` (repeatable): studies listed in DIR/trials.csv were timed on other hardware (e.g. a GPU). Their
seconds are still in the "all recorded" cost but are also shown apart, and "CPU-timed only" leaves them out: a
lower bound on what the folder would cost on the CPU, since those studies would cost something there too.
The sums are trial seconds only: training the originals and retrained models a tune starts with, and workers
idling at the end of an uneven schedule, come on top of them in wall time.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

STUDY = ["dataset", "backbone", "method"]


def load_trials(folder: Path) -> pd.DataFrame:
    """trials.csv of a tuning folder, with `failed` (error or non-finite objective) and a study label."""
    trials = pd.read_csv(Path(folder) / "trials.csv", dtype={"error": str}, keep_default_na=False,
                         na_values={"objective": [""], "seconds": [""]})
    trials["error"] = trials["error"].fillna("").astype(str)
    trials["objective"] = pd.to_numeric(trials["objective"], errors="coerce")
    trials["seconds"] = pd.to_numeric(trials["seconds"], errors="coerce").fillna(0.0)
    trials["cached"] = trials["cached"].astype(str).str.lower().isin(["true", "1"])
    trials["failed"] = (trials["error"] != "") | ~trials["objective"].apply(
        lambda v: isinstance(v, float) and math.isfinite(v))
    trials["study"] = trials["dataset"] + "/" + trials["backbone"] + "/" + trials["method"]
    return trials.sort_values(STUDY + ["trial"], kind="stable").reset_index(drop=True)


def first_k(trials: pd.DataFrame, k: int) -> pd.DataFrame:
    """Trials 0..k-1 of every study: the first k by trial number (0 = the defaults)."""
    return trials[trials["trial"] < k]


def cost_hours(trials: pd.DataFrame, k: int, by: str | None = None):
    """Recorded seconds of the first k trials of every study, in worker-hours (in total, or per `by`)."""
    part = first_k(trials, k)
    if by is None:
        return float(part["seconds"].sum()) / 3600
    return part.groupby(by)["seconds"].sum() / 3600


def _best(trials: pd.DataFrame) -> pd.Series:
    ok = trials[~trials["failed"]]
    return ok.groupby("study")["objective"].min()


def regret(trials: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per study: best objective among trials 0..k-1 (`best_k`), over all trials (`best_all`), `regret` (their
    difference, ≥ 0), `changed` (regret > 0: the k-trial study picks a worse trial) and `no_success` (no
    successful trial among the first k: regret undefined)."""
    studies = pd.Index(trials["study"].unique(), name="study")
    table = pd.DataFrame({"best_all": _best(trials), "best_k": _best(first_k(trials, k))}).reindex(studies)
    table["no_success"] = table["best_k"].isna() & table["best_all"].notna()
    table["regret"] = table["best_k"] - table["best_all"]
    table["changed"] = table["regret"] > 1e-12
    return table


def _budgets(trials_by_folder: dict, asked: list[int] | None) -> list[int]:
    most = max(int(t.groupby("study").size().max()) for t in trials_by_folder.values())
    return sorted(set(asked)) if asked else list(range(1, most + 1))


def _elsewhere_studies(dirs: list[str]) -> dict[str, tuple[str, pd.DataFrame]]:
    """study label -> (the folder that timed it, its rows there)."""
    out = {}
    for d in dirs:
        rows = load_trials(Path(d))
        for study, part in rows.groupby("study"):
            out[study] = (d, part)
    return out


def report_folder(folder: str, trials: pd.DataFrame, budgets: list[int], elsewhere: dict, top: int,
                  worst: int) -> dict:
    """Print one folder's tables; return {k: (hours all, hours CPU-timed only)} and {k: regret table}."""
    sizes = trials.groupby("study").size()
    n_studies, methods = len(sizes), trials["method"].nunique()
    print(f"== {folder}: {n_studies} studies ({methods} methods), {len(trials)} trials, "
          f"{sizes.min()}-{sizes.max()} trials a study; {int(trials['cached'].sum())} rows replayed from the "
          f"trial cache (their stored seconds counted), {int(trials['failed'].sum())} failed rows")
    gaps = [s for s, part in trials.groupby("study") if list(part["trial"]) != list(range(len(part)))]
    if gaps:
        print(f"   WARNING: trial numbers not 0..n-1 in {len(gaps)} studies, e.g. {gaps[0]}")
    short = sizes[sizes < max(budgets)]
    if len(short):
        print(f"   {len(short)} studies have fewer than {max(budgets)} trials; at larger k they use all they have")
    away = trials["study"].isin(list(elsewhere))
    if away.any():
        where = sorted({elsewhere[s][0] for s in trials.loc[away, "study"].unique()})
        differ = 0
        for study, part in trials[away].groupby("study"):
            other = elsewhere[study][1]
            same = (len(other) == len(part) and
                    (other["seconds"].round(3).values == part["seconds"].round(3).values).all())
            differ += not same
        print(f"   {trials.loc[away, 'study'].nunique()} studies ({int(away.sum())} trials) were timed elsewhere "
              f"({', '.join(where)}): counted in 'all', left out of 'CPU-timed'"
              + (f"; WARNING: {differ} of them have other seconds here than there" if differ else
                 "; their seconds here equal those there"))
    cpu = trials[~away]
    print()
    print("   k | worker-h all | CPU-timed | elsewhere | changed | no result | median regret | mean regret | "
          "max regret")
    costs, regrets = {}, {}
    for k in budgets:
        table = regret(trials, k)
        valid = table[~table["no_success"] & table["best_all"].notna()]
        h_all, h_cpu = cost_hours(trials, k), cost_hours(cpu, k)
        costs[k], regrets[k] = (h_all, h_cpu), table
        print(f"  {k:2d} | {h_all:12.2f} | {h_cpu:9.2f} | {h_all - h_cpu:9.2f} | {int(valid['changed'].sum()):3d}/"
              f"{len(valid):<3d} | {int(table['no_success'].sum()):9d} | {valid['regret'].median():13.4f} | "
              f"{valid['regret'].mean():11.4f} | {valid['regret'].max():10.4f}")
    print()
    per_method = pd.DataFrame({k: cost_hours(trials, k, by="method") * 60 for k in budgets})
    per_method = per_method.sort_values(max(budgets), ascending=False)
    shown = per_method.head(top)
    if len(per_method) > top:
        shown = pd.concat([shown, per_method.iloc[top:].sum().rename(f"({len(per_method) - top} others)").to_frame().T])
    shown.loc["total"] = per_method.sum()
    print("   worker-minutes per method (all recorded seconds), first k trials of each study:")
    print("   " + shown.round(1).to_string().replace("\n", "\n   "))
    if away.any():
        cpu_method = pd.DataFrame({k: cost_hours(cpu, k, by="method") * 60 for k in budgets})
        print("   CPU-timed only, total worker-minutes: "
              + ", ".join(f"k={k}: {cpu_method[k].sum():.1f}" for k in budgets))
    print()
    print("   largest regrets (study: regret, best at k -> best of all):")
    for k in budgets:
        table = regrets[k]
        big = table[table["changed"]].sort_values("regret", ascending=False).head(worst)
        text = "; ".join(f"{s} {r.regret:.3f} ({r.best_k:.3f}->{r.best_all:.3f})" for s, r in big.iterrows())
        print(f"  {k:2d}: {text or 'none'}")
    print()
    return {"costs": costs, "regrets": regrets}


def report_pairs(results: dict, hours: float) -> None:
    """For two or more folders: per budget of the first folder, the largest budget of each other that keeps the
    sum within `hours` (others at their largest, greedily in order), by all recorded seconds and by the
    CPU-timed lower bound."""
    folders = list(results)
    print(f"== combinations within {hours:g} worker-hours ({' + '.join(folders)})")
    for label, index in (("all recorded seconds", 0), ("CPU-timed seconds only (lower bound)", 1)):
        print(f"   by {label}:")
        print("   " + " | ".join(f"k {Path(f).name}" for f in folders) + " | worker-h | "
              + " | ".join(f"changed/median/max regret {Path(f).name}" for f in folders))
        any_fit = False
        for k0, c0 in results[folders[0]]["costs"].items():
            left, ks = hours - c0[index], [k0]
            for f in folders[1:]:
                fitting = [k for k, c in results[f]["costs"].items() if c[index] <= left]
                if not fitting:
                    break
                ks.append(max(fitting))
                left -= results[f]["costs"][ks[-1]][index]
            if len(ks) < len(folders):
                continue
            any_fit = True
            total = sum(results[f]["costs"][k][index] for f, k in zip(folders, ks))
            summary = []
            for f, k in zip(folders, ks):
                t = results[f]["regrets"][k]
                v = t[~t["no_success"] & t["best_all"].notna()]
                summary.append(f"{int(v['changed'].sum())}/{len(v)} {v['regret'].median():.4f} {v['regret'].max():.4f}")
            print("   " + " | ".join(f"{k:>{len('k ' + Path(f).name)}d}" for f, k in zip(folders, ks))
                  + f" | {total:8.2f} | " + " | ".join(summary))
        if not any_fit:
            print("   none fits")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="tuning folders holding trials.csv")
    parser.add_argument("--budgets", type=int, nargs="+", help="trial budgets k (default 1..the most recorded)")
    parser.add_argument("--elsewhere", action="append", default=[],
                        help="a folder whose trials.csv lists studies timed on other hardware (repeatable)")
    parser.add_argument("--only", action="append", default=[], metavar="FOLDER=M1,M2",
                        help="keep only these methods' studies of FOLDER (repeatable), e.g. a grid's default list")
    parser.add_argument("--worker-hours", type=float, default=4.0, help="budget for the combinations (default 4)")
    parser.add_argument("--top", type=int, default=8, help="methods shown in the per-method cost table")
    parser.add_argument("--worst", type=int, default=3, help="largest-regret studies listed per k")
    args = parser.parse_args(argv)
    if args.budgets and min(args.budgets) < 1:
        parser.error("budgets must be ≥ 1")
    trials = {f: load_trials(Path(f)) for f in args.folders}
    for item in args.only:
        folder, _, methods = item.partition("=")
        if folder not in trials or not methods:
            parser.error(f"--only expects one of the folders, '=' and methods; got {item!r}")
        keep = methods.split(",")
        unknown = sorted(set(keep) - set(trials[folder]["method"]))
        if unknown:
            parser.error(f"--only: {folder} has no studies of {', '.join(unknown)}")
        trials[folder] = trials[folder][trials[folder]["method"].isin(keep)].reset_index(drop=True)
        print(f"(only {len(keep)} methods of {folder}: {', '.join(keep)})")
    budgets = _budgets(trials, args.budgets)
    elsewhere = _elsewhere_studies(args.elsewhere)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 50)
    results = {f: report_folder(f, t, [k for k in budgets if k <= int(t.groupby("study").size().max())]
                                or budgets, elsewhere, args.top, args.worst) for f, t in trials.items()}
    if len(results) > 1:
        report_pairs(results, args.worker_hours)


if __name__ == "__main__":
    main()
