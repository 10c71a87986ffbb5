"""The files a tuning run writes (trials.csv, tuned.yaml, summary.md), and adding studies to an earlier result."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from .config import read_yaml
from .errors import UserError
from .store import atomic_write

if TYPE_CHECKING:
    from .tuning import TuningSettings

OBJECTIVE = "retrain_distance"
TRIAL_COLUMNS = ["dataset", "backbone", "method", "trial", "params", "objective", "val_acc_retain", "val_acc_forget",
                 "seconds", "cached", "error", "device"]  # device: where `seconds` was measured (a cached trial's too)


def summarise(trials: pd.DataFrame, settings: TuningSettings, spaces: dict, commit: str = "",
              grid_split: dict | None = None, setups: dict | None = None,
              classes: dict | None = None, seeds: dict | None = None, sources: dict | None = None) -> dict:
    """The tuned-parameters document: the settings, what of the grid made its splits and stage models
    (`grid_split`: val_fraction and recipe, see `tuning.grid_split`) and, per dataset → backbone → method, the
    searched parameters' values in the
    best trial that did not fail (studies whose every trial failed are left out), its validation scores, the
    defaults' objective, the tuning cost, how much the best objective moved over the last quarter of the trials
    (0: it had settled), the devices its trials' seconds were measured on (a cached trial's where it ran first;
    several where they differ) and the commit it was tuned at, the parameters it held fixed (the method's
    defaults with the tuning grid's overrides), (`setups`, per study key) the setup (planning.study_setup) its
    parameters hold for, (`classes`, per study key) the forget classes its trials unlearnt and were scored on and
    (`seeds`, per study key) the seed of the original and retrained models it scored against and (`sources`, per
    study key) the hash of the method's code (its file and the plugin files it imports: discovery.MethodInfo)."""
    tuned: dict = {}
    for (dataset, backbone, method), rows in trials.groupby(["dataset", "backbone", "method"], sort=False):
        rows = rows.sort_values("trial")
        succeeded = rows[rows["error"].fillna("") == ""]
        if succeeded.empty:  # nothing was learnt: the study is a failure, not a choice
            continue
        best = succeeded.loc[succeeded["objective"].idxmin()]
        space = spaces[(dataset, backbone, method)]
        running = rows["objective"].cummin().to_numpy()
        tail = max(1, len(rows) // 4)
        tuned.setdefault(dataset, {}).setdefault(backbone, {})[method] = {
            "params": {k: v for k, v in json.loads(best["params"]).items() if k in space},
            "fixed": {k: v for k, v in json.loads(best["params"]).items() if k not in space},  # what was held
            "objective": round(float(best["objective"]), 4),
            "val_acc_retain": round(float(best["val_acc_retain"]), 4),
            "val_acc_forget": round(float(best["val_acc_forget"]), 4),
            "default_objective": round(float(rows["objective"].iloc[0]), 4),
            "best_trial": int(best["trial"]),
            "trials": len(rows),
            "moved_in_last_trials": round(float(running[-tail - 1] - running[-1]) if len(rows) > tail else 0.0, 4),
            "tuning_seconds": round(float(rows["seconds"].sum()), 1),
            "device": " and ".join(sorted({d for d in rows["device"].fillna("") if d})) or "unknown",
            "git": commit,
            "search_space": space,
            **({"setup": setups[(dataset, backbone, method)]} if setups else {}),
            **({"forget_classes": list(classes[(dataset, backbone, method)])} if classes else {}),
            **({"models_seed": seeds[(dataset, backbone, method)]} if seeds else {}),
            **({"method_code": sources[(dataset, backbone, method)]} if sources else {}),
        }
    return {"objective": OBJECTIVE, "split": "val", **dataclasses.asdict(settings), **(grid_split or {}),
            "tuned": tuned}


def write_tuning(folder: Path, trials: pd.DataFrame, document: dict, header: str) -> None:
    """trials.csv (every trial), tuned.yaml (the chosen parameters, `header` as its leading comment) and
    summary.md (`summary_markdown`)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "trials.csv", trials[TRIAL_COLUMNS].to_csv(index=False))
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write(folder / "tuned.yaml", comment + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    atomic_write(folder / "summary.md", summary_markdown(document))


@dataclass(frozen=True)
class EarlierTuning:
    """What an earlier `tune` left in the output folder: its studies, their trials and its provenance header."""

    trials: pd.DataFrame
    tuned: dict
    header: str


def earlier_tuning(folder: Path, settings: TuningSettings, grid_split: dict | None = None,
                   classes: dict | None = None, seeds: dict | None = None) -> EarlierTuning | None:
    """The studies of `folder/tuned.yaml` and their trials, so that tuning one added method adds its studies to a
    grid's result instead of replacing it; None when the folder holds no result. A result tuned with other settings,
    or on another validation split or recipe (`grid_split`, where the earlier result records it: results written
    before it was recorded do not), or one holding studies of a dataset this run tunes on other forget classes
    (`classes`: this run's per study key), or studies scored against the stage models of another seed than this
    run's (`seeds`, per study key; where recorded), is refused: one file never mixes budgets, splits, seeds or,
    within a dataset, tuning classes; an unreadable one, or one whose trials.csv does not match its tuned.yaml, is
    one sentence."""
    path = folder / "tuned.yaml"
    if not path.exists():
        return None
    text, document = _read_tuned(folder)
    ours = {"objective": OBJECTIVE, "split": "val", **dataclasses.asdict(settings)}
    if settings.forget_classes is None:  # the grid's classes: compared per dataset below (an earlier result's list too)
        del ours["forget_classes"]
    ours.update({k: v for k, v in (grid_split or {}).items() if k in document})
    theirs = {k: document.get(k) for k in ours}
    if theirs != ours:
        differ = {k: theirs[k] for k in ours if theirs[k] != ours[k]}
        raise UserError(f"The tuning folder {folder} holds studies tuned with other settings ({differ}, this "
                        f"run: {({k: ours[k] for k in differ})}); choose another --out or remove its tuned.yaml, "
                        f"so one result never mixes budgets or validation splits.")
    studies = _studies(document.get("tuned"))
    if studies is None:
        raise _unreadable(folder, "its tuned.yaml has no `tuned:` mapping of dataset → backbone → method → study "
                                  "with its number of `trials`")
    trials = _read_trials(folder)
    counts = trials.groupby(["dataset", "backbone", "method"]).size().to_dict()
    short = next((key for key, entry in studies.items() if counts.get(key, 0) != entry["trials"]), None)
    if short:
        raise _unreadable(folder, f"its trials.csv holds {counts.get(short, 0)} trials of "
                                  f"{'/'.join(map(str, short))}, its tuned.yaml {studies[short]['trials']}")
    ours_by_dataset = {d: list(ks) for (d, _, _), ks in (classes or {}).items()}
    for (d, _, _), entry in studies.items():  # a study written before it recorded its classes: the settings' list
        theirs_classes = entry.get("forget_classes", document.get("forget_classes"))
        if d in ours_by_dataset and theirs_classes != ours_by_dataset[d]:
            raise UserError(f"The tuning folder {folder} holds studies of dataset '{d}' tuned on forget classes "
                            f"{theirs_classes}, this run tunes it on {ours_by_dataset[d]}; choose "
                            f"another --out or tune on the same classes, so one dataset's studies are scored on "
                            f"the same classes.")
    ours_seeds = set((seeds or {}).values())
    for entry in studies.values():
        if "models_seed" in entry and ours_seeds and ours_seeds != {entry["models_seed"]}:
            raise UserError(f"The tuning folder {folder} holds studies scored against the original and retrained "
                            f"models of seed {entry['models_seed']}, this run scores against seed "
                            f"{', '.join(map(str, sorted(ours_seeds)))}'s; choose another --out or tune on the same "
                            f"seed, so one result's studies are scored against the same models.")
    kept: dict = {}
    for (d, b, m), entry in studies.items():
        kept.setdefault(d, {}).setdefault(b, {})[m] = entry
    keys = list(zip(trials["dataset"], trials["backbone"], trials["method"]))
    trials = trials[[key in studies for key in keys]].copy()
    unnamed = trials["device"] == ""  # a trials.csv from before trials named their device: the study's
    named = trials[unnamed]
    trials.loc[unnamed, "device"] = [str(studies[k].get("device", ""))
                                     for k in zip(named["dataset"], named["backbone"], named["method"])]
    header = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    return EarlierTuning(trials, kept, header)


def _unreadable(folder: Path, problem: str) -> UserError:
    return UserError(f"The tuning folder {folder} holds an unreadable earlier result: {problem}; choose another --out "
                     f"or remove its tuned.yaml and trials.csv.")


def _read_tuned(folder: Path) -> tuple[str, dict]:
    """The text of `folder`/tuned.yaml and its document, a mapping."""
    try:
        document = read_yaml(folder / "tuned.yaml")
    except UserError as exc:  # unreadable, not UTF-8 or malformed: read_yaml's sentence
        raise _unreadable(folder, str(exc).rstrip(".")) from None
    if not isinstance(document, dict):
        raise _unreadable(folder, f"its tuned.yaml holds a {type(document).__name__}, not a tuning result")
    return (folder / "tuned.yaml").read_text(encoding="utf-8"), document


def _studies(tuned) -> dict[tuple, dict] | None:
    """{(dataset, backbone, method): study} of a tuned.yaml's `tuned` mapping; None where it is malformed."""
    try:
        studies = {(d, b, m): e for d, backbones in tuned.items() for b, methods in backbones.items()
                   for m, e in methods.items()}
    except AttributeError:  # not a mapping at some level
        return None
    return studies if all(isinstance(e, dict) and isinstance(e.get("trials"), int)
                          and isinstance(e.get("models_seed", 0), int) for e in studies.values()) else None


def _read_trials(folder: Path) -> pd.DataFrame:
    """`folder`/trials.csv with the TRIAL_COLUMNS."""
    try:
        trials = pd.read_csv(folder / "trials.csv", dtype={"error": str}, keep_default_na=False)
    except FileNotFoundError:
        raise _unreadable(folder, "it has no trials.csv") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas' parser and empty-file errors are ValueErrors
        raise _unreadable(folder, f"its trials.csv is not a CSV table ({str(exc).splitlines()[0]})") from None
    if "device" not in trials:  # written before trials named their device (earlier_tuning fills it in)
        trials["device"] = ""
    missing = [c for c in TRIAL_COLUMNS if c not in trials]
    if missing:
        raise _unreadable(folder, f"its trials.csv lacks the column{'s' if len(missing) > 1 else ''} "
                                  f"{', '.join(missing)}")
    return trials[TRIAL_COLUMNS]


def merged(earlier: EarlierTuning | None, trials: pd.DataFrame, document: dict, header: str):
    """This run's trials, document and provenance header with the earlier studies it has not redone before them.
    An earlier study is replaced only by one this run chose parameters in, so a redo that fails loses nothing."""
    redone = {(d, b, m) for d, bs in document["tuned"].items() for b, ms in bs.items() for m in ms}
    kept = {(d, b, m): e for d, bs in (earlier.tuned if earlier else {}).items() for b, ms in bs.items()
            for m, e in ms.items() if (d, b, m) not in redone}
    if not kept:
        return trials, document, header
    tuned: dict = {}
    for (d, b, m), entry in kept.items():
        tuned.setdefault(d, {}).setdefault(b, {})[m] = entry
    for dataset, backbones in document["tuned"].items():
        for backbone, methods in backbones.items():
            tuned.setdefault(dataset, {}).setdefault(backbone, {}).update(methods)

    def keys(frame):
        return list(zip(frame["dataset"], frame["backbone"], frame["method"]))

    old = earlier.trials[[key in kept for key in keys(earlier.trials)]]
    new = trials[[key not in kept for key in keys(trials)]]
    return (pd.concat([old, new], ignore_index=True), {**document, "tuned": tuned},
            f"{earlier.header}\nthen studies added:\n{header}")


def in_plan_order(rows: list[dict], studies: dict) -> pd.DataFrame:
    """Trial rows sorted by study (in the order of `studies`' keys, the order studies started in) and trial
    number, whatever order studies finished in."""
    rank = {key: i for i, key in enumerate(studies)}
    rows = sorted(rows, key=lambda r: (rank[(r["dataset"], r["backbone"], r["method"])], r["trial"]))
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def summary_markdown(document: dict) -> str:
    """A Markdown table of a tuned.yaml document: per study the budget, the best and the defaults' objective, the
    best trial's validation accuracies (%), how much the best objective moved over the last quarter of the trials,
    the tuning seconds and the chosen values of the searched parameters."""
    classes = document["forget_classes"]
    if classes is None:  # the grid's forget classes of each dataset, recorded per study
        per_dataset = {d: e.get("forget_classes") for d, bs in document["tuned"].items() for ms in bs.values()
                       for e in ms.values()}
        classes = "the grid's: " + "; ".join(f"{d} {ks}" for d, ks in per_dataset.items())
    studies = [e for bs in document["tuned"].values() for ms in bs.values() for e in ms.values()]
    seeds = sorted({e["models_seed"] for e in studies if "models_seed" in e})
    unrecorded = sum("models_seed" not in e for e in studies)
    against = (f", scored against the models of seed {', '.join(map(str, seeds))}"
               + (f" ({unrecorded} earlier studies did not record theirs)" if unrecorded else "")) if seeds else ""
    lines = [f"Objective: {document['objective']} on the {document['split']} split (lower is better), "
             f"{document['trials']} trials per study, tuning forget classes {classes}{against}, "
             f"TPE seed {document['seed']}.", "",
             "| dataset | backbone | method | best | defaults | Acc_r | Acc_f | moved (last ¼) | seconds | chosen |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, backbones in document["tuned"].items():
        for backbone, methods in backbones.items():
            for method, e in methods.items():
                chosen = ", ".join(f"{k}={e['params'][k]}" for k in e["search_space"])
                lines.append(f"| {dataset} | {backbone} | {method} | {e['objective']:.3f} | "
                             f"{e['default_objective']:.3f} | {100 * e['val_acc_retain']:.1f} | "
                             f"{100 * e['val_acc_forget']:.1f} | {e['moved_in_last_trials']:.3f} | "
                             f"{e['tuning_seconds']:.0f} | {chosen} |")
    return "\n".join(lines) + "\n"
