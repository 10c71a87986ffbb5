"""End to end on a tiny grid: records, resume from the cache, plugins from a folder, failure isolation, CLI errors."""
import contextlib
import dataclasses
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from unlearnbench import UserError
from unlearnbench.cli import main
from unlearnbench.grid import load_grid
from unlearnbench.runner import RunOptions, run
from unlearnbench.store import RECORD_COLUMNS, cpu_model, device_name

from conftest import SMALL_MNIST, write_grid

PLUGIN = '''
from unlearnbench import SingleClassModel, Unlearner


class Finetune{suffix}(Unlearner):
    """Fine-tune the original on the retain set for a few steps."""

    name = "tmp_finetune"
    parameters = {{"steps": 3}}

    def unlearn(self, task):
        import torch.nn.functional as F
        from unlearnbench.training import make_optimizer

        model = task.copy_original().train()
        opt = make_optimizer(model.parameters(), "sgd", 0.01)
        batches = task.data.batches(task.data.train.retain(task.forget_class), 64, shuffle=True, generator=task.generator)
        for _, (x, y) in zip(range(self.parameters["steps"]), batches):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return SingleClassModel(model.eval(), task.forget_class)
'''


SMALL = {"datasets": [SMALL_MNIST]}


def options(tmp_path, cache, **kw):
    """A run into tmp_path/<name>: these tests check records, caching and failures, so it writes no report unless
    asked (report=True; test_report.py checks reports)."""
    return RunOptions(out=tmp_path / kw.pop("name", "run"), cache_dir=cache, device="cpu", progress=False,
                      report=kw.pop("report", False), **kw)


def test_tiny_grid_end_to_end_then_resume_computes_nothing(tmp_path, shared_cache):
    # two epochs: after one, this tiny VGG knows some classes only half (class 0: 0.46 with torch 2.14)
    grid = load_grid(str(write_grid(tmp_path, recipe={"epochs": 2})))
    first = run(grid, options(tmp_path, shared_cache, name="first", report=True))
    assert not [f for f in first.failures if f["status"] == "failed"]
    frame = pd.read_csv(first.run_dir / "records.csv")
    assert list(frame.columns[: len(RECORD_COLUMNS)]) == RECORD_COLUMNS
    assert {"v_torch", "git_commit", "device"} <= set(frame.columns)
    # per cell 4 cost rows; original: + 2 classes × 2 splits × 2 metrics; retrain: per class + 2 × 2
    cost = frame[frame.split == "all"]
    assert set(cost.metric) == {"unlearn_seconds", "device_seconds", "peak_memory_bytes", "serving_bytes"}
    assert len(frame) == (4 + 8) + 2 * (4 + 4)
    serving = cost[cost.metric == "serving_bytes"].groupby("method").value.first()
    assert serving["original"] == serving["retrain"] > 0  # one copy of the same architecture
    retrain = frame[(frame.method == "retrain") & (frame.metric == "acc_forget")]
    assert (retrain.value == 0).all()  # never saw the class
    original = frame[(frame.method == "original") & (frame.split == "test")].pivot_table(
        index="forget_class", columns="metric", values="value")
    assert (original.acc_forget > 0.5).all()
    assert (first.run_dir / "config.yaml").is_file() and (first.run_dir / "log.txt").is_file()
    cards = yaml.safe_load((first.run_dir / "config.yaml").read_text())["methods"]  # the methods table reads them
    assert set(cards) == {"original", "retrain"} and cards["retrain"]["uses_retain"] is True
    assert cards["original"]["uses_retain"] is False and cards["retrain"]["per_class"] is True

    assert first.report_error is None and (first.run_dir / "report" / "index.md").is_file()

    def broken_report(folders):
        raise UserError("the report broke")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("unlearnbench.report.write_report", broken_report)
        second = run(grid, options(tmp_path, shared_cache, name="second", report=True))
    assert (second.computed, second.cached) == (0, 3)
    pd.testing.assert_frame_equal(first.records[RECORD_COLUMNS], second.records[RECORD_COLUMNS])
    assert second.report_error == "the report broke"  # the records are kept all the same
    assert "report failed: the report broke" in (second.run_dir / "log.txt").read_text()

    third = run(grid, options(tmp_path, shared_cache, name="third", report=False))  # --no-report
    pd.testing.assert_frame_equal(first.records[RECORD_COLUMNS], third.records[RECORD_COLUMNS])
    assert third.report_error is None and not (third.run_dir / "report").exists()
    assert "report not written (--no-report)" in (third.run_dir / "log.txt").read_text()


def test_a_resumed_run_launches_no_original_job_for_an_original_the_cache_holds(tmp_path, monkeypatch):
    """Every run launched an 'original' job per group before its cells, whether the cache held the original or not:
    under Slurm a task of its own, and its wait in the queue, on every resume."""
    from unlearnbench import runner

    launched = []

    def recording(fn, jobs, *args):
        launched.append([job.kind for job in jobs])
        return launch(fn, jobs, *args)

    launch = runner.launch
    monkeypatch.setattr(runner, "launch", recording)
    grid = load_grid(str(write_grid(tmp_path, **SMALL)))
    cache = tmp_path / "cache"
    run(grid, options(tmp_path, cache, only={"forget_class": "0"}))
    assert launched[0] == ["original"]
    launched.clear()
    resumed = run(grid, options(tmp_path, cache))
    assert (resumed.computed, resumed.cached) == (2, 1) and not resumed.failures  # original's cell, retrain c1
    assert launched == [[], ["cell"], ["cell"]], launched  # phases: originals, retrained models, other cells


def test_a_method_that_reads_the_test_split_fails_its_cell_and_tuning_trial_saying_so(tmp_path, shared_cache):
    """Nothing may be chosen on the test split (docs/protocol.md): a method receives it withheld, so early stopping
    on it fails the cell (and the tuning trial) with one sentence instead of quietly selecting on test images; the
    task still copies, and the grid's other cells run."""
    from unlearnbench.launchers import LaunchOptions
    from unlearnbench.tuning import tune

    plugins = tmp_path / "peeking"
    plugins.mkdir()
    (plugins / "peek.py").write_text(PLUGIN.format(suffix="").replace("tmp_finetune", "peek").replace(
        "        return SingleClassModel(", "        import copy\n        copy.deepcopy(task.data.to('cpu'))\n"
        "        assert len(task.data.val) > 0\n        len(task.data.split('test'))\n"
        "        return SingleClassModel(").replace(
        "    parameters = {\"steps\": 3}", "    parameters = {\"steps\": 3}\n    search_space = {\"steps\": Int(1, 3)}").replace(
        "from unlearnbench import", "from unlearnbench.search_space import Int\nfrom unlearnbench import"))
    grid = load_grid(str(write_grid(tmp_path, methods=["original", "peek"], forget_classes=[0],
                                    tuning={"trials": 1, "forget_classes": [0]})))
    result = run(grid, options(tmp_path, shared_cache, plugins=[plugins]))
    (failure,) = [f for f in result.failures if f["status"] == "failed"]
    assert failure["method"] == "peek" and failure["reason"].startswith(
        "UserError: The test split is withheld from unlearning methods: a method trains, stops and chooses on "
        "task.data.train and task.data.val only; the metrics alone read the test split")
    assert set(result.records.method) == {"original"}
    trials = tune(grid, options(tmp_path, shared_cache, plugins=[plugins]), LaunchOptions(workers=0),
                  tmp_path / "tuning").trials
    assert trials.error.str.contains("The test split is withheld").all()
    from unlearnbench.data import load_dataset

    moved = load_dataset("mnist5k", cache_dir=tmp_path / "c").without_test().to("cpu")  # moving it is no use
    with pytest.raises(UserError, match="The test split is withheld"):
        len(moved.test)


@pytest.mark.parametrize("change", [
    "x, _ = next(iter(task.data.batches(task.data.train, 16)))\n        task.original.train()(x)",  # BatchNorm statistics
    "for p in task.original.parameters():\n            p.data.mul_(0.5)",  # through .data: no version counter moves
])
def test_a_method_that_changes_the_shared_original_in_place_fails_and_the_next_cells_get_it_intact(tmp_path,
                                                                                                    shared_cache, change):
    """Methods share the worker's original (and retrained) models and must copy before training. One that trained
    the original itself in train mode (its BatchNorm statistics move) ran without a word, and every later cell of
    the worker started from its changed model; now its cell fails saying so and the model is loaded again."""
    plugins = tmp_path / "careless"
    plugins.mkdir()
    (plugins / "careless.py").write_text(PLUGIN.format(suffix="").replace("tmp_finetune", "careless").replace(
        "model = task.copy_original().train()", f"{change}\n        model = task.copy_original().train()"))
    methods = ["careless", "original", {"name": "finetune", "params": {"steps": 3}}]
    grid = load_grid(str(write_grid(tmp_path, methods=methods, forget_classes=[0, 1])))
    result = run(grid, options(tmp_path, shared_cache, name="with", plugins=[plugins]))
    failures = [f for f in result.failures if f["status"] == "failed"]
    assert [f["method"] for f in failures] == ["careless", "careless"], failures
    assert all(f["reason"].startswith("UserError: Method 'careless' changed a model it was given in place")
               for f in failures), [f["reason"] for f in failures]
    clean = run(load_grid(str(write_grid(tmp_path, "clean.yaml", methods=methods[1:], forget_classes=[0, 1]))),
                options(tmp_path, tmp_path / "fresh-cache", name="without"))
    values = [r.records[~r.records.metric.isin(["unlearn_seconds", "device_seconds", "peak_memory_bytes"])]
              .sort_values(["method", "forget_class", "split", "metric"])[["method", "metric", "value"]]
              .reset_index(drop=True) for r in (result, clean)]
    pd.testing.assert_frame_equal(values[0], values[1])  # the cells after it saw the intact original


BROKEN_MODELS = """
from torch import nn
from unlearnbench import SingleClassModel, UnlearnedModel, Unlearner


class WrongHead(Unlearner):
    name = "wrong_head"

    def unlearn(self, task):
        return SingleClassModel(nn.Sequential(task.copy_original(), nn.Linear(10, 5)), task.forget_class)


class WrongClass(Unlearner):
    name = "wrong_class"

    def unlearn(self, task):
        return SingleClassModel(task.copy_original(), (task.forget_class + 1) % 10)


class Bare(UnlearnedModel):
    def __init__(self, net, forget_class):
        super().__init__()
        self.net, self.forget_class = net, forget_class

    def classes(self):
        return [self.forget_class]


class NoForClass(Unlearner):
    name = "no_for_class"

    def unlearn(self, task):
        return Bare(task.copy_original(), task.forget_class)


class OneRoundOneClass(Unlearner):
    name = "one_round_one_class"
    per_class = False

    def unlearn(self, task):
        return SingleClassModel(task.copy_original(), task.forget_classes[0])
"""


def test_a_model_that_does_not_serve_the_cell_s_classes_or_logits_fails_its_cell_in_one_sentence(tmp_path,
                                                                                                 shared_cache):
    """A method whose model gave [N, 5] logits on a 10-class dataset was recorded as a result (15.9 % / 0.0 %; a
    metric comparing with the retrained model failed naming neither); a model serving another class was evaluated
    on the cell's; one without for_class raised a bare NotImplementedError; a one-round method returning one
    class's model failed in a metric with 'This model was unlearned on class 0, not 1'."""
    plugins = tmp_path / "broken"
    plugins.mkdir()
    (plugins / "broken.py").write_text(BROKEN_MODELS)
    grid = load_grid(str(write_grid(tmp_path, methods=["original", "wrong_head", "wrong_class", "no_for_class",
                                                       "one_round_one_class"], forget_classes=[0, 1],
                                    metrics=["accuracy"], **SMALL)))
    result = run(grid, options(tmp_path, shared_cache, plugins=[plugins]))
    reasons = {(f["method"], f["forget_class"]): f["reason"] for f in result.failures if f["status"] == "failed"}
    per_class = "a per-class method's model must serve its forget class"
    assert reasons == {
        **{("wrong_head", c): f"UserError: Method 'wrong_head' returned a model giving logits of shape [2, 5] for "
                              f"class {c}; the dataset has 10 classes: [N, 10] logits are expected" for c in (0, 1)},
        **{("wrong_class", c): f"UserError: Method 'wrong_class' returned a model serving classes [{c + 1}]; "
                               f"{per_class} {c}" for c in (0, 1)},
        **{("no_for_class", c): f"UserError: Method 'no_for_class' returned a Bare whose for_class({c}) did not "
                                f"answer (NotImplementedError: Bare does not define for_class(forget_class), which "
                                f"every UnlearnedModel must); {per_class} {c}" for c in (0, 1)},
        ("one_round_one_class", None): "UserError: Method 'one_round_one_class' returned a model serving classes "
                                        "[0]; a one-round method's model must serve every class of the round, "
                                        "[0, 1]",
    }, reasons
    assert set(result.records.method) == {"original"}


def test_the_serving_check_runs_a_model_as_the_metrics_do_and_leaves_it_as_it_was(shared_cache):
    """The check ran `for_class(c)` as returned: a network the model does not register (held in a list), left in
    train mode, had its BatchNorm statistics moved by the two check images, so every metric read another model;
    and it ran under the device's autocast, which the metrics do not use."""
    from types import SimpleNamespace

    from torch import nn

    from unlearnbench import UnlearnedModel
    from unlearnbench.data import load_dataset
    from unlearnbench.execution import check_serves

    class Unregistered(UnlearnedModel):
        def __init__(self, net):
            super().__init__()
            self.held = [net]  # not a submodule: model.eval() does not reach it

        def for_class(self, forget_class):
            return self.held[0]

        def classes(self):
            return [0]

    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10), nn.BatchNorm1d(10)).train()
    before = net[2].running_mean.clone()
    data = load_dataset("mnist5k", cache_dir=shared_cache)
    check_serves(Unregistered(net).eval(), SimpleNamespace(method="unregistered", evaluated_classes=[0]), data, True)
    assert torch.equal(net[2].running_mean, before) and net.training


def test_a_method_in_a_folder_is_discovered_and_only_its_cells_recompute(tmp_path, shared_cache):
    plugins = tmp_path / "my_methods"
    plugins.mkdir()
    (plugins / "finetune.py").write_text(PLUGIN.format(suffix=""))
    grid = load_grid(str(write_grid(tmp_path, methods=["retrain", "tmp_finetune"])))
    result = run(grid, options(tmp_path, shared_cache, name="a", plugins=[plugins]))
    assert result.computed + result.cached == 4
    assert set(result.records.method) == {"retrain", "tmp_finetune"}
    (plugins / "finetune.py").write_text(PLUGIN.format(suffix="Edited"))
    again = run(grid, options(tmp_path, shared_cache, name="b", plugins=[plugins]))
    assert (again.computed, again.cached) == (2, 2)  # the edited method's two cells, nothing else


SCALED = """
import torch
from unlearnbench import SharedModel, Unlearner

SCALE = {scale}


class Scaled(Unlearner):
    name = "scaled"
    per_class = False

    def unlearn(self, task):
        model = task.copy_original()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(SCALE)
        return SharedModel(model, task.data.num_classes)
"""


def test_a_plugin_edited_between_two_runs_in_one_process_runs_the_edited_code(tmp_path, shared_cache):
    """The Python API in one process (a notebook): a method file edited between two runs is imported again, so the
    second run computes with the edited code, under the edited code's key. Before, it keyed the cell by the file on
    disk but ran the class the first run imported: the old code's records were cached under the new code's key
    (a fresh process then took them from the cache)."""
    plugins = tmp_path / "scaling"
    plugins.mkdir()
    (plugins / "scaled.py").write_text(SCALED.format(scale=1.0))
    grid = load_grid(str(write_grid(tmp_path, methods=["scaled"], forget_classes=[0])))

    def retain_accuracy(name):
        result = run(grid, options(tmp_path, shared_cache, name=name, plugins=[plugins]))
        assert result.computed == 1 and not result.failures
        rows = result.records[(result.records.metric == "acc_retain") & (result.records.split == "test")]
        return float(rows.value.iloc[0])

    kept = retain_accuracy("a")  # the original's weights, unchanged
    assert kept > 0.5
    (plugins / "scaled.py").write_text(SCALED.format(scale=0.0))
    zeroed = retain_accuracy("b")  # every weight 0: one output for every image
    assert zeroed < 0.2


@pytest.mark.parametrize("body, reason, kind", [
    ("raise RuntimeError('boom in class %d' % task.forget_class)", "boom in class", "RuntimeError"),
    # before: sys.exit() ended the run with its code, printing nothing, with no failure row and no report
    ("sys.exit(3)", "SystemExit: 3", "SystemExit")])
def test_failing_method_and_broken_plugin_do_not_stop_the_grid(tmp_path, shared_cache, capsys, body, reason, kind):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("import not_a_module_anywhere\n")
    (plugins / "crashing.py").write_text(
        "import sys\n"
        "from unlearnbench import Unlearner\n"
        "class Crash(Unlearner):\n"
        "    name = 'crash'\n"
        "    def unlearn(self, task):\n"
        f"        {body}\n"
    )
    grid_file = write_grid(tmp_path, methods=["crash", "original"])
    code = main(["--grid", str(grid_file), "--out", str(tmp_path / "run"), "--cache-dir", str(shared_cache),
                 "--plugins", str(plugins), "--device", "cpu", "--quiet", "--workers", "0"])
    assert code == 1
    failures = pd.read_csv(tmp_path / "run" / "failures.csv")
    crashed = failures[failures.status == "failed"]
    assert len(crashed) == 2 and crashed.reason.str.contains(reason).all()
    assert crashed.traceback.str.contains(kind).all()
    assert (failures.status == "plugin-error").sum() == 1
    records = pd.read_csv(tmp_path / "run" / "records.csv")
    assert set(records.method) == {"original"}
    assert "2 failed" in capsys.readouterr().out and (tmp_path / "run" / "report" / "index.md").is_file()


RAISING_PLUGINS = {
    "made.py": "class Made(Unlearner):\n    name = 'made'\n\n    def __init__(self):\n"
               "        raise RuntimeError('boom in init')\n",
    "skips.py": "class Skips(Unlearner):\n    name = 'skips'\n\n    def skip(self, dataset, backbone):\n"
                "        if backbone.name == 'vgg16':\n            raise RuntimeError('boom on vgg')\n"
                "        return False, None\n",
}


def test_a_method_whose_init_or_skip_raises_is_a_plugin_error_and_the_rest_is_planned(tmp_path, capsys):
    """Either once ended every run and dry run with a traceback. A skip() that raises drops only the cells it
    raised for."""
    from unlearnbench.planning import plan

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name, body in RAISING_PLUGINS.items():
        (plugins / name).write_text("from unlearnbench import Unlearner\n\n\n" + body)
    grid_file = write_grid(tmp_path, methods=["original", "made", "skips"],
                           backbones=[{"name": "vgg16", "width": 0.0625}, {"name": "resnet18", "width": 0.0625}])
    p = plan(load_grid(str(grid_file)), RunOptions(cache_dir=tmp_path / "c", device="cpu", plugins=[plugins]))
    assert sorted({(c.method, c.backbone.name) for c in p.cells}) == [
        ("original", "resnet18"), ("original", "vgg16"), ("skips", "resnet18")]
    said = {e.message.splitlines()[0] for e in p.plugin_errors if e.kind == "runtime"}
    assert said == {f"Method 'made' in {plugins / 'made.py'}: creating it raised RuntimeError: boom in init.",
                    f"Method 'skips' in {plugins / 'skips.py'}: skip('mnist5k', 'vgg16-w0.0625') raised "
                    f"RuntimeError: boom on vgg."}
    assert main(["--grid", str(grid_file), "--plugins", str(plugins), "--cache-dir", str(tmp_path / "c"),
                 "--device", "cpu", "--dry-run"]) == 1  # the plan is printed; the run would exit 1 too
    assert "creating it raised RuntimeError: boom in init" in capsys.readouterr().out


def test_a_grid_method_that_failed_to_load_or_be_made_is_named_with_its_plugin_error(tmp_path, capsys):
    """These once said "Unknown method 'x'; discovered: <only the grid's methods>" or "--only method=made matches no
    cell", hiding the plugin file that failed."""
    from unlearnbench.planning import plan

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("import a_module_that_is_not_installed\n")
    (plugins / "made.py").write_text("from unlearnbench import Unlearner\n\n\n" + RAISING_PLUGINS["made.py"])
    (plugins / "declared.py").write_text("from unlearnbench import Unlearner\n\n\nclass Declared(Unlearner):\n"
                                         "    name = 'declared'\n    parameters = {'lr': 0.1}\n"
                                         "    parameter_ranges = {'lr': 5}\n")
    options = RunOptions(cache_dir=tmp_path / "c", device="cpu", plugins=[plugins])

    def planned(methods, **more):
        return plan(load_grid(str(write_grid(tmp_path, methods=methods))), dataclasses.replace(options, **more))

    with pytest.raises(UserError) as raised:
        planned(["original", "from_broken"])
    said = str(raised.value)
    assert "Unknown method 'from_broken'" in said and "retrain" in said  # every discovered method, not the grid's
    assert (f"it may be in a plugin file that failed: {plugins / 'broken.py'} (ModuleNotFoundError: No module "
            f"named 'a_module_that_is_not_installed')." in said) and "declared.py" not in said  # loaded; not it
    with pytest.raises(UserError, match=r"Method 'declared' in .*declared\.py: .*parameter_ranges.*fix it to run"):
        planned(["original", "declared"])
    with pytest.raises(UserError, match=r"--only method=made matches no cell of grid 'tiny': Method 'made' in .*"
                                        r"creating it raised RuntimeError: boom in init; fix it to run 'made'\."):
        planned(["original", "made"], only={"method": "made"})
    assert {c.method for c in planned(["original", "made"], only={"method": "original"}).cells} == {"original"}
    (plugins / "quoted.py").write_text(RAISING_PLUGINS["made.py"].replace("'made'", '"o\'made"').replace(
        "class Made", "from unlearnbench import Unlearner\n\n\nclass Quoted"))  # a name with a quote in it
    with pytest.raises(UserError, match=r"--only method=o'made matches no cell of grid 'tiny': Method 'o'made' in"):
        planned(["original", "o'made"], only={"method": "o'made"})
    assert main(["list", "--plugins", str(plugins)]) == 0  # says why a plugin file failed, not only which
    assert (f"(failed to import: {plugins / 'broken.py'}: ModuleNotFoundError: No module named "
            f"'a_module_that_is_not_installed')") in capsys.readouterr().out


def test_dry_run_prints_the_plan_and_paper_grid_skips_missing_data(tmp_path, capsys):
    assert main(["--grid", str(write_grid(tmp_path)), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "3 cells to run" in out and "retrain" in out and "2 retrained models" in out
    assert main(["--grid", "paper", "--dry-run", "--data-root", str(tmp_path), "--only", "backbone=resnet18",
                 "--only", "method=original", "--cache-dir", str(tmp_path / "c")]) == 1  # nothing would run
    out = capsys.readouterr().out
    assert "0 cells to run, 3 skipped" in out
    assert "Dataset 'mnist' not found" in out and "cifar10" in out and "imagenet" in out


@pytest.mark.parametrize("argv,message", [
    (["--grid", "smoek"], "Unknown grid 'smoek' (did you mean 'smoke'?)"),
    (["--only", "methd=retrain"], "Unknown --only key 'methd' (did you mean 'method'?)"),
    (["--only", "retrain"], "--only expects KEY=VALUE"),
    (["--device", "cuda:0"], "CUDA is not available"),
    (["--plugins", "/nonexistent/dir"], "Plugin folder /nonexistent/dir does not exist; give the folder"),
    (["--plugins", "/etc/passwd"], "Plugin folder /etc/passwd is a file; give the folder"),
])
def test_cli_bad_input_is_one_sentence(argv, message, tmp_path, capsys):
    import torch

    if "cuda:0" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main([*argv, "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_out_of_range_class_and_unwritable_output(tmp_path, capsys):
    assert main(["--grid", str(write_grid(tmp_path, forget_classes=[3, 12])), "--dry-run"]) == 2
    assert "Forget class 12 is outside dataset 'mnist5k'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=rf"^Cannot make the output folder {blocker / 'sub'}: {blocker} above it is a "
                                        rf"file; pass a folder\.$"):  # before: ': Not a directory.'
        run(load_grid(str(write_grid(tmp_path))), RunOptions(out=blocker / "sub", cache_dir=tmp_path / "c", device="cpu"))


def test_a_cached_retrained_model_is_charged_at_its_training_cost(tmp_path):
    grid = load_grid(str(write_grid(tmp_path, methods=["retrain"], forget_classes=[0])))
    cache = tmp_path / "cache"
    fresh = run(grid, options(tmp_path, cache, name="fresh"))
    (cache / "cells").rename(tmp_path / "cells-moved")  # force the cell to run again, with the model cached
    again = run(grid, options(tmp_path, cache, name="again", report=True))
    assert again.computed == 1 and "stage retrained-0" not in (tmp_path / "again" / "log.txt").read_text()
    seconds = [r.records.query("metric == 'unlearn_seconds'").value.item() for r in (fresh, again)]
    assert seconds[1] >= 0.5 * seconds[0] > 0  # not ~0 just because the model came from the cache
    assert (tmp_path / "again" / "report" / "index.md").is_file()  # every run gets its report


def test_cells_and_stages_are_keyed_by_device_type_and_autocast_precision(tmp_path, monkeypatch):
    """A cell (and the original it uses) cached in float32 is not reused by a run under bf16 autocast, and the
    plan counts it as cached only for the precision it was computed in; a cell key names the device type, not
    its index."""
    import unlearnbench.training as training
    from unlearnbench.planning import cell_key, describe_plan, metric_names, plan
    from unlearnbench.store import Cache

    grid = load_grid(str(write_grid(tmp_path, methods=["original"], forget_classes=[0], **SMALL)))
    cache = tmp_path / "cache"
    assert run(grid, options(tmp_path, cache, name="fp32")).computed == 1

    def cached_in_plan() -> str:
        opts = options(tmp_path, cache)
        return describe_plan(grid, plan(grid, opts), Cache(cache), metric_names(grid)).split("cached cells: ")[1][:6]

    assert cached_in_plan() == "1 of 1"
    monkeypatch.setattr(training, "autocast_dtype", lambda device: torch.bfloat16)
    assert training.compute_setting(torch.device("cpu"))["precision"] == "bfloat16-autocast"
    assert cached_in_plan() == "0 of 1"
    bf16 = run(grid, options(tmp_path, cache, name="bf16"))
    assert (bf16.computed, bf16.cached) == (1, 0)
    assert len(list((cache / "models" / "original").glob("*.safetensors"))) == 2

    p = plan(grid, options(tmp_path, cache))
    cell, info = p.cells[0], p.methods["original"]
    keys = {d: cell_key(cell, grid, info, torch.device(d)) for d in ("cpu", "cuda:0", "cuda:1")}
    assert keys["cuda:0"] == keys["cuda:1"] != keys["cpu"]


def test_a_run_folder_refuses_a_run_that_reads_other_files_or_computes_otherwise(tmp_path, shared_cache, monkeypatch):
    """Runs into one folder (--only slices) pool their records: one on another tree under the same labels, in
    another precision or on another device type was written beside the first run's rows, and config.yaml then
    named the second run's data root only. Now refused in one sentence, the earlier records untouched."""
    import unlearnbench.training as training

    from test_streaming import write_tree

    write_tree(tmp_path / "a", classes=2, train=8, test=2, size=12)
    write_tree(tmp_path / "b", classes=2, train=8, test=2, size=12, seed=1)
    grid = load_grid(str(write_grid(tmp_path, datasets=["imagefolder"], methods=["original"], forget_classes=[0],
                                    seeds=[0, 1])))
    first = run(grid, options(tmp_path, shared_cache, name="run", data_root=tmp_path / "a", only={"seed": 0}))
    assert not first.failures
    records = (tmp_path / "run" / "records.csv").read_text()
    with pytest.raises(UserError, match=r"holds results of dataset imagefolder computed under other data files "
                                        r"\(.*\), which this run's would be pooled with; pass another --out"):
        run(grid, options(tmp_path, shared_cache, name="run", data_root=tmp_path / "b", only={"seed": 1}))
    monkeypatch.setattr(training, "autocast_dtype", lambda device: torch.bfloat16)
    with pytest.raises(UserError, match=r"holds results of dataset imagefolder computed under other device and "
                                        r"precision \(cpu, float32 against cpu, bfloat16-autocast\)"):
        run(grid, options(tmp_path, shared_cache, name="run", data_root=tmp_path / "a", only={"seed": 1}))
    monkeypatch.undo()
    assert (tmp_path / "run" / "records.csv").read_text() == records
    second = run(grid, options(tmp_path, shared_cache, name="run", data_root=tmp_path / "a", only={"seed": 1}))
    assert set(second.records.seed) == {0, 1}  # the same files and setting: the slices add up
    (tmp_path / "empty").mkdir()
    missing = run(grid, options(tmp_path, shared_cache, name="later", data_root=tmp_path / "empty"))
    assert missing.records.empty  # the tree missing: its cells skipped, no records of it to pool with
    assert not run(grid, options(tmp_path, shared_cache, name="later", data_root=tmp_path / "a")).failures


def test_keys_name_numpy_scikit_learn_and_the_seed_helpers_code(tmp_path, monkeypatch):
    """numpy draws the validation carve, subsets and attack samples, scikit-learn fits the probe and membership
    attacks, derive_seed picks retrained replicates' seeds: another version or edit keys cells, the records of the
    metrics that fit scikit-learn models (only those) and stage models apart (they were keyed by torch, torchvision
    and timm only, and the stage code list left out derive_seed's module)."""
    from unlearnbench import planning, stages, store
    from unlearnbench.planning import cell_key, metric_key, plan
    from unlearnbench.training import Recipe

    grid = load_grid(str(write_grid(tmp_path, methods=["original"], forget_classes=[0], metrics=["probe"])))
    p = plan(grid, options(tmp_path, tmp_path / "cache"))
    cell, info, device = p.cells[0], p.methods["original"], torch.device("cpu")

    def keys():
        key = cell_key(cell, grid, info, device)
        return (key, metric_key(key, grid, "probe"), stages.stage_key_base({}, cell.backbone, Recipe(), 0, device),
                metric_key(key, grid, "accuracy"))

    before = keys()
    real = store.versions()
    monkeypatch.setattr(store, "versions", lambda: {**real, "numpy": "0.0"})
    moved = keys()
    assert moved[0] != before[0] and moved[2] != before[2]
    monkeypatch.setattr(planning, "metric_library_versions", lambda: {"scikit-learn": "0.0"})
    assert keys()[1] != moved[1] and keys()[0] == moved[0] and keys()[3] == moved[3]
    calls = []
    monkeypatch.setattr(stages, "code_hash", lambda *names: calls.append(names) or "h")
    keys()
    assert any("seeds" in names for names in calls)


def test_precision_float32_turns_cuda_autocast_off_and_keys_the_caches_apart(monkeypatch):
    """`--precision float32` reaches every worker through the environment: CUDA then computes in float32 with no
    autocast, and its cache keys say float32, apart from the default bf16-autocast ones."""
    import unlearnbench.training as training
    from unlearnbench.cli import _options, build_parser
    from unlearnbench.planning import plan

    cuda = torch.device("cuda:0")
    monkeypatch.setenv(training.PRECISION_VARIABLE, "auto")  # restored (removed) after the test
    assert training.autocast_dtype(cuda) is torch.bfloat16
    auto = training.compute_setting(cuda)
    args = build_parser().parse_args(["tune", "--grid", "smoke", "--precision", "float32", "--device", "cpu"])
    options, _ = _options(args, [], load_grid("smoke"), None, {})
    assert options.precision == "float32"  # each job carries it and sets it in its worker (execution.run_job)
    plan(load_grid("smoke"), options)  # planning sets it for this process's cache keys
    assert os.environ[training.PRECISION_VARIABLE] == "float32"
    assert training.autocast_dtype(cuda) is None
    assert isinstance(training.autocast(cuda), contextlib.nullcontext)
    assert training.compute_setting(cuda) == {"device_type": "cuda", "precision": "float32"} != auto
    assert training.compute_setting(torch.device("cpu"))["precision"] == "float32"
    with pytest.raises(UserError, match="Unknown precision 'fp16'; choose auto or float32"):
        plan(load_grid("smoke"), RunOptions(precision="fp16"))
    from unlearnbench.execution import GroupKey, make_jobs
    from unlearnbench.launchers import LaunchOptions

    grid, cell = load_grid("smoke"), plan(load_grid("smoke"), options).cells[0]
    kept = [GroupKey.of(make_jobs("cell", [cell], grid, dataclasses.replace(options, precision=p), LaunchOptions(),
                                  cuda, Path("log.txt"))[0]) for p in ("auto", "float32")]
    assert kept[0] != kept[1]  # a worker keeps no bf16 stage model in memory for a float32 job (Python API)


def test_the_cpu_model_is_read_from_cpuinfo_s_first_model_name_or_hardware_line():
    from unlearnbench.store import _cpuinfo_name

    texts = {"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R)  Xeon(R)   Processor @ 2.1GHz\n"
             "processor\t: 1\nmodel name\t: another\n": "Intel(R) Xeon(R) Processor @ 2.1GHz",
             "processor\t: 0\nBogoMIPS\t: 50.00\nHardware\t: BCM2835\n": "BCM2835",
             "processor\t: 0\nBogoMIPS\t: 50.00\n": "", "": ""}
    for text, name in texts.items():
        assert _cpuinfo_name(text) == name
    assert cpu_model().endswith(f", {torch.backends.cpu.get_cpu_capability()}")


def test_records_name_the_device_and_commit_that_computed_them_even_from_the_cache(tmp_path, monkeypatch):
    """A cell computed with one torch thread at one commit keeps saying so when a two-thread run at another commit
    takes it from the cache (before, every record was stamped with the commit of the run that wrote the file)."""
    from unlearnbench import execution, runner
    from unlearnbench.launchers import LaunchOptions

    plugins = tmp_path / "my_methods"
    plugins.mkdir()
    (plugins / "finetune.py").write_text(PLUGIN.format(suffix=""))
    grid = load_grid(str(write_grid(tmp_path, methods=["tmp_finetune"], **SMALL)))
    cache = tmp_path / "cache"

    def at_commit(commit: str) -> None:  # the cells run in this process (no workers)
        for module in (execution, runner):
            monkeypatch.setattr(module, "git_commit", lambda: commit, raising=False)

    at_commit("aaaaaaa")
    run(grid, options(tmp_path, cache, name="one", plugins=[plugins], only={"forget_class": "0"}),
        LaunchOptions(threads=1))
    at_commit("bbbbbbb")
    both = run(grid, options(tmp_path, cache, name="two", plugins=[plugins]), LaunchOptions(threads=2))
    assert (both.computed, both.cached) == (1, 1)
    frame = pd.read_csv(both.run_dir / "records.csv")
    devices = frame.groupby("forget_class").device.unique()
    assert list(devices[0]) == [device_name(torch.device("cpu"), 1)]
    assert list(devices[1]) == [device_name(torch.device("cpu"), 2)]
    # the CPU's model and the instructions torch dispatches to: the same run differs between two CPUs
    # (reports/sota-spread), so a record says which computed it
    assert devices[0][0].endswith(f", {torch.backends.cpu.get_cpu_capability()})")
    assert devices[0][0] == f"cpu (1 threads, {cpu_model()})"
    commits = frame.groupby("forget_class").git_commit.unique()
    assert (list(commits[0]), list(commits[1])) == (["aaaaaaa"], ["bbbbbbb"])
    assert list(frame.columns[: len(RECORD_COLUMNS) + 1]) == [*RECORD_COLUMNS, "device"]


def test_retrained_models_the_metrics_need_are_their_own_stage_jobs(tmp_path):
    """With retrain in the grid and a metric comparing with it, each (group, class) the other cells compare with
    gets one retrained-model stage, also where --only left the retrain cells out; a one-round cell needs one per
    forget class; a grid without retrain (unless `train_missing` asks), a recipe of 0 epochs, or metrics that never
    compare with retrained models need none."""
    from unlearnbench.grid import parse_grid
    from unlearnbench.planning import metric_names, plan, retrained_models

    base = dict(datasets=["mnist5k"], backbones=[{"name": "vgg16", "width": 0.0625}], seeds=[0],
                forget_classes=[0, 1], recipe={"epochs": 1}, metrics=["accuracy", "js_to_retrain"])

    def cells(methods, **kw):
        grid = parse_grid({"name": "t", "methods": methods, **base, **kw})
        p = plan(grid, RunOptions(device="cpu", only={"method": "finetune,wfnet"}))
        return [(c.method, c.forget_class) for c in retrained_models(p.cells, grid, metric_names(grid)).values()], grid

    needed, _ = cells(["retrain", "finetune", "wfnet"])
    assert sorted(needed) == [("retrain", 0), ("retrain", 1)]
    assert cells(["finetune", "wfnet"])[0] == []
    assert len(cells(["finetune", "wfnet"], metric_settings={"js_to_retrain": {"train_missing": True}})[0]) == 2
    assert cells(["retrain", "finetune", "wfnet"], metrics=["accuracy", "zrf"])[0] == []
    (tmp_path / "x.safetensors").write_bytes(b"")  # there (planning checks that), never loaded
    planned, grid = cells(["retrain", "finetune", "wfnet"], recipe={"epochs": 0},
                          backbones=[{"name": "vgg16", "width": 0.0625, "pretrained": str(tmp_path / "x.safetensors")}])
    assert planned == [] and plan(grid, RunOptions(device="cpu", only={"method": "finetune,wfnet"})).cells


def test_a_run_without_its_retrain_cells_trains_each_retrained_model_once_before_the_cells(tmp_path, monkeypatch):
    """--only without retrain: the metrics still compare with retrained models (the grid has retrain), so each is
    trained once, as its own job after the original's and before every cell, not inside the cells (where several
    workers would train the same one at once). Jobs are recorded, not run."""
    import unlearnbench.runner as runner
    from unlearnbench.execution import Outcome

    seen = []
    monkeypatch.setattr(runner, "run_job", lambda job: seen.append(
        (job.kind, job.cell.method, job.cell.forget_class)) or Outcome(job, records=[]))
    grid = load_grid(str(write_grid(tmp_path, methods=["retrain", "finetune", "wfnet"],
                                    metrics=["accuracy", "js_to_retrain"])))
    result = run(grid, options(tmp_path, tmp_path / "cache", only={"method": "finetune,wfnet"}))
    assert seen[:3] == [("original", "finetune", 0), ("retrained", "retrain", 0), ("retrained", "retrain", 1)]
    assert sorted(seen[3:], key=str) == [("cell", "finetune", 0), ("cell", "finetune", 1), ("cell", "wfnet", None)]
    assert (result.computed, result.failures) == (3, [])  # the stage jobs are not cells
    # a failed retrained model is logged (its cells then try again themselves, and fail alike if it repeats)
    seen.clear()
    monkeypatch.setattr(runner, "run_job", lambda job: seen.append(job.kind) or (
        Outcome(job, failure={"reason": "out of disk"}) if job.kind == "retrained" else Outcome(job, records=[])))
    again = run(grid, options(tmp_path, tmp_path / "cache2", name="again", only={"method": "finetune"}))
    assert seen == ["original", "retrained", "retrained", "cell", "cell"] and again.computed == 2
    assert "retrained model of class 1 for mnist5k/vgg16-w0.0625 seed 0 failed: out of disk" in (
        again.run_dir / "log.txt").read_text()


def test_the_plan_counts_the_retrained_replicates_epsilon_trains(tmp_path):
    """Epsilon with N models trains N reference replicates a class, and the retrain method's N − 1 reruns where
    the grid runs it: the plan's stage count and cost estimate include them (mini-epsilon trained 64, not 8)."""
    from unlearnbench.planning import describe_plan, metric_names, plan, stage_retrained_counts
    from unlearnbench.store import Cache

    for methods, expected in ((["original", "retrain"], 2 + 2 * (3 + 2)), (["original", "negative_gradient"], 2 * 3)):
        grid = load_grid(str(write_grid(tmp_path, f"{methods[1]}.yaml", methods=methods,
                                        metrics=["accuracy", "epsilon"], metric_settings={"epsilon": {"models": 3}})))
        p = plan(grid, RunOptions(cache_dir=tmp_path / "c", device="cpu"))
        assert sum(stage_retrained_counts(p.cells, grid, metric_names(grid)).values()) == expected
        text = describe_plan(grid, p, Cache(tmp_path / "c"), metric_names(grid))
        assert f"stages: 1 original models, {expected} retrained models" in text


def test_the_plan_counts_the_replicates_any_metric_declares(tmp_path, monkeypatch):
    """A metric (a plugin's, say) that declares reruns and retrained replicates at registration is counted as
    epsilon is: its replicates of every forget class, and the retrain method's reruns (replicates 1 … reruns)."""
    from unlearnbench.metrics.base import METRICS, Metric
    from unlearnbench.planning import metric_names, plan, stage_retrained_counts

    monkeypatch.setitem(METRICS._items, "replicated", Metric(
        "replicated", lambda ctx: [], {"extra": 2}, in_all=False,
        replicates=lambda s: (1, range(10, 10 + s["extra"]))))
    for methods, expected in ((["original", "retrain"], 2 + 2 * (3 + 1)), (["original", "negative_gradient"], 2 * 3)):
        grid = load_grid(str(write_grid(tmp_path, f"{methods[1]}.yaml", methods=methods,
                                        metrics=["accuracy", "replicated"], metric_settings={"replicated": {"extra": 3}})))
        p = plan(grid, RunOptions(cache_dir=tmp_path / "c", device="cpu"))
        assert sum(stage_retrained_counts(p.cells, grid, metric_names(grid)).values()) == expected


def test_a_grid_that_adds_forget_classes_reuses_the_per_class_cells_it_had(tmp_path, shared_cache):
    """A per-class method unlearns its own class alone (its task's forget classes are that class), so its cell keys
    leave out the grid's other classes and a grid adding a class computes only that class's cells (before: every
    cell again); a one-round method (WF-Net) unlearns the grid's classes together, so its cell is another one.
    Tuning trials of a per-class method likewise cover the tuning classes alone."""
    from unlearnbench.planning import cell_key, plan
    from unlearnbench.tuning import trial_cell_classes

    def grid(classes):
        return load_grid(str(write_grid(tmp_path, f"g{len(classes)}.yaml", methods=["finetune", "wfnet"],
                                        forget_classes=classes)))

    one, two = grid([0]), grid([0, 1])
    assert run(one, options(tmp_path, shared_cache, name="one", only={"method": "finetune"})).computed == 1
    again = run(two, options(tmp_path, shared_cache, name="two", only={"method": "finetune"}))
    assert (again.computed, again.cached) == (1, 1)

    def wfnet_key(g):
        p = plan(g, options(tmp_path, shared_cache))
        cell = next(c for c in p.cells if c.method == "wfnet")
        return cell_key(cell, g, p.methods["wfnet"], p.device)

    assert wfnet_key(one) != wfnet_key(two)
    study = plan(two, options(tmp_path, shared_cache)).cells[0]
    assert trial_cell_classes(study, [0], per_class=True).forget_classes == (0,)
    assert trial_cell_classes(study, [0], per_class=False).forget_classes == (0, 1)


def test_cells_whose_original_needs_weights_that_are_not_there_are_skipped_with_the_reason(tmp_path, capsys):
    """An epochs-0 recipe with no weights file, or a `pretrained` path that does not exist: the plan (and so
    --dry-run) skips the cells saying why, as for missing data, instead of planning them and failing each."""
    from unlearnbench.planning import plan

    for name, overrides, reason in [
            ("none", {"recipe": {"epochs": 0}}, "the mnist5k recipe trains 0 epochs, so vgg16-w0.0625 needs "
                                                "pretrained weights: set 'pretrained' on the backbone or put "
                                                "vgg16.safetensors under <data-root>/weights/"),
            ("gone", {"backbones": [{"name": "vgg16", "width": 0.0625, "pretrained": str(tmp_path / "gone.pt")}]},
             f"its pretrained weights file {tmp_path / 'gone.pt'} does not exist")]:
        grid = load_grid(str(write_grid(tmp_path, f"{name}.yaml", methods=["original", "finetune"], **overrides)))
        p = plan(grid, options(tmp_path, tmp_path / "c"))
        assert not p.cells and {r for _, r in p.skipped} == {reason}
    assert main(["--grid", str(tmp_path / "none.yaml"), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 1
    assert "needs pretrained weights" in capsys.readouterr().out


def test_a_grid_that_adds_a_metric_computes_only_that_metric_and_keeps_the_cached_records(tmp_path, monkeypatch):
    """Each metric's records are cached apart from the cell's unlearning: adding zrf to a finished grid runs the
    cells' unlearning again (the model is not cached) but computes only zrf, keeps the accuracy rows and the
    first measurement of the cost rows, and gives the records a fresh run of both metrics gives (before: the
    metrics were in the cell key, so every metric of every cell was computed again)."""
    import dataclasses as dc

    from unlearnbench import execution
    from unlearnbench.metrics.base import METRICS

    computed: list[str] = []

    class Counting:
        def get(self, name):
            metric = METRICS.get(name)
            return dc.replace(metric, compute=lambda ctx: computed.append(name) or metric.compute(ctx))

    monkeypatch.setattr(execution, "METRICS", Counting())
    first = load_grid(str(write_grid(tmp_path, "a.yaml", methods=["original", "retrain"], forget_classes=[0, 1],
                                     **SMALL)))
    both = load_grid(str(write_grid(tmp_path, "b.yaml", methods=["original", "retrain"], forget_classes=[0, 1],
                                    metrics=["accuracy", "zrf"], **SMALL)))
    cache = tmp_path / "cache"
    one = run(first, options(tmp_path, cache, name="one"))
    assert set(computed) == {"accuracy"}
    computed.clear()
    two = run(both, options(tmp_path, cache, name="two"))
    assert (two.computed, two.cached) == (3, 0) and set(computed) == {"zrf"}  # 3 cells, each computing zrf only
    assert "(metrics zrf; the others cached from the same model)" in (tmp_path / "two" / "log.txt").read_text()
    assert two.partial == 3
    assert "3 cells computed (3 of them only metrics the cache lacked), 0 from cache" in (
        tmp_path / "two" / "log.txt").read_text()
    kept = ["unlearn_seconds", "acc_retain", "acc_forget"]
    rows = [r.records[r.records.metric.isin(kept)].reset_index(drop=True) for r in (one, two)]
    pd.testing.assert_frame_equal(rows[0].drop(columns=["git_commit"]), rows[1].drop(columns=["git_commit"]))
    again = run(both, options(tmp_path, cache, name="again"))
    assert (again.computed, again.cached) == (0, 3)
    fresh = run(both, options(tmp_path, tmp_path / "fresh-cache", name="fresh"))
    timing = ["unlearn_seconds", "device_seconds", "peak_memory_bytes"]
    same = [r.records[~r.records.metric.isin(timing)][list(RECORD_COLUMNS)].reset_index(drop=True)
            for r in (two, again, fresh)]
    pd.testing.assert_frame_equal(same[0], same[2])  # the same rows in the same order as computing both at once
    pd.testing.assert_frame_equal(same[1], same[2])


def test_adding_the_retrain_method_recomputes_only_the_metrics_that_compare_with_retrained_models(tmp_path):
    """Whether the grid trains retrained models anyway changes only what js_to_retrain, tow and probe report, so it
    keys those metrics' records; before, it was in every cell's key, and adding `retrain` to a grid computed every
    other method's unlearning and every metric again."""
    from unlearnbench.planning import cell_key, metric_key, plan

    def grid(name, methods):
        return load_grid(str(write_grid(tmp_path, f"{name}.yaml", methods=methods, forget_classes=[0],
                                        metrics=["accuracy", "js_to_retrain"], **SMALL)))

    without, with_retrain = grid("a", ["finetune"]), grid("b", ["finetune", "retrain"])
    keys = []
    for g in (without, with_retrain):
        p = plan(g, options(tmp_path, tmp_path / "cache"))
        cell = next(c for c in p.cells if c.method == "finetune")
        keys.append(cell_key(cell, g, p.methods["finetune"], p.device))
    assert keys[0] == keys[1]
    assert metric_key(keys[0], without, "accuracy") == metric_key(keys[1], with_retrain, "accuracy")
    assert metric_key(keys[0], without, "js_to_retrain") != metric_key(keys[1], with_retrain, "js_to_retrain")
    run(without, options(tmp_path, tmp_path / "cache", name="one"))
    again = run(with_retrain, options(tmp_path, tmp_path / "cache", name="two", only={"method": "finetune"}))
    assert again.partial == 1
    assert "(metrics js_to_retrain; the others cached from the same model)" in (tmp_path / "two" / "log.txt").read_text()


def test_an_added_metric_whose_rerun_unlearning_gives_another_model_recomputes_every_metric(tmp_path, monkeypatch):
    """The cached metrics are kept only when the unlearning run again gives the very model they were computed on
    (its fingerprint); a rerun that differs (on a GPU, or at another CPU thread count) computes every metric and
    replaces the cached cost rows, so a cell's records never describe two models."""
    from unlearnbench import execution

    grid = lambda name, metrics: load_grid(str(write_grid(tmp_path, name, methods=["retrain"], forget_classes=[0],
                                                          metrics=metrics, **SMALL)))
    cache = tmp_path / "cache"
    one = run(grid("a.yaml", ["accuracy"]), options(tmp_path, cache, name="one"))
    fingerprint = execution.model_fingerprint
    monkeypatch.setattr(execution, "model_fingerprint", lambda model: "another" + fingerprint(model))
    two = run(grid("b.yaml", ["accuracy", "zrf"]), options(tmp_path, cache, name="two"))
    assert (two.computed, two.partial) == (1, 0)
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "cached from the same model" not in log and "1 cells computed, 0 from cache" in log
    seconds = [r.records.query("metric == 'unlearn_seconds'").value.item() for r in (one, two)]
    assert seconds[0] != seconds[1]  # measured again: the cost rows are the new model's
    monkeypatch.setattr(execution, "model_fingerprint", fingerprint)
    again = run(grid("b.yaml", ["accuracy", "zrf"]), options(tmp_path, cache, name="again"))
    assert (again.computed, again.cached) == (0, 1)
    assert again.records.query("metric == 'unlearn_seconds'").value.item() == seconds[1]


def test_metric_records_of_a_model_a_later_unlearning_replaced_are_not_taken(tmp_path, monkeypatch):
    """A grid of other metrics whose rerun gives another model replaces the cell's unlearning entry; the records of
    the metrics it did not run belong to the earlier model, so a grid asking for them computes them again (on the
    model the entry names) rather than taking them as the cell's."""
    from unlearnbench import execution

    grid = lambda name, metrics: load_grid(str(write_grid(tmp_path, name, methods=["retrain"], forget_classes=[0],
                                                          metrics=metrics, **SMALL)))
    cache = tmp_path / "cache"
    run(grid("both.yaml", ["accuracy", "zrf"]), options(tmp_path, cache, name="one"))
    fingerprint = execution.model_fingerprint
    monkeypatch.setattr(execution, "model_fingerprint", lambda model: "another" + fingerprint(model))
    two = run(grid("other.yaml", ["accuracy", "mia"]), options(tmp_path, cache, name="two"))
    assert (two.computed, two.partial) == (1, 0)  # mia was missing; the rerun gave another model: all recomputed
    three = run(grid("both.yaml", ["accuracy", "zrf"]), options(tmp_path, cache, name="three"))
    assert (three.computed, three.cached, three.partial) == (1, 0, 1)  # zrf again, accuracy of the same model kept
    assert "(metrics zrf; the others cached from the same model)" in (tmp_path / "three" / "log.txt").read_text()
