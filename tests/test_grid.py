import pytest

from unlearnbench import UserError
from unlearnbench.discovery import discover
from unlearnbench.grid import builtin_grids, expand, load_grid, parse_grid

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


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("datasets: [mnist5k\nbackbones: [vgg16]\n")
    with pytest.raises(UserError, match=r"Malformed YAML in .*bad.yaml at line \d+"):
        load_grid(str(path))


@pytest.mark.parametrize("raw,message", [
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "seed": [0]}, r"Unknown key 'seed'.*did you mean 'seeds'"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "widht": 0.5}]}, r"Unknown key 'widht'.*did you mean 'width'"),
    ({"datasets": ["mnist5k"], "backbones": [{"name": "vgg16", "width": "half"}]}, r"'width'.*wrong type"),
    ({"datasets": ["mnits"], "backbones": ["vgg16"]}, r"Unknown dataset 'mnits'"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "seeds": "zero"}, r"'seeds'.*list of integers"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "forget_classes": [1, "x"]}, r"'forget_classes'"),
    ({"datasets": ["mnist5k"]}, r"needs a non-empty 'backbones'"),
    ({"datasets": ["mnist5k"], "backbones": ["vgg16"], "recipe": {"mnsit5k/vit": {"epochs": 1}}},
     r"Recipe section 'mnsit5k/vit'.*names 'mnsit5k'.*did you mean 'mnist5k'"),
    ({"datasets": [{"name": "mnist5k", "train_per_class": 0}], "backbones": ["vgg16"]}, r"'train_per_class'.*≥ 1"),
    (["mnist5k"], r"must be a YAML mapping"),
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


def test_parameter_sweeps_and_unknown_parameters(tmp_path):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "sweepy.py").write_text(
        "from unlearnbench import Unlearner\n"
        "class Sweepy(Unlearner):\n"
        "    name = 'sweepy'\n"
        "    parameters = {'lr': 0.1, 'epochs': 2}\n"
    )
    methods, _ = discover([plugin])
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


def paper_methods_present(grid) -> bool:
    return {"original", "retrain", "random_labels", "negative_gradient", "wfnet"} <= {m.name for m in grid.methods}


@pytest.mark.parametrize("name", ["smoke", "mini"])
def test_shipped_tuned_grids_run_only_methods_their_tuning_chose_parameters_for(name):
    from unlearnbench.grid import tuned_parameters

    grid, methods = load_grid(name), discover()[0]
    tuned = tuned_parameters(grid.tuned)
    for backbone in grid.backbones:
        for entry in grid.methods:
            if methods[entry.name].cls().space(backbone):  # original and retrain have nothing to tune
                dataset = grid.datasets[0].label
                assert entry.name in tuned[dataset][backbone.label], f"{name}: {entry.name} untuned on {backbone.label}"
