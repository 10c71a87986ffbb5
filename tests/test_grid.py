import pytest
import yaml

from unlearnbench import UserError
from unlearnbench.config import read_yaml
from unlearnbench.discovery import discover
from unlearnbench.grid import builtin_grids, expand, load_grid, parse_grid, with_methods

from conftest import write_grid


def test_shipped_grids_load():
    assert {"smoke", "paper"} <= set(builtin_grids())
    smoke = load_grid("smoke")
    assert [d.name for d in smoke.datasets] == ["mnist5k"]
    assert paper_methods_present(smoke)
    assert len({b.family for b in smoke.backbones}) >= 2 and all(b.width < 1 for b in smoke.backbones)
    paper = load_grid("paper")
    assert {d.name for d in paper.datasets} == {"mnist", "cifar10", "imagenet"}
    assert {b.name for b in paper.backbones} == {"vgg16", "resnet18", "vit_tiny", "vit_small"}


def test_the_paper_grid_relearns_up_to_the_papers_100_epochs():
    from unlearnbench.metrics import METRICS
    from unlearnbench.planning import metric_settings

    paper = load_grid("paper")
    assert paper.metric_settings["relearn"] == {"max_epochs": 100}  # stated, not left to the default
    assert METRICS.get("relearn").defaults["max_epochs"] == 100 == metric_settings(paper, "relearn")["max_epochs"]


def test_unknown_grid_name_suggests():
    with pytest.raises(UserError, match="did you mean 'smoke'"):
        load_grid("smoek")
    with pytest.raises(UserError, match="^Give a grid: a shipped name .* got an empty name"):  # was: ". is a folder"
        load_grid("")


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("datasets: [mnist5k\nbackbones: [vgg16]\n")
    with pytest.raises(UserError, match=r"Malformed YAML in .*bad.yaml at line \d+"):
        load_grid(str(path))
    path.write_text("datasets:\n\t- mnist5k\n")  # libyaml's loader says only "found character that cannot start"
    with pytest.raises(UserError, match=r"bad.yaml at line 2, column 1: .* \(a tab: YAML indents with spaces\)\.$"):
        load_grid(str(path))
    # a key listed twice: plain YAML keeps the last silently (here: `original` would vanish from the grid)
    path.write_text("datasets: [mnist5k]\nbackbones: [vgg16]\nmethods: [original]\nmethods: [retrain]\n")
    with pytest.raises(UserError, match=r"bad.yaml at line 4, column 1: key 'methods' appears twice \(lines 3 and "
                                        r"4\); keep one\.$"):
        load_grid(str(path))
    path.write_text("datasets: [mnist5k]\nbackbones: [vgg16]\nbase: &base {lr: 0.1, steps: 5}\n"
                    "methods: [{name: finetune, params: {<<: *base, lr: 0.2}}]\n")  # a merge key, then overridden
    with pytest.raises(UserError, match="Unknown key 'base'"):  # read (the merge is no duplicate), then validated
        load_grid(str(path))


def test_suggestions_are_close_spellings_or_prefixes_never_a_chance_likeness():
    from unlearnbench.errors import did_you_mean

    keys = ["name", "datasets", "backbones", "methods", "seeds", "slurm", "recipe", "metrics"]
    assert did_you_mean("colour", keys) == did_you_mean("objective", keys) == ""  # once 'slurm' and 'recipe'
    assert did_you_mean("seed", keys) == " (did you mean 'seeds'?)"
    assert did_you_mean("vit", ["vgg16", "vit_tiny", "resnet18"]) == " (did you mean 'vit_tiny'?)"


def test_a_wrong_type_is_named_in_a_yaml_users_words():
    from unlearnbench.config import from_mapping
    from unlearnbench.launchers import SlurmOptions

    with pytest.raises(UserError, match=r"got 5, expected text or null\.$"):  # once 'expected str | None'
        from_mapping(SlurmOptions, {"partition": 5}, "slurm: partition")


def test_a_number_in_exponent_form_without_a_point_is_a_number_where_a_float_is_due(tmp_path):
    """PyYAML (YAML 1.1) read `lr: 1e-3` as the string '1e-3', and the grid was refused ('must be a finite number
    like its default 0.003, got '1e-3''); read as a float where one is due, and only there."""
    from unlearnbench.planning import metric_settings

    path = tmp_path / "g.yaml"
    path.write_text("datasets: [mnist5k]\nbackbones: [vgg16]\nmethods: [{name: negative_gradient, params: "
                    "{lr: 1e-3}}]\n")
    cells = expand(load_grid(str(path)), discover()[0], {"mnist5k": 10})
    assert {c.params_dict["lr"] for c in cells} == {0.001}
    path.write_text("datasets: [mnist5k]\nbackbones: [{name: vgg16, width: 625e-4}]\nmethods: [original]\n"
                    "metric_settings: {relearn: {lr: 1E-2}}\n")  # a float field; a metric's float setting
    grid = load_grid(str(path))
    assert grid.backbones[0].width == 0.0625 and metric_settings(grid, "relearn")["lr"] == 0.01
    path.write_text("git_commit: 5e32277\nmax_epochs: 1e2\n")  # text the suite writes unquoted stays text; a
    assert read_yaml(path) == {"git_commit": "5e32277", "max_epochs": "1e2"}  # number only where a float is due


@pytest.mark.parametrize("raw,message", [
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "seed": [0]}, r"Unknown key 'seed'.*did you mean 'seeds'"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "widht": 0.5}]}, r"Unknown key 'widht'.*did you mean 'width'"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "width": "half"}]},
     r"'width'.*wrong type: got 'half', expected a number\.$"),
    ({"datasets": ["mnits"], "backbones": ["vgg16"]}, r"Unknown dataset 'mnits'"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "seeds": "zero"}, r"'seeds'.*list of distinct integers"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "forget_classes": [1, "x"]}, r"'forget_classes'"),
    ({"datasets": ["mnist5k"]}, r"needs a non-empty 'backbones'"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "recipe": {"mnsit5k/vit": {"epochs": 1}}},
     r"Recipe section 'mnsit5k/vit'.*names 'mnsit5k'.*did you mean 'mnist5k'"),
    ({"datasets": [{"name": "mnist5k", "train_per_class": 0}], "backbones": ["vgg16"]}, r"'train_per_class'.*≥ 1"),
    (["mnist5k"], r"must be a YAML mapping"),
    ({"datasets": [{"name": ["mnist5k"]}], "backbones": ["vgg16"]}, r"A dataset in .* with a 'name' string"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "methods": [{"name": ["retrain"]}]},
     r"A method in .* with a 'name' string"),
    ({"datasets": ["mnist5k"], "backbones": [{"width": 0.5}]}, r"a backbone of test grid needs 'name'"),
    ({"datasets": [{"name": "imagefolder", "path": 5}], "backbones": ["vgg16"]}, r"'path' of dataset .* got 5\."),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "width": float("nan")}]}, r"finite width > 0"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "depth": float("inf")}]}, r"got width 1.0, depth inf"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vit_tiny", "patch": -1}]}, r"'patch' .* integer ≥ 1.*got -1"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "patch": 4}]}, r"'patch' .* only to ViT backbones"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vit_tiny", "mean": [0.5, 0.5, 0.5]}]},
     r"gives 'mean' without 'std'"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vit_tiny", "mean": [0.5], "std": [0.0]}]},
     r"'mean' and 'std' .* each std > 0; got \[0.5\] and \[0.0\]"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vit_tiny", "mean": [0.5, 0.5], "std": [0.5]}]},
     r"of equal length"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vit_tiny", "mean": 0.5, "std": 0.5}]}, r"wrong type"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "depth": 5}]}, r"'depth' .* only to ViT backbones"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "metrics": []}, r"'metrics' .* non-empty list of metric"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "forget_classes": [1, 1]}, r"distinct class indices.*\[1, 1\]"),
    ({"name": "../../x", "datasets": ["mnist5k"], "backbones": ["vgg16"]}, r"'name' .* one folder name.*'\.\./\.\./x'"),
    ({"name": "a/b", "datasets": ["mnist5k"], "backbones": ["vgg16"]}, r"'name' .* one folder name"),
    ({"name": "..", "datasets": ["mnist5k"], "backbones": ["vgg16"]}, r"'name' .* one folder name"),
    ({"name": ["a"], "datasets": ["mnist5k"], "backbones": ["vgg16"]}, r"'name' .* one folder name"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "methods": []}, r"'methods' .* non-empty list"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "seeds": [0, 0]}, r"'seeds'.*distinct.*got \[0, 0\]"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "seeds": [-1]}, r"'seeds'.*\[0, 2\^32\)"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "seeds": [2 ** 32]}, r"'seeds'.*\[0, 2\^32\)"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "recipe": {"label_smoothing": 2}},
     r"'label_smoothing' must be in \[0, 1\), got 2.0"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "recipe": {"vgg16": {"warmup": 1.5}}}, r"'warmup' must be in"),
    # all warm-up, no decay: the learning rate ends at its peak (before: accepted)
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "recipe": {"warmup": 1.0}},
     r"A recipe's 'warmup' must be in \[0, 1\) \(a fraction of the onecycle schedule's steps\), got 1.0"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "recipe": {"momentum": -1}},
     r"A recipe's 'momentum' must be in \[0, 1\), got -1.0 \(the training recipe for mnist5k/vgg16\)\.$"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "recipe": {"momentum": 5}},  # SGD diverges at ≥ 1
     r"A recipe's 'momentum' must be in \[0, 1\), got 5.0 \(the training recipe for mnist5k/vgg16\)\.$"),
])
def test_bad_grids_are_one_clear_error(raw, message):
    with pytest.raises(UserError, match=message):
        parse_grid(raw, "test grid")


def test_expansion_per_class_and_all_class_methods(tmp_path):
    methods, _ = discover()
    grid = load_grid(str(write_grid(tmp_path, forget_classes=[0, 3, 9], seeds=[0, 1])))
    cells = expand(grid, methods, {"mnist5k": 10})
    per_method = {m: [c for c in cells if c.method == m] for m in ("original", "retrain")}
    assert len(per_method["retrain"]) == 3 * 2 and {c.forget_class for c in per_method["retrain"]} == {0, 3, 9}
    assert len(per_method["original"]) == 2 and all(c.forget_class is None for c in per_method["original"])
    assert all(c.forget_classes == (0, 3, 9) for c in cells)


def test_out_of_range_forget_class_is_refused(tmp_path):
    methods, _ = discover()
    grid = load_grid(str(write_grid(tmp_path, forget_classes=[0, 10])))
    with pytest.raises(UserError, match=r"Forget class 10 is outside dataset 'mnist5k'.*0…9"):
        expand(grid, methods, {"mnist5k": 10})


def discover_plugin(tmp_path, stem: str, source: str) -> dict:
    """The methods discovered with a plugin folder in `tmp_path` that holds <stem>.py = `source`."""
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / f"{stem}.py").write_text(source)
    return discover([folder])[0]


SWEEPY = ("from unlearnbench import Unlearner\nclass Sweepy(Unlearner):\n"
          "    name = 'sweepy'\n    parameters = {'lr': 0.1, 'epochs': 2}\n")


def test_parameter_sweeps_and_unknown_parameters(tmp_path):
    methods = discover_plugin(tmp_path, "sweepy", SWEEPY)
    grid = load_grid(str(write_grid(tmp_path, methods=[{"name": "sweepy", "params": {"lr": [0.1, 0.01]}}])))
    cells = expand(grid, methods, {"mnist5k": 10})
    assert sorted({c.params_dict["lr"] for c in cells}) == [0.01, 0.1] and len(cells) == 4
    assert all(c.params_dict["epochs"] == 2 for c in cells)
    grid = load_grid(str(write_grid(tmp_path, methods=[{"name": "sweepy", "params": {"learning_rate": 1}}])))
    with pytest.raises(UserError, match=r"Unknown key 'learning_rate' in the parameters of method 'sweepy'"):
        expand(grid, methods, {"mnist5k": 10})
    grid = load_grid(str(write_grid(tmp_path, methods=["sweepi"])))
    with pytest.raises(UserError, match=r"Unknown method 'sweepi'.*did you mean 'sweepy'"):
        expand(grid, methods, {"mnist5k": 10})


@pytest.mark.parametrize("params,message", [
    ({"lr": "fast"}, r"Parameter 'lr' of method 'sweepy' must be a finite number like its default 0.1, got 'fast'"),
    ({"lr": [0.1, float("nan")]}, r"Parameter 'lr' .* finite number"),
    ({"epochs": 1.5}, r"Parameter 'epochs' of method 'sweepy' must be an integer like its default 2, got 1.5"),
    ({"epochs": True}, r"Parameter 'epochs' .* an integer"),
    ({"lr": []}, r"Parameter 'lr' of method 'sweepy' sweeps an empty list"),
    ({"lr": [0.1, 0.1]}, r"holds the cell mnist5k/vgg16-w0.0625/sweepy .* twice"),
])
def test_method_parameters_of_another_type_than_their_default_or_sweeping_nothing_are_refused(tmp_path, params,
                                                                                             message):
    methods = discover_plugin(tmp_path, "sweepy", SWEEPY)
    grid = load_grid(str(write_grid(tmp_path, methods=[{"name": "sweepy", "params": params}])))
    with pytest.raises(UserError, match=message):
        expand(grid, methods, {"mnist5k": 10})


def test_a_methods_check_parameters_refuses_a_grid_value_before_any_cell(tmp_path):
    methods = discover_plugin(
        tmp_path, "picky", "from unlearnbench import Unlearner, UserError\nclass Picky(Unlearner):\n"
                           "    name = 'picky'\n    parameters = {'lr': 0.1}\n    def check_parameters(self, params):\n"
                           "        if params['lr'] <= 0:\n            raise UserError(f\"Parameter 'lr' of method 'picky' "
                           "must be > 0, got {params['lr']}.\")\n")
    grid = load_grid(str(write_grid(tmp_path, methods=[{"name": "picky", "params": {"lr": [0.1, -1.0]}}])))
    with pytest.raises(UserError, match=r"Parameter 'lr' of method 'picky' must be > 0, got -1.0"):
        expand(grid, methods, {"mnist5k": 10})
    methods = discover_plugin(tmp_path, "buggy", "from unlearnbench import Unlearner\nclass Buggy(Unlearner):\n"
                                                 "    name = 'buggy'\n    parameters = {'lr': 0.1}\n"
                                                 "    def check_parameters(self, params):\n        params['missing']\n")
    grid = load_grid(str(write_grid(tmp_path, methods=["buggy"])))
    with pytest.raises(UserError, match=r"Method 'buggy' in .*buggy.py: check_parameters raised KeyError: 'missing'; "
                                        r"fix that method or leave it out of the grid\.$"):
        expand(grid, methods, {"mnist5k": 10})


def test_a_numeric_grid_name_is_a_folder_name():
    assert parse_grid({"name": 2024, "datasets": ["mnist5k"], "backbones": ["vgg16"]}, "g").name == "2024"


def test_a_method_or_backbone_listed_twice_is_refused_but_coupled_parameter_sets_are_not(tmp_path):
    methods, _ = discover()
    for twice in ({"methods": ["retrain", "retrain"]},
                  {"backbones": [{"name": "vgg16", "width": 0.0625}, {"name": "vgg16", "width": 0.0625}]}):
        with pytest.raises(UserError, match=r"Grid 'tiny' holds the cell mnist5k/vgg16-w0.0625/\w+ .* twice"):
            expand(load_grid(str(write_grid(tmp_path, **twice))), methods, {"mnist5k": 10})
    coupled = [{"name": "negative_gradient", "params": {"lr": 0.1, "steps": 10}},
               {"name": "negative_gradient", "params": {"lr": 0.01, "steps": 100}}]
    assert len(expand(load_grid(str(write_grid(tmp_path, methods=coupled))), methods, {"mnist5k": 10})) == 4


def paper_methods_present(grid) -> bool:
    return {"original", "retrain", "random_labels", "negative_gradient", "wfnet"} <= {m.name for m in grid.methods}


@pytest.mark.parametrize("name", ["smoke", "mini"])
def test_shipped_tuned_grids_have_parameters_for_every_method_and_group(name):
    """The shipped tuned grids run a named subset by default, and every discovered method is tuned on every
    dataset × backbone, so `--methods all` never runs an untuned method beside tuned ones (README, docs/protocol.md)."""
    from unlearnbench.grid import tuned_parameters

    grid, methods = load_grid(name), discover()[0]
    tuned = tuned_parameters(grid.tuned)
    assert len(methods) > len(grid.methods)  # a named subset by default
    for dataset in grid.datasets:
        for backbone in grid.backbones:
            for method, info in methods.items():
                if info.cls().space(backbone):  # original and retrain have nothing to tune
                    assert method in tuned[dataset.label][backbone.label], \
                        f"{name}: {method} untuned on {dataset.label}/{backbone.label}"


def test_a_datasets_methods_list_runs_only_those_there_and_skips_the_rest_once_per_method(tmp_path):
    """The paper's ImageNet protocol as grid YAML: `methods:` under a dataset keeps the other methods' cells off
    that dataset, each skipped once per dataset × backbone × method (not once per class) with the reason, while the
    grid's other datasets run everything; the list leaves the dataset's label and loader options alone."""
    from unlearnbench.planning import RunOptions, plan

    raw = {"name": "t", "datasets": ["mnist5k", {"name": "mnist5k", "train_per_class": 50,
                                                 "methods": ["original", "wfnet"]}],
           "backbones": [{"name": "vgg16", "width": 0.0625}], "methods": ["original", "wfnet", "negative_gradient"],
           "forget_classes": [0, 1, 2], "recipe": {"epochs": 1}}
    grid = parse_grid(raw)
    assert grid.dataset_methods == {"mnist5k-50perclass": ("original", "wfnet")}
    assert grid.datasets[1].options_dict == {"train_per_class": 50} and grid.datasets[1].label == "mnist5k-50perclass"
    p = plan(grid, RunOptions(device="cpu", cache_dir=tmp_path / "c"))
    ran = {(c.dataset.label, c.method) for c in p.cells}
    assert ran == {("mnist5k", "original"), ("mnist5k", "wfnet"), ("mnist5k", "negative_gradient"),
                   ("mnist5k-50perclass", "original"), ("mnist5k-50perclass", "wfnet")}
    assert [(c.dataset.label, c.method, c.forget_class) for c, _ in p.skipped] == [
        ("mnist5k-50perclass", "negative_gradient", None)]
    assert "runs only original, wfnet on mnist5k-50perclass" in p.skipped[0][1]
    assert with_methods(grid, "all").dataset_methods == grid.dataset_methods
    # --methods without a method a dataset's list names: that dataset skips the chosen ones, with the list's reason
    narrowed = plan(with_methods(grid, "negative_gradient"), RunOptions(device="cpu", cache_dir=tmp_path / "c"))
    assert [(c.dataset.label, c.method) for c in narrowed.cells] == [("mnist5k", "negative_gradient")] * len(
        narrowed.cells) and [c.dataset.label for c, _ in narrowed.skipped] == ["mnist5k-50perclass"]
    from unlearnbench.runner import grid_dict  # a run's config.yaml keeps the list under its dataset
    assert grid_dict(grid)["datasets"][1]["methods"] == ["original", "wfnet"]
    assert parse_grid(grid_dict(grid)) == grid and "dataset_methods" not in grid_dict(load_grid("smoke"))

    paper = load_grid("paper")
    assert paper.dataset_methods == {"imagenet-valfromtest-test5perclass-traineval10perclass": ("original", "wfnet")}
    for bad, words in (("wfnet", "must be a non-empty list"), ([], "must be a non-empty list"),
                       (["wfnett"], "dataset 'mnist5k-50perclass' in the grid name wfnett, which the grid does not "
                                    "run .did you mean 'wfnet'"),
                       (["scrub"], "name scrub, which the grid does not run")):
        raw["datasets"][1]["methods"] = bad
        with pytest.raises(UserError, match=words):
            plan(parse_grid(raw), RunOptions(device="cpu", cache_dir=tmp_path / "c"))


def test_a_backbones_input_normalisation_is_written_in_a_runs_config_only_where_set(tmp_path):
    """Run folders written before backbones had `mean`/`std` read back as the same grid (a run resumes in them)."""
    from unlearnbench.runner import grid_dict, grid_differences

    grid = load_grid(str(write_grid(tmp_path, backbones=[
        "vgg16", {"name": "vit_tiny", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}])))
    written = grid_dict(grid)
    assert "mean" not in written["backbones"][0] and written["backbones"][1]["std"] == [0.5, 0.5, 0.5]
    assert parse_grid(written) == grid and grid.backbones[1].mean == (0.5, 0.5, 0.5)
    earlier = {**written, "backbones": [{"name": "vgg16", "width": 1.0, "depth": 1.0, "patch": None,
                                         "pretrained": None}, written["backbones"][1]]}
    assert grid_differences(grid, earlier) == ""


def test_a_run_config_or_a_tuning_result_passed_as_a_grid_is_named_for_what_it_is(tmp_path):
    """They read as "Unknown key 'command'" and "Unknown key 'objective' (did you mean 'recipe'?)"."""
    from unlearnbench.runner import grid_dict

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"command": "run_bench.py", "grid": grid_dict(load_grid("smoke"))}))
    with pytest.raises(UserError, match=r"config.yaml is a run folder's config.yaml, not a grid: rerun that run "
                                        r"with `--out <its folder> --retry-failed`, or pass a grid file.$"):
        load_grid(str(config))
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"objective": "x", "split": "val", "tuned": {}}))
    with pytest.raises(UserError, match=r"tuned.yaml is a tuning result \(tuned.yaml\), not a grid: name it in a "
                                        r"grid's 'tuned:'.$"):
        load_grid(str(tuned))


def test_a_normalisation_for_other_channels_than_the_dataset_s_is_refused_when_planned(tmp_path):
    """Before, it passed --dry-run and then failed every cell of the group."""
    from unlearnbench.planning import RunOptions, plan

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read when planning")
    for channels, refused in ((3, True), (1, False)):
        grid = load_grid(str(write_grid(tmp_path, methods=["original"], recipe={"epochs": 0}, backbones=[
            {"name": "vgg16", "width": 0.0625, "pretrained": str(weights), "mean": [0.5] * channels,
             "std": [0.5] * channels}])))
        if refused:
            with pytest.raises(UserError, match=r"^'mean' and 'std' of backbone vgg16-w0.0625 give 3 values, but "
                                                r"dataset mnist5k has 1 channels; give one value a channel.$"):
                plan(grid, RunOptions(device="cpu", cache_dir=tmp_path / "c"))
        else:
            assert len(plan(grid, RunOptions(device="cpu", cache_dir=tmp_path / "c")).cells) == 1


def test_the_readme_s_example_grid_is_a_valid_grid():
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = re.search(r"```yaml\n(name: my_grid\n.*?)```", readme, re.S).group(1)
    grid = parse_grid(yaml.safe_load(example), "the README's example grid")
    assert grid.name == "my_grid" and grid.recipe["mnist5k/vit"] == {"lr": 0.001}


def test_a_bad_value_in_a_tuned_result_is_said_to_come_from_it():
    """A NaN the grid never set, read from its `tuned:` file, was reported as if the grid's params held it."""
    from unlearnbench.grid import parameter_sets
    from unlearnbench.models import BackboneSpec

    info = discover()[0]["random_labels"]
    with pytest.raises(UserError, match=r"^Parameter 'lr' of method 'random_labels' in the grid's `tuned:` result "
                                        r"must be a finite number like its default .*, got nan\.$"):
        parameter_sets(info, BackboneSpec("vgg16", 0.0625), {}, {"lr": float("nan")})
    assert dict(parameter_sets(info, BackboneSpec("vgg16", 0.0625), {"lr": 0.1}, {"lr": float("nan")})[0])["lr"] == 0.1


def test_a_tuned_result_whose_setup_is_another_or_malformed_is_refused_in_one_sentence(tmp_path):
    import yaml

    from unlearnbench.planning import RunOptions, plan

    tuned = tmp_path / "tuned.yaml"
    backbone = {"name": "vgg16", "width": 0.0625, "depth": 1.0, "patch": None}
    for setup, differ in [({"dataset": {"name": "mnist5k"}, "backbone": backbone}, None),
                          ({"dataset": {"name": "mnist5k"}, "backbone": {**backbone, "pretrained_sha256": "ab"}},
                           "skipped"),
                          ({"dataset": {"name": "mnist5k"}, "backbone": {**backbone, "width": 0.125}}, "backbone width"),
                          (5, "backbone depth, backbone name, backbone width, dataset name")]:
        tuned.write_text(yaml.safe_dump({"tuned": {"mnist5k": {"vgg16-w0.0625": {"finetune": {
            "params": {"lr": 0.05}, "setup": setup}}}}}))
        grid = load_grid(str(write_grid(tmp_path, methods=["finetune"], tuned=str(tuned))))
        if differ == "skipped":  # tuned with weights that are missing here: skipped for that, not refused
            gone = [{"name": "vgg16", "width": 0.0625, "pretrained": str(tmp_path / "gone.pt")}]
            grid = load_grid(str(write_grid(tmp_path, methods=["finetune"], tuned=str(tuned), backbones=gone)))
            p = plan(grid, RunOptions(device="cpu", cache_dir=tmp_path / "c"))
            assert not p.cells and all("gone.pt does not exist" in reason for _, reason in p.skipped)
            continue
        if differ is None:
            assert plan(grid, RunOptions(device="cpu", cache_dir=tmp_path / "c")).cells
            continue
        with pytest.raises(UserError, match=rf"on another setup \({differ} differ\): tune this grid"):
            plan(grid, RunOptions(device="cpu", cache_dir=tmp_path / "c"))


def test_a_tuned_result_scored_on_another_validation_carve_or_recipe_is_refused_in_one_sentence(tmp_path):
    """Before: only a study's recorded `setup` was compared, and results without one (both shipped results) were
    applied to any grid under the same labels, e.g. one whose originals train for another number of epochs."""
    import yaml

    from unlearnbench.planning import RunOptions, plan

    tuned = tmp_path / "tuned.yaml"
    entry = {"tuned": {"mnist5k": {"vgg16-w0.0625": {"finetune": {"params": {"lr": 0.05}}}}}}

    def planned(conditions: dict, **grid):
        tuned.write_text(yaml.safe_dump({**conditions, **entry}))
        return plan(load_grid(str(write_grid(tmp_path, methods=["finetune"], tuned=str(tuned), **grid))),
                    RunOptions(device="cpu", cache_dir=tmp_path / "c"))

    assert planned({"val_fraction": 0.1, "recipe": {"epochs": 1}}).cells  # write_grid's recipe: epochs 1
    assert planned({"val_fraction": 0.1, "recipe": {"mnist5k": {"epochs": 1}}}).cells  # the same, resolved
    assert planned({}).cells  # a file that records neither is taken as it is
    with pytest.raises(UserError, match=r"^The tuned parameters of finetune on mnist5k/vgg16-w0.0625 in '.*' were "
                                        r"scored on a validation carve of 0.2 of the training split, this grid "
                                        r"carves 0.1: tune this grid"):
        planned({"val_fraction": 0.2, "recipe": {"epochs": 1}})
    with pytest.raises(UserError, match=r"were chosen against originals and retrained models of another training "
                                        r"recipe \(epochs 3 there, 1 here; label_smoothing 0.1 there, 0.0 here\): tune"):
        planned({"val_fraction": 0.1, "recipe": {"epochs": 3, "label_smoothing": 0.1}})


def test_yaml_files_are_parsed_once_per_text_and_callers_get_their_own_copy(tmp_path) -> None:
    from unlearnbench import config
    from unlearnbench.models import BackboneSpec
    from unlearnbench.training import resolve_recipe

    config._parse.cache_clear()
    spec = BackboneSpec("resnet18", 0.0625)
    recipes = [resolve_recipe("mnist5k", spec) for _ in range(50)]  # planning resolves one a cell
    assert len(set(recipes)) == 1 and config._parse.cache_info().misses == 1
    path = tmp_path / "grid.yaml"
    path.write_text("a: {b: 1}\n")
    first = config.read_yaml(path)
    first["a"]["b"] = 2  # a caller changing its copy
    assert config.read_yaml(path) == {"a": {"b": 1}}
    path.write_text("a: {b: 3}\n")  # an edited file is read afresh
    assert config.read_yaml(path) == {"a": {"b": 3}}
