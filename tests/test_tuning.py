"""The tuning protocol: every method's search space holds its defaults, one seeded search per method on the validation
split that starts from the defaults, resumes from its trial cache, never reads the test split, and a grid that
names the result runs with the chosen parameters and records their tuning cost."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
import yaml

from unlearnbench import UserError
from unlearnbench.cli import main
from unlearnbench.discovery import discover
from unlearnbench.grid import load_grid, parse_grid
from unlearnbench.launchers import LaunchOptions
from unlearnbench.models import BackboneSpec, build_backbone
from unlearnbench.planning import plan
from unlearnbench.runner import RunOptions, run
from unlearnbench.tuning import retrain_distance, tune, TuningSettings
from unlearnbench.tuning_results import summarise

from conftest import write_grid
from test_streaming import write_tree

METHODS, _ = discover()
BACKBONES = [BackboneSpec("vgg16", 0.0625), BackboneSpec("vit_tiny", 0.333, 0.333, 14)]


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.family)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_search_space_holds_the_defaults_it_starts_from(name, backbone):
    method = METHODS[name].cls()
    defaults, space = method.default_parameters(backbone), method.space(backbone)
    assert set(space) <= set(defaults), f"{name} searches parameters it does not declare"
    outside = {k: defaults[k] for k, spec in space.items() if not spec.contains(defaults[k])}
    assert not outside, f"{name}'s defaults lie outside its search space: {outside}"


def test_the_objective_is_the_distance_to_the_retrained_model():
    retrained = {"acc_retain": 0.95, "acc_forget": 0.0}
    assert retrain_distance({"acc_retain": 0.90, "acc_forget": 0.10}, retrained) == pytest.approx(0.15)
    assert retrain_distance(retrained, retrained) == 0
    # forgetting more than the retrained model (which may keep a few forget samples right) is a distance too
    assert retrain_distance({"acc_retain": 0.95, "acc_forget": 0.0}, {"acc_retain": 0.95, "acc_forget": 0.02}) == \
        pytest.approx(0.02)


def test_summary_picks_the_best_trial_and_says_how_far_it_still_moved():
    rows = pd.DataFrame({"dataset": "d", "backbone": "b", "method": "m", "trial": range(8),
                         "params": [json.dumps({"lr": i}) for i in range(8)],
                         "objective": [0.9, 0.5, 0.6, 0.4, 0.45, 0.5, 0.3, 0.35],
                         "val_acc_retain": 0.9, "val_acc_forget": 0.1, "seconds": 2.0, "cached": False, "error": "",
                         "device": ["cpu (2 threads, X)"] * 6 + ["cpu (1 threads, X)"] * 2})
    entry = summarise(rows, TuningSettings(trials=8), {("d", "b", "m"): {"lr": "0…1"}})["tuned"]["d"]["b"]["m"]
    assert entry["params"] == {"lr": 6} and entry["objective"] == 0.3 and entry["default_objective"] == 0.9
    assert entry["moved_in_last_trials"] == pytest.approx(0.1)  # best 0.4 before the last two trials, 0.3 after
    assert entry["tuning_seconds"] == 16.0
    assert entry["device"] == "cpu (1 threads, X) and cpu (2 threads, X)"  # the seconds were measured on both


def tune_grid(tmp_path, **overrides):
    raw = {"name": "tune-tiny", "datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "width": 0.0625}],
           "methods": ["original", "negative_gradient", {"name": "wfnet", "params": {"max_steps": 4, "lr": 0.2}}],
           "forget_classes": [0, 1, 2], "recipe": {"epochs": 1}, "metrics": ["accuracy"],
           "tuning": {"trials": 3, "forget_classes": [0, 2], "startup_trials": 1}, **overrides}
    return parse_grid(raw, "tune-tiny")


def test_tune_searches_from_the_defaults_resumes_from_its_cache_and_a_grid_uses_the_result(tmp_path, shared_cache):
    grid = tune_grid(tmp_path)
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False)
    first = tune(grid, options, LaunchOptions(workers=0), tmp_path / "tuning")
    trials = pd.read_csv(tmp_path / "tuning" / "trials.csv")
    assert set(trials.method) == {"negative_gradient", "wfnet"}  # original has nothing to tune
    assert (trials.groupby("method").size() == 3).all()
    ng = trials[trials.method == "negative_gradient"].sort_values("trial")
    defaults = METHODS["negative_gradient"].cls().default_parameters(grid.backbones[0])
    assert json.loads(ng.params.iloc[0]) == defaults  # the first trial is the defaults
    assert ng.params.nunique() == 3 and (ng.objective.between(0, 2)).all()
    wf = trials[trials.method == "wfnet"]
    assert {json.loads(p)["lr"] for p in wf.params} == {0.2}  # a searched parameter the grid fixes stays fixed
    assert len({json.loads(p)["lambda1"] for p in wf.params}) == 3  # the others are searched
    document = yaml.safe_load((tmp_path / "tuning" / "tuned.yaml").read_text())
    assert "lr" not in document["tuned"]["mnist5k"]["vgg16-w0.0625"]["wfnet"]["params"]
    chosen = document["tuned"]["mnist5k"]["vgg16-w0.0625"]["negative_gradient"]
    assert chosen["objective"] == pytest.approx(ng.objective.min(), abs=1e-4)
    best = json.loads(ng.loc[ng.objective.idxmin(), "params"])
    assert chosen["params"] == {k: best[k] for k in METHODS["negative_gradient"].cls().search_space}
    assert chosen["fixed"] == {k: v for k, v in best.items() if k not in chosen["params"]}  # what the study held
    assert chosen["method_code"] == METHODS["negative_gradient"].source_hash  # which version of the method
    assert document["tuned"]["mnist5k"]["vgg16-w0.0625"]["wfnet"]["fixed"]["lr"] == 0.2  # the grid's, held
    assert document["forget_classes"] == [0, 2] and document["split"] == "val"

    threads = torch.get_num_threads()
    try:  # at another thread count: the replayed trials' seconds still name the device they were measured on
        again = tune(grid, options, LaunchOptions(workers=0, threads=threads % 2 + 1), tmp_path / "tuning-again")
    finally:
        torch.set_num_threads(threads)
    assert again.trials.cached.all()  # every trial replayed from the cache: same proposals, nothing recomputed
    pd.testing.assert_frame_equal(first.trials.drop(columns=["cached", "seconds"]),
                                  again.trials.drop(columns=["cached", "seconds"]))
    assert first.trials.device.str.startswith("cpu (").all()
    assert again.document["tuned"]["mnist5k"]["vgg16-w0.0625"]["negative_gradient"]["device"] == chosen["device"]

    tuned_file = tmp_path / "tuning" / "tuned.yaml"  # as if tuned at another commit: its cost rows name that one
    tuned_file.write_text(tuned_file.read_text().replace(f"git: {chosen['git']}", "git: feedbee"))
    tuned_grid = dataclasses.replace(grid, tuned=str(tuned_file))
    result = run(tuned_grid, dataclasses.replace(options, out=tmp_path / "run"))
    records = result.records
    ng_params = records[records.method == "negative_gradient"].params.unique()
    assert len(ng_params) == 1 and json.loads(ng_params[0]) == {**defaults, **chosen["params"]}
    cost = records[(records.metric == "tuning_seconds") & (records.method == "negative_gradient")]
    assert len(cost) == 3 and (cost.value == chosen["tuning_seconds"]).all()
    assert (cost.git_commit == "feedbee").all() and (cost.device == chosen["device"]).all()
    assert (records[records.metric == "unlearn_seconds"].git_commit != "feedbee").all()
    assert records[(records.metric == "tuning_seconds") & (records.method == "original")].empty
    table = pd.read_csv(result.run_dir / "report" / "parameters.csv")
    assert dict(zip(table.method, table.tuned)) == {"original": False, "negative_gradient": True, "wfnet": True}
    assert "Tuning s" in (result.run_dir / "report" / "cost.md").read_text()
    # tuned again since (the same file, other values): the run folder's results are not pooled with the new ones
    # (before, the report listed negative_gradient twice, both rows as tuned)
    from unlearnbench.runner import check_run_folder
    retuned = yaml.safe_load(tuned_file.read_text())
    study = retuned["tuned"]["mnist5k"]["vgg16-w0.0625"]["negative_gradient"]
    study["params"] = {k: v * 2 if isinstance(v, float) else v for k, v in study["params"].items()}
    tuned_file.write_text(yaml.safe_dump(retuned))
    with pytest.raises(UserError, match=r"holds results of dataset mnist5k computed under other tuned parameters "
                                        r"of negative_gradient \(tuned again between the runs\)"):
        check_run_folder(result.run_dir, tuned_grid, plan(tuned_grid, options))
    # each study records its setup; a grid of another setup under the same labels is refused the result
    assert chosen["setup"] == {"dataset": {"name": "mnist5k"}, "backbone": {
        "name": "vgg16", "width": 0.0625, "depth": 1.0, "patch": None}}
    chosen["setup"]["dataset"]["image_size"] = 64
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(UserError, match=r"negative_gradient on mnist5k/vgg16-w0.0625 in '.*other.yaml' were chosen "
                                        r"on another setup \(dataset image_size differ\)"):
        plan(dataclasses.replace(grid, tuned=str(tmp_path / "other.yaml")), options)


def test_the_test_split_never_changes_what_tuning_chooses(tmp_path, shared_cache, monkeypatch):
    import unlearnbench.execution as execution

    # two seeds: still one study per method (the first seed's), with its budget
    grid = tune_grid(tmp_path, methods=["negative_gradient"], seeds=[0, 1],
                     tuning={"trials": 3, "forget_classes": [1], "startup_trials": 1})
    options = RunOptions(device="cpu", progress=False, cache_dir=tmp_path / "cache-a")
    honest = tune(grid, options, LaunchOptions(workers=0), tmp_path / "a").trials
    load = execution.load_dataset

    def scrambled_test(*args, **kwargs):
        data = load(*args, **kwargs)
        labels = data.test.labels[torch.randperm(len(data.test.labels), generator=torch.Generator().manual_seed(1))]
        return dataclasses.replace(data, test=dataclasses.replace(data.test, images=data.test.images.flip(0),
                                                                  labels=labels))

    monkeypatch.setattr(execution, "load_dataset", scrambled_test)
    execution.KeptGroup.forget()
    scrambled = tune(grid, dataclasses.replace(options, cache_dir=tmp_path / "cache-b"), LaunchOptions(workers=0),
                     tmp_path / "b").trials
    execution.KeptGroup.forget()
    assert len(honest) == 3 and honest.trial.tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(honest.drop(columns=["seconds"]), scrambled.drop(columns=["seconds"]))


def failing_negative_gradient(tmp_path, monkeypatch):
    """A grid tuning negative_gradient, whose unlearn raises (patched: the tuning runs in this process); its
    check_every 3 keeps its trials' cache keys apart from the working method's."""
    from unlearnbench.discovery import discover

    def fails(self, task):
        raise RuntimeError("this unlearn always fails")

    monkeypatch.setattr(discover()[0]["negative_gradient"].cls, "unlearn", fails)
    return tune_grid(tmp_path, methods=[{"name": "negative_gradient", "params": {"check_every": 3}}],
                     tuning={"trials": 2, "forget_classes": [1], "startup_trials": 1})


def test_a_study_whose_every_trial_fails_is_a_failure_not_a_choice(tmp_path, shared_cache, monkeypatch):
    grid = failing_negative_gradient(tmp_path, monkeypatch)
    result = tune(grid, RunOptions(cache_dir=shared_cache, device="cpu", progress=False), LaunchOptions(workers=0),
                  tmp_path / "t")
    assert (result.trials.objective == 2.0).all() and result.trials.error.str.contains("always fails").all()
    assert result.document["tuned"] == {}
    assert [f["reason"] for f in result.failures] == ["every tuning trial failed (see trials.csv)"]


def test_a_grid_s_tuned_result_may_be_named_by_its_tuning_folder(tmp_path):
    from unlearnbench.grid import tuned_file

    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "tuned.yaml").write_text("tuned: {}\n")
    assert tuned_file(str(tmp_path / "tuning")) == tuned_file(str(tmp_path / "tuning" / "tuned.yaml"))
    assert tuned_file(str(tmp_path / "tuning")) == tmp_path / "tuning" / "tuned.yaml"


def test_bad_tuning_inputs_give_one_sentence(tmp_path, capsys):
    bad_section = write_grid(tmp_path, "a.yaml", tuning={"trails": 3})
    missing = write_grid(tmp_path, "b.yaml", tuned="no_such_result")
    broken = tmp_path / "broken.yaml"
    broken.write_text("just: text\n")
    not_tuned = write_grid(tmp_path, "c.yaml", tuned=str(broken))
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("tuned: {mnist5k: [1, 2]}\n")
    shapeless = write_grid(tmp_path, "e.yaml", tuned=str(malformed))
    for command in (["tune", "--grid", str(bad_section), "--out", str(tmp_path / "t")],
                    ["--grid", str(bad_section), "--dry-run"]):  # a misspelt tuning key fails every command
        assert main(command) == 2
        assert "Unknown key 'trails'" in capsys.readouterr().err
    bad_seed = write_grid(tmp_path, "s.yaml", tuning={"seed": -1})  # numpy's range, refused before any training
    assert main(["tune", "--grid", str(bad_seed), "--out", str(tmp_path / "t"), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "'seed' must be an integer in [0, 2^32), got -1" in capsys.readouterr().err and not (tmp_path / "c").exists()
    (tmp_path / "empty-folder").mkdir()
    folder = write_grid(tmp_path, "f.yaml", tuned=str(tmp_path / "empty-folder"))
    for grid, words in ((missing, "neither a file nor a shipped tuning result"), (not_tuned, "is not a tuning result"),
                        (shapeless, "is not a tuning result"), (folder, "are a folder without a tuned.yaml")):
        assert main(["--grid", str(grid), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="a-file is a file; pass a folder"):
        tune(tune_grid(tmp_path), RunOptions(device="cpu", progress=False, cache_dir=tmp_path / "cache"),
             LaunchOptions(workers=1), a_file)
    assert not (tmp_path / "cache" / "models").exists()
    with pytest.raises(UserError, match="nothing to tune"):
        tune(load_grid(str(write_grid(tmp_path, "d.yaml"))), RunOptions(device="cpu", progress=False,
                                                                         cache_dir=tmp_path / "cache"),
             LaunchOptions(workers=0), tmp_path / "d")
    # a grid without a tuning: section says the budget it is tuned with (before: only log.txt did)
    assert ("note: grid 'tiny' has no tuning: section, so each study runs the default budget: 20 trials (8 drawn "
            "at random after the defaults, then TPE, seed 0), scored on the grid's forget classes.\n"
            ) == capsys.readouterr().err
    for startup, warned in ((2, True), (1, False)):  # 3 trials: the defaults, 2 random ones: none left to TPE
        with pytest.raises(UserError, match="nothing to tune"):
            tune(load_grid(str(write_grid(tmp_path, "d.yaml", tuning={"trials": 3, "startup_trials": startup}))),
                 RunOptions(device="cpu", progress=False, cache_dir=tmp_path / "cache"), LaunchOptions(workers=0),
                 tmp_path / "d")
        said = capsys.readouterr().err
        assert ("warning: the tuning section's startup_trials (2) leaves none of its 3 trials to TPE: after the "
                "defaults, every trial is drawn at random." in said) == warned, said
    with pytest.raises(UserError, match="^No method of grid 'tune-tiny' that --only keeps declares a search space"):
        tune(tune_grid(tmp_path), RunOptions(device="cpu", progress=False, cache_dir=tmp_path / "cache",
                                             only={"method": "original"}), LaunchOptions(workers=0), tmp_path / "e")
    # --only forget_class was accepted and ignored: the studies scored on the tuning section's classes all the same
    for only in ({"forget_class": "1"}, [{"method": "wfnet"}, {"forget_class": "0"}]):
        with pytest.raises(UserError, match=r"'tuning: forget_classes' .* not on --only forget_class; set them there, and choose studies with --only method=\.$"):
            tune(tune_grid(tmp_path), RunOptions(device="cpu", progress=False, cache_dir=tmp_path / "cache",
                                                 only=only), LaunchOptions(workers=0), tmp_path / "e")
    assert not (tmp_path / "e").exists() and not (tmp_path / "cache" / "models").exists()


@pytest.mark.parametrize("section,sentence", [
    ({"trials": 0}, "The tuning setting 'trials' must be an integer ≥ 1, got 0"),
    ({"seed": -1}, "The tuning setting 'seed' must be an integer in [0, 2^32), got -1"),
    ({"seed": 2 ** 32}, "The tuning setting 'seed' must be an integer in [0, 2^32), got 4294967296"),
    ({"startup_trials": -1}, "The tuning setting 'startup_trials' must be an integer ≥ 0, got -1"),
    ({"forget_classes": []}, "The tuning setting 'forget_classes' lists no class; list at least one class index or "
                             "leave it out to tune on the grid's forget classes"),
    ({"forget_classes": "all"}, "The tuning setting 'forget_classes' must be a list of class indices such as [0, 1], "
                                "got 'all'"),
    ({"forget_classes": [1, True]}, "The tuning setting 'forget_classes' must be a list of class indices such as "
                                    "[0, 1], got [1, True]"),
])
def test_a_bad_tuning_value_names_its_key_and_value(tmp_path, capsys, section, sentence):
    grid = write_grid(tmp_path, tuning=section)
    for command in (["tune", "--grid", str(grid), "--out", str(tmp_path / "t")], ["--grid", str(grid), "--dry-run"]):
        assert main([*command, "--cache-dir", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {sentence} (the tuning section of {grid}).", err
    assert not (tmp_path / "c").exists() and not (tmp_path / "t").exists()
    good = {"trials": 1, "seed": 2 ** 32 - 1, "startup_trials": 0, "forget_classes": [0]}
    assert parse_grid(yaml.safe_load(write_grid(tmp_path, tuning=good).read_text())).tuning == good
    assert parse_grid(yaml.safe_load(write_grid(tmp_path, tuning={"forget_classes": None}).read_text()))


def test_tuning_an_added_method_adds_its_studies_and_keeps_the_earlier_ones(tmp_path, shared_cache, monkeypatch):
    grid = tune_grid(tmp_path, tuning={"trials": 2, "forget_classes": [1], "startup_trials": 1})
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False)
    out = tmp_path / "tuning"
    tune(grid, dataclasses.replace(options, only={"method": "negative_gradient"}), LaunchOptions(workers=0), out)
    first = pd.read_csv(out / "trials.csv")
    before = yaml.safe_load((out / "tuned.yaml").read_text())["tuned"]["mnist5k"]["vgg16-w0.0625"]
    assert set(before) == {"negative_gradient"} and before["negative_gradient"]["git"]

    added = tune(grid, dataclasses.replace(options, only={"method": "wfnet"}), LaunchOptions(workers=0), out)
    text = (out / "tuned.yaml").read_text()
    after = yaml.safe_load(text)["tuned"]["mnist5k"]["vgg16-w0.0625"]
    assert set(after) == {"negative_gradient", "wfnet"} and after["negative_gradient"] == before["negative_gradient"]
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.method) == ["negative_gradient"] * 2 + ["wfnet"] * 2
    pd.testing.assert_frame_equal(trials[trials.method == "negative_gradient"], first)
    assert len(added.trials) == 4 and text.count("# Tuned by") == 2  # both runs' provenance lines are kept
    assert "wfnet" in (out / "summary.md").read_text() and "negative_gradient" in (out / "summary.md").read_text()

    other_budget = tune_grid(tmp_path, tuning={"trials": 3, "forget_classes": [1], "startup_trials": 1})
    other_split = tune_grid(tmp_path, tuning={"trials": 2, "forget_classes": [1], "startup_trials": 1},
                            val_fraction=0.2)  # another validation split: other images, other stage models
    for grid_b, differs in ((other_budget, "'trials': 2"), (other_split, "'val_fraction': 0.1")):
        with pytest.raises(UserError, match="other settings") as refused:
            tune(grid_b, options, LaunchOptions(workers=0), out)
        assert differs in str(refused.value)
    assert yaml.safe_load((out / "tuned.yaml").read_text())["tuned"]["mnist5k"]["vgg16-w0.0625"] == after

    failing = failing_negative_gradient(tmp_path, monkeypatch)
    redo = tune(failing, options, LaunchOptions(workers=0), out)  # every trial fails: the earlier study stays
    assert redo.failures
    assert yaml.safe_load((out / "tuned.yaml").read_text())["tuned"]["mnist5k"]["vgg16-w0.0625"] == after
    pd.testing.assert_frame_equal(pd.read_csv(out / "trials.csv"), trials)


def test_a_grid_may_evaluate_fewer_classes_than_it_is_tuned_on(tmp_path, shared_cache):
    grid = tune_grid(tmp_path, forget_classes=[1], methods=["negative_gradient", {"name": "wfnet",
                     "params": {"max_steps": 10}}], tuning={"trials": 1, "forget_classes": [0, 2], "startup_trials": 0})
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False)
    result = tune(grid, options, LaunchOptions(workers=0), tmp_path / "t")
    assert result.document["forget_classes"] == [0, 2] and not result.failures
    assert (result.trials.error == "").all() and (result.trials.objective < 2).all()
    # scored on classes the trials unlearnt: the forget accuracy left is small (WF-Net: 10 steps, 0.05 from a fresh
    # original; 4 steps left 0.42-0.56 depending on which test trained the shared one), not the original's ~90 %
    assert (result.trials.val_acc_forget < 0.5).all()
    outside = tune_grid(tmp_path, tuning={"trials": 1, "forget_classes": [3, 11]})
    with pytest.raises(UserError, match="Forget class 11 in the tuning section is outside dataset 'mnist5k', whose "
                                        "classes are 0…9"):
        tune(outside, options, LaunchOptions(workers=0), tmp_path / "u")


def test_datasets_of_other_class_counts_share_a_tuning_folder_each_study_with_its_classes(tmp_path, shared_cache):
    """With the tuning section's forget_classes unset, a study is tuned on the grid's forget classes of its dataset
    and records them, so one dataset's studies added to a folder tuned on a dataset of other classes are kept beside
    them (they were refused as 'other settings': the folder recorded the union of the run's classes); the same
    dataset tuned again on other classes is refused, so one dataset's studies are never scored on other classes."""
    root = tmp_path / "root"
    write_tree(root, classes=2, train=8, test=2, size=12)  # `imagefolder` reads the tree at the data root itself
    write_tree(root / "imagenet", classes=3, train=8, test=2, size=12)
    imagenet = {"name": "imagenet", "image_size": 12}
    grid = tune_grid(tmp_path, datasets=["imagefolder", imagenet], forget_classes="all",
                     methods=["negative_gradient"], tuning={"trials": 1, "startup_trials": 0})
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False, data_root=root)
    out = tmp_path / "t"
    for label in ("imagefolder", "imagenet"):
        result = tune(grid, dataclasses.replace(options, only={"dataset": label}), LaunchOptions(workers=0), out)
        assert not result.failures
    document = yaml.safe_load((out / "tuned.yaml").read_text())
    assert document["forget_classes"] is None
    studies = {d: bs["vgg16-w0.0625"]["negative_gradient"] for d, bs in document["tuned"].items()}
    assert {d: s["forget_classes"] for d, s in studies.items()} == {"imagefolder": [0, 1], "imagenet": [0, 1, 2]}
    assert "imagefolder [0, 1]; imagenet [0, 1, 2]" in (out / "summary.md").read_text()

    fewer = tune_grid(tmp_path, datasets=["imagefolder", imagenet], forget_classes=[0],
                      methods=["negative_gradient"], tuning={"trials": 1, "startup_trials": 0})
    with pytest.raises(UserError, match=r"holds studies of dataset 'imagenet' tuned on forget classes \[0, 1, 2\], "
                                        r"this run tunes it on \[0\]"):
        tune(fewer, dataclasses.replace(options, only={"dataset": "imagenet"}), LaunchOptions(workers=0), out)
    assert yaml.safe_load((out / "tuned.yaml").read_text()) == document


def test_studies_record_the_seed_of_the_models_they_scored_against_and_one_folder_never_mixes_seeds(
        tmp_path, shared_cache):
    """`tune --only seed=1` scores its studies against seed 1's original and retrained models. Before, nothing
    recorded that, and a later `tune --only seed=0` added its studies to the same tuned.yaml beside them: one result
    whose objectives were measured against different models. Each study now records `models_seed`, the summary
    says it, and a study of another seed is refused a folder's result, which stays as it was."""
    grid = tune_grid(tmp_path, seeds=[0, 1], methods=["negative_gradient", "random_labels"], forget_classes=[0],
                     tuning={"trials": 1, "startup_trials": 0})
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False)
    out = tmp_path / "t"
    result = tune(grid, dataclasses.replace(options, only={"seed": "1", "method": "negative_gradient"}),
                  LaunchOptions(workers=0), out)
    assert not result.failures
    document = yaml.safe_load((out / "tuned.yaml").read_text())
    assert document["tuned"]["mnist5k"]["vgg16-w0.0625"]["negative_gradient"]["models_seed"] == 1
    assert "scored against the models of seed 1, TPE seed 0." in (out / "summary.md").read_text()
    with pytest.raises(UserError, match=r"holds studies scored against the original and retrained models of seed 1, "
                                        r"this run scores against seed 0's; choose another --out"):
        tune(grid, dataclasses.replace(options, only={"seed": "0", "method": "random_labels"}),
             LaunchOptions(workers=0), out)
    assert yaml.safe_load((out / "tuned.yaml").read_text()) == document


def test_a_second_tune_in_one_process_sees_images_changed_since_the_first(tmp_path, shared_cache):
    """As `run`: the tree's scan (the trials' and stage models' keys) is made again at each tune, so trials on the
    images replaced are not taken from the cache of the old ones."""
    import os

    import numpy as np
    from PIL import Image

    root = write_tree(tmp_path / "root", classes=2, train=8, test=2, size=12)
    grid = tune_grid(tmp_path, datasets=["imagefolder"], methods=["negative_gradient"], forget_classes=[0],
                     tuning={"trials": 1, "startup_trials": 0})
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False, data_root=root)
    assert not tune(grid, options, LaunchOptions(workers=0), tmp_path / "a").trials.cached.any()
    image = next((root / "train" / "class0").glob("*.jpg"))
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(image)
    later = image.stat().st_mtime_ns + 10**9
    os.utime(image, ns=(later, later))
    assert not tune(grid, options, LaunchOptions(workers=0), tmp_path / "b").trials.cached.any()


def test_studies_the_plan_skips_are_said_not_dropped(tmp_path, shared_cache, capsys):
    """A dataset missing under --data-root skips its studies with the reason (log, output, failures) while the
    others are tuned; when every study is skipped, tuning is one sentence."""
    empty = tmp_path / "empty"
    empty.mkdir()
    grid = write_grid(tmp_path, datasets=["mnist5k", "mnist"], methods=["negative_gradient"], forget_classes=[1],
                      tuning={"trials": 2, "forget_classes": [1], "startup_trials": 1})
    out = tmp_path / "t"
    code = main(["tune", "--grid", str(grid), "--data-root", str(empty), "--out", str(out), "--device", "cpu",
                 "--workers", "0", "--cache-dir", str(shared_cache), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "1 failed studies" not in printed and "0 failed studies, 1 skipped" in printed
    assert "skipped: negative_gradient mnist/vgg16-w0.0625:" in printed
    assert set(yaml.safe_load((out / "tuned.yaml").read_text())["tuned"]) == {"mnist5k"}
    assert "skipped mnist/vgg16-w0.0625/negative_gradient: " in (out / "log.txt").read_text()
    assert printed.rstrip().endswith(f"→ {out / 'tuned.yaml'}; a grid runs with these parameters given `tuned: {out}`")
    # a study added to the folder is told apart from the earlier ones listed with it
    more = write_grid(tmp_path, datasets=["mnist5k"], methods=["negative_gradient", "random_labels"],
                      forget_classes=[1], tuning={"trials": 2, "forget_classes": [1], "startup_trials": 1})
    assert main(["tune", "--grid", str(more), "--only", "method=random_labels", "--out", str(out), "--device", "cpu",
                 "--workers", "0", "--cache-dir", str(shared_cache), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mnist5k/vgg16-w0.0625/negative_gradient (an earlier tune's, kept): objective" in printed
    assert "mnist5k/vgg16-w0.0625/random_labels: objective" in printed

    only_missing = load_grid(str(write_grid(tmp_path, "m.yaml", datasets=["mnist"], methods=["negative_gradient"],
                                            tuning={"trials": 2, "forget_classes": [1], "startup_trials": 1})))
    with pytest.raises(UserError, match="Every study of grid 'tiny' is skipped; the first: "):
        tune(only_missing, RunOptions(cache_dir=shared_cache, device="cpu", progress=False, data_root=empty),
             LaunchOptions(workers=0), tmp_path / "m")


def test_a_failed_original_fails_each_of_its_studies_once_and_is_not_a_study_of_its_own(tmp_path):
    torch.save(build_backbone(BackboneSpec("resnet18", 0.0625), 10, 1, 28).state_dict(), tmp_path / "w.pth")
    grid = tune_grid(tmp_path, backbones=[{"name": "vgg16", "width": 0.0625, "pretrained": str(tmp_path / "w.pth")}],
                     methods=["original", "negative_gradient", "random_labels"],
                     tuning={"trials": 2, "forget_classes": [1], "startup_trials": 1})
    result = tune(grid, RunOptions(cache_dir=tmp_path / "c", device="cpu", progress=False),
                  LaunchOptions(workers=0), tmp_path / "t")
    assert sorted(f["method"] for f in result.failures) == ["negative_gradient", "random_labels"]
    assert all(f["status"] == "failed" and "original model failed" in f["reason"]
               and "do not fit this architecture" in f["reason"] for f in result.failures)
    assert result.trials.empty  # no study ran: they would only have retrained the broken original


def test_a_model_with_non_finite_outputs_fails_its_validation_score_instead_of_scoring_finite():
    """argmax reads a NaN row as class 0: such a model scored a finite objective (beating the original on a
    3-class split) while a grid cell with it fails; now its trial fails, scoring the worst objective."""
    from types import SimpleNamespace

    from unlearnbench.data import load_dataset
    from unlearnbench.tuning import val_accuracies

    data = load_dataset("mnist5k", options={"val_per_class": 5})
    broken = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    torch.nn.init.constant_(broken[1].bias, float("nan"))
    with pytest.raises(FloatingPointError, match="not finite"):
        val_accuracies(broken, SimpleNamespace(data=data, stage_logits=lambda *_: None), 0)


PRECISE = """
from unlearnbench import SingleClassModel, Unlearner
from unlearnbench.search_space import Choice, Float


class Precise(Unlearner):
    name = "precise"
    parameters = {"lr": 0.0012345, "cap": 0.12345}
    search_space = {"lr": Float(1e-4, 1e-2, log=True), "cap": Choice((0.12345, 1.4427))}

    def unlearn(self, task):
        return SingleClassModel(task.copy_original(), task.forget_class)
"""


def test_the_first_trial_runs_the_exact_defaults_and_choices_stay_among_their_options(tmp_path, shared_cache):
    """Sampled floats are kept to 3 significant digits; the defaults (trial 0) and a Choice's options are not
    rounded, or trial 0 would not be the defaults and a rounded option (1.44) would be none of the declared."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "precise.py").write_text(PRECISE)
    grid = tune_grid(tmp_path, methods=["precise"], tuning={"trials": 4, "forget_classes": [1], "startup_trials": 3})
    trials = tune(grid, RunOptions(cache_dir=shared_cache, device="cpu", progress=False, plugins=[tmp_path / "plugins"]),
                  LaunchOptions(workers=0), tmp_path / "t").trials.sort_values("trial")
    params = [json.loads(p) for p in trials.params]
    assert params[0] == {"lr": 0.0012345, "cap": 0.12345}
    assert all(p["cap"] in (0.12345, 1.4427) for p in params) and {p["cap"] for p in params} == {0.12345, 1.4427}
    assert all(p["lr"] == float(f"{p['lr']:.3g}") for p in params[1:])


ONE_SETTING_PLUGIN = """
from unlearnbench import SingleClassModel, Unlearner
from unlearnbench.search_space import Choice


class OneSetting(Unlearner):
    name = "one_setting"
    parameters = {"mode": "a"}
    search_space = {"mode": Choice(("a",))}

    def unlearn(self, task):
        return SingleClassModel(task.copy_original(), task.forget_class)
"""


def test_a_setting_a_study_tries_again_costs_nothing_the_second_time(tmp_path, shared_cache):
    """Before: a repeated setting was a cache hit carrying the first try's seconds, summed again into the study's
    tuning_seconds (three tries of the one setting counted three times its cost)."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "one_setting.py").write_text(ONE_SETTING_PLUGIN)
    grid = tune_grid(tmp_path, methods=["original", "one_setting"])
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False, plugins=[tmp_path / "plugins"])
    result = tune(grid, options, LaunchOptions(workers=0), tmp_path / "tuning")
    trials = result.trials.sort_values("trial")
    assert trials.params.nunique() == 1 and len(trials) == 3
    assert trials.seconds.iloc[0] > 0 and (trials.seconds.iloc[1:] == 0).all()
    entry = result.document["tuned"]["mnist5k"]["vgg16-w0.0625"]["one_setting"]
    assert entry["tuning_seconds"] == pytest.approx(round(trials.seconds.iloc[0], 1))


def test_a_trial_that_exits_fails_alone_and_a_failed_setting_tried_again_is_timed_again(tmp_path, shared_cache):
    """A method calling sys.exit() failed its whole study (SystemExit passed the trial's handler) where a grid
    cell fails alone; and a setting whose first try failed (so was not cached) was run again but logged at 0 s."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "one_setting.py").write_text(ONE_SETTING_PLUGIN.replace(
        "        return SingleClassModel", "        import sys, time\n        time.sleep(0.05)\n        sys.exit(3)\n"
        "        return SingleClassModel"))
    grid = tune_grid(tmp_path, methods=["original", "one_setting"])
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False, plugins=[tmp_path / "plugins"])
    result = tune(grid, options, LaunchOptions(workers=0), tmp_path / "tuning")
    trials = result.trials.sort_values("trial")
    assert len(trials) == 3 and (trials.error == "SystemExit: 3").all() and (trials.objective == 2.0).all()
    assert (trials.seconds >= 0.05).all()  # each try ran (and slept) again
    assert [f["reason"] for f in result.failures] == ["every tuning trial failed (see trials.csv)"]
    import optuna  # whose sampler proposed the trials: its version is written beside the others

    assert f"'optuna': '{optuna.__version__}'" in (tmp_path / "tuning" / "tuned.yaml").read_text()


def test_a_trial_whose_setting_the_methods_own_check_refuses_fails_so_it_is_never_chosen(tmp_path, shared_cache):
    """A plugin's check_parameters refuses some settings when a grid is planned; trials ran them anyway, so tuning
    could choose a setting that the grid using the result then refused."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "one_setting.py").write_text(ONE_SETTING_PLUGIN.replace(
        'Choice(("a",))', 'Choice(("a", "b"))').replace(
        "    def unlearn(self, task):", "    def check_parameters(self, params):\n        from unlearnbench import "
        "UserError\n        if params['mode'] == 'b':\n            raise UserError('mode b is refused.')\n\n"
        "    def unlearn(self, task):"))
    grid = tune_grid(tmp_path, methods=["original", "one_setting"], tuning={"trials": 6, "forget_classes": [0],
                                                                              "startup_trials": 5})
    options = RunOptions(cache_dir=shared_cache, device="cpu", progress=False, plugins=[tmp_path / "plugins"])
    trials = tune(grid, options, LaunchOptions(workers=0), tmp_path / "tuning").trials
    refused = trials[trials.params.str.contains('"b"')]
    assert len(refused) and (refused.error == "UserError: mode b is refused.").all()
    assert (trials[~trials.params.str.contains('"b"')].error.fillna("") == "").all()


@pytest.mark.parametrize("file, damage, says", [
    ("tuned.yaml", lambda t: t.replace("tuned:", "tuned: [", 1), "tuned.yaml at line "),
    ("tuned.yaml", lambda t: t.replace("tuned:", "\ttuned:", 1), "(a tab: YAML indents with spaces)"),
    ("tuned.yaml", lambda t: "- a\n", "its tuned.yaml holds a list, not a tuning result"),
    ("tuned.yaml", lambda t: t.replace("tuned:", "tunes:", 1), "its tuned.yaml has no `tuned:` mapping"),
    ("tuned.yaml", lambda t: yaml.safe_dump({**yaml.safe_load(t), "tuned": {"d": {"b": {"m": {"trials": "two"}}}}}),
     "its tuned.yaml has no `tuned:` mapping"),
    ("trials.csv", None, "it has no trials.csv"),
    ("trials.csv", lambda t: "", "its trials.csv is not a CSV table (No columns to parse from file)"),
    ("trials.csv", lambda t: t.replace("method", "methd", 1), "its trials.csv lacks the column method"),
    ("trials.csv", lambda t: "".join(t.splitlines(True)[:2]),
     "its trials.csv holds 1 trials of d/b/m, its tuned.yaml 2"),
])
def test_a_damaged_earlier_tuning_result_is_one_sentence_saying_what_is_wrong(tmp_path, file, damage, says):
    """Before: the raw exception, e.g. (KeyError: "['method'] not in index") or (AttributeError: 'list' object has
    no attribute 'get')."""
    from unlearnbench.tuning_results import TRIAL_COLUMNS, earlier_tuning

    settings = TuningSettings(trials=2, forget_classes=[1], startup_trials=1)
    trials = pd.DataFrame([{**dict.fromkeys(TRIAL_COLUMNS, ""), "dataset": "d", "backbone": "b", "method": "m",
                            "trial": i} for i in range(2)])
    document = {"objective": "retrain_distance", "split": "val", **dataclasses.asdict(settings),
                "tuned": {"d": {"b": {"m": {"trials": 2, "params": {}}}}}}
    trials.to_csv(tmp_path / "trials.csv", index=False)
    (tmp_path / "tuned.yaml").write_text("# a header\n" + yaml.safe_dump(document))
    assert set(earlier_tuning(tmp_path, settings).tuned["d"]["b"]) == {"m"}
    path = tmp_path / file
    path.unlink() if damage is None else path.write_text(damage(path.read_text()))
    with pytest.raises(UserError) as refused:
        earlier_tuning(tmp_path, settings)
    assert str(refused.value) == (f"The tuning folder {tmp_path} holds an unreadable earlier result: "
                                  f"{str(refused.value).split('result: ', 1)[1].split('; choose')[0]}; choose another "
                                  f"--out or remove its tuned.yaml and trials.csv.")
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_an_earlier_trials_file_without_devices_takes_each_studys_own(tmp_path):
    """trials.csv written before trials named their device: each kept trial takes its study's device from
    tuned.yaml, also where the file holds a failed study's trials (not in tuned.yaml) before the others (they were
    matched by position: a KeyError, or another study's device)."""
    from unlearnbench.tuning_results import TRIAL_COLUMNS, earlier_tuning

    settings = TuningSettings(trials=1, forget_classes=[1], startup_trials=1)
    rows = [{**dict.fromkeys(TRIAL_COLUMNS, ""), "dataset": "d", "backbone": "b", "method": m, "trial": 0}
            for m in ("failed", "a", "c")]
    pd.DataFrame(rows).drop(columns=["device"]).to_csv(tmp_path / "trials.csv", index=False)
    document = {"objective": "retrain_distance", "split": "val", **dataclasses.asdict(settings),
                "tuned": {"d": {"b": {m: {"trials": 1, "params": {}, "device": f"cpu {m}"} for m in ("a", "c")}}}}
    (tmp_path / "tuned.yaml").write_text(yaml.safe_dump(document))
    trials = earlier_tuning(tmp_path, settings).trials
    assert dict(zip(trials.method, trials.device)) == {"a": "cpu a", "c": "cpu c"}


def test_a_busy_or_interrupted_tune_speaks_of_tuning_not_of_a_run(tmp_path, monkeypatch, capsys):
    """Before: a tuning folder another tune held was "Run folder … is in use by another run", and an interrupted
    tune said "finished cells are kept in the cache"; a tune keeps trials there and studies in its folder."""
    import unlearnbench.tuning as tuning
    from unlearnbench.store import RunFolder

    (tmp_path / "t").mkdir()
    with RunFolder(tmp_path / "t").lock("tune"):
        with pytest.raises(UserError, match=f"^Tuning folder {tmp_path / 't'} is in use by another tune; wait"):
            tune(tune_grid(tmp_path), RunOptions(device="cpu", progress=False, cache_dir=tmp_path / "c"),
                 LaunchOptions(workers=0), tmp_path / "t")

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning, "tune", interrupted)
    assert main(["tune", "--grid", str(write_grid(tmp_path)), "--cache-dir", str(tmp_path / "c")]) == 130
    assert capsys.readouterr().err == (f"interrupted; finished trials are kept in the cache {tmp_path / 'c'} and "
                                       f"finished studies in the tuning folder; run the same command again to "
                                       f"resume.\n")
