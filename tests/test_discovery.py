"""Plugin discovery: shipped packages, named folders only, relative imports, import-closure cache invalidation and
one-sentence errors for malformed declarations."""
import re
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from unlearnbench.cli import main
from unlearnbench.discovery import discover, get_method
from unlearnbench.errors import UserError
from unlearnbench.grid import load_grid
from unlearnbench.runner import RunOptions, run

from conftest import SMALL_MNIST, write_grid

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
from unlearnbench import SharedModel, Unlearner
{imports}

class {cls}(Unlearner):
    name = "{name}"
    per_class = False
{body}
    def unlearn(self, task):
        return SharedModel(task.original_model(), task.forget_classes)
'''


def plugin(folder: Path, stem: str, name: str, imports: str = "", body: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.py").write_text(PLUGIN.format(imports=imports, cls=stem.title().replace("_", ""), name=name,
                                                     body=body))


def test_the_shipped_methods_come_from_the_package_not_the_working_directory(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    methods, errors = discover()
    assert not marker.exists(), "a methods/ folder in the working directory must not be imported unless named"
    assert {"wfnet", "retrain", "random_labels", "negative_gradient", "original"} <= set(methods) and not errors
    assert Path(methods["wfnet"].source).parent == ROOT / "methods"
    discover([tmp_path / "methods"])
    assert marker.exists(), "a named folder is imported"


def test_a_method_hash_covers_exactly_the_plugin_files_it_imports():
    methods, _ = discover()
    closure = {name: {Path(p).name for p in info.depends_on} for name, info in methods.items()}
    assert closure["wfnet"] == {"_weight_filtering.py"}
    for name in ("random_labels", "random_labels_mixed", "negative_gradient", "neggrad_plus", "finetune"):
        assert closure[name] == {"_finetuning.py"}, name
    assert closure["original"] == closure["retrain"] == set()


def test_plugin_folders_import_their_building_blocks_relatively_and_hash_them(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "_shared.py").write_text("SCALE = 1\n")
    plugin(folder, "uses_shared", "uses_shared", "from ._shared import SCALE", "    parameters = {'scale': SCALE}\n")
    plugin(folder, "standalone", "standalone")
    before, errors = discover([folder])
    assert not errors and before["uses_shared"].cls.parameters == {"scale": 1}
    (folder / "_shared.py").write_text("SCALE = 2\n")
    after, _ = discover([folder])
    assert after["uses_shared"].source_hash != before["uses_shared"].source_hash
    assert after["standalone"].source_hash == before["standalone"].source_hash


CODE = '''"""A module docstring."""
import math  # a comment after code


class Scaled:
    """A class docstring
    on two lines."""

    # a comment line
    factor = 2  # tuned

    def scale(self, x):
        "The function's docstring."
        text = """a string that is no docstring
        # not a comment"""
        return x * self.factor + len(text) + math.pi
'''


@pytest.mark.parametrize("edit, same", [
    (lambda s: s.replace("A module docstring.", "Another, longer\nmodule docstring."), True),
    (lambda s: s.replace("on two lines.", "on two lines, and more:\n    a third."), True),
    (lambda s: s.replace("# a comment line", "# another comment\n    # and one more"), True),
    (lambda s: s.replace("  # tuned", ""), True),
    (lambda s: s.replace("The function's docstring.", "Documented again."), True),
    (lambda s: s.replace("factor = 2", "factor = 3"), False),
    (lambda s: s.replace("# not a comment", "# not a comment either"), False),  # inside a string: code
    (lambda s: s.replace("return x", "return -x"), False),
    (lambda s: s.replace("    # a comment line\n", "\n"), False),  # a blank line stays, as written
])
def test_a_code_hash_leaves_out_comments_and_docstrings_only(edit, same):
    """Every key and a tuned study's method_code hashed files' bytes, so documenting a method (its docstring must list
    every departure from its reference) re-keyed its cells and flagged its tuned parameters as chosen for other code."""
    from unlearnbench.store import code_of

    assert (code_of(edit(CODE).encode()) == code_of(CODE.encode())) is same
    assert code_of(b"def broken(:\n") == b"def broken(:\n"  # no parse: its bytes


def test_a_code_hash_numbers_lines_as_python_does():
    """str.splitlines also breaks at a form feed or U+2028, which Python's tokenizer does not: after one, a comment's
    line number named the code line before it, which was dropped (0.1 and 0.5 hashed alike), or a string's tail."""
    from unlearnbench.store import code_of

    assert code_of(b"\x0c\nLR = 0.1\n# note\n") != code_of(b"\x0c\nLR = 0.5\n# note\n")
    assert code_of('X = "a\u2028b"  # note\n'.encode()) != code_of('X = "a\u2028Z"  # note\n'.encode())
    assert code_of(b"\x0c\nLR = 0.1\n# note\n") == code_of(b"\x0c\nLR = 0.1\n# other note\n")


def test_documenting_a_plugin_keeps_its_hash_and_editing_its_code_changes_it(tmp_path):
    folder = tmp_path / "mine"
    plugin(folder, "documented", "documented", body="    parameters = {'lr': 0.1}\n")
    before = discover([folder])[0]["documented"].source_hash
    path = folder / "documented.py"
    path.write_text('"""What it does, and every departure."""\n# why\n' + path.read_text())
    assert discover([folder])[0]["documented"].source_hash == before
    path.write_text(path.read_text().replace("'lr': 0.1", "'lr': 0.2"))
    assert discover([folder])[0]["documented"].source_hash != before


@pytest.mark.parametrize("body, says", [
    ("    parameters = {'lr': 0.1}\n    search_space = {'lr': (0.0, 1.0)}\n", "not a Float, Int or Choice"),
    ("    parameters = {'lr': 0.1}\n    search_space = {'lr': Float(1.0, 0.1)}\n", "empty or non-positive"),
    ("    parameters = {'lr': 0.1}\n    search_space = {'steps': Int(1, 9)}\n", "missing from `parameters`"),
    ("    parameters = {'lr': 0.1}\n    family_parameters = {'vits': {'lr': 1e-3}}\n", "unknown backbone family"),
    ("    search_space = [1]\n", "must be a dict"),
    ("    parameters = {'lr': 0.5}\n    search_space = {'lr': Float(1e-3, 1e-1)}\n", "does not hold the default lr=0.5"),
    ("    parameters = {'mode': 'c'}\n    search_space = {'mode': Choice(('a', 'b'))}\n", "default mode='c'"),
    ("    parameters = {'lr': 0.01}\n    family_parameters = {'vit': {'lr': 0.5}}\n"
     "    search_space = {'lr': Float(1e-3, 1e-1)}\n", "for the vit family does not hold"),
    # tuning would write floats into tuned.yaml, which every grid then refuses for an integer parameter
    ("    parameters = {'k': 1}\n    search_space = {'k': Float(0.5, 4.0)}\n",
     "Every value search_space['k'] tries must be an integer like its default 1, got 0.5."),
    ("    parameters = {'k': 1}\n    search_space = {'k': Choice((1, 2.5))}\n",
     "must be an integer like its default 1"),
    ("    parameters = {'k': 0}\n    parameter_ranges = {'k': at_least(1)}\n",
     "the default k=0 is outside its parameter_ranges (≥ 1)."),
    ("    parameters = {'k': 1}\n    parameter_ranges = {'k': 1}\n", "must be a (check, description) pair"),
    ("    parameters = {'k': None}\n    parameter_ranges = {'k': at_least(1)}\n", "the default k=None is outside"),
    # tuning would try (and tuned.yaml keep) values every grid then refuses
    ("    parameters = {'lr': 0.1}\n    parameter_ranges = {'lr': above(0)}\n"
     "    search_space = {'lr': Float(-1.0, 1.0)}\n",
     "search_space['lr'] reaches outside its parameter_ranges (finite and > 0): (-1.0, 1.0)."),
    ("    parameters = {'m': 'a'}\n    parameter_ranges = {'m': one_of('ab')}\n"
     "    search_space = {'m': Choice(('a', 'c'))}\n",
     "search_space['m'] reaches outside its parameter_ranges (one of a, b)"),
    # before: accepted; "no" is truthy, so the harness would have called unlearn once per class
    ("    per_class = 'no'\n", "`per_class` must be True or False, not 'no'."),
    ("    uses_retain = 0\n", "`uses_retain` must be True or False, not 0."),
    ("    max_classes = '100'\n", "`max_classes` must be None or an integer ≥ 1 (the most classes it runs on), not '100'."),
    ("    paper = 2023\n", "`paper` must be a string (every report's methods table prints it), not int."),
])
def test_a_malformed_declaration_is_one_sentence_and_spares_the_other_methods(tmp_path, body, says, capsys):
    folder = tmp_path / "plugins"
    plugin(folder, "broken", "broken", "from unlearnbench.config import above, at_least, one_of\n"
                                       "from unlearnbench.search_space import Choice, Float, Int", body)
    plugin(folder, "fine", "fine")
    methods, errors = discover([folder])
    assert "fine" in methods and "broken" not in methods
    (error,) = errors
    assert says in error.message and "\n" not in error.message and error.message.count(". ") == 0
    assert main(["list", "--plugins", str(folder)]) == 0
    assert says in capsys.readouterr().out


def test_a_class_with_a_bad_or_no_name_is_one_sentence_but_a_nameless_base_is_skipped(tmp_path, capsys):
    """A number for a name broke every command (sorting the names); a class without one vanished unsaid. A nameless
    class that another discovered class subclasses, in its file or another, is a base, not a method."""
    folder = tmp_path / "plugins"
    plugin(folder, "fine", "fine")
    (folder / "numbered.py").write_text(PLUGIN.format(imports="", cls="Numbered", name="x", body="").replace(
        'name = "x"', "name = 5"))
    (folder / "nameless.py").write_text("from unlearnbench import Unlearner\nclass Nameless(Unlearner):\n    pass\n")
    (folder / "based.py").write_text("from unlearnbench import Unlearner\nclass Base(Unlearner):\n"
                                     "    per_class = False\nclass Leaf(Base):\n    name = 'leaf'\n")
    (folder / "common.py").write_text("from unlearnbench import Unlearner\nclass SharedBase(Unlearner):\n    pass\n")
    (folder / "derived.py").write_text("from .common import SharedBase\nclass Derived(SharedBase):\n"
                                       "    name = 'derived'\n")  # a base in another file of the folder
    methods, errors = discover([folder])
    assert {"fine", "leaf", "derived"} <= set(methods) and not {"5", 5, ""} & set(methods)
    said = {Path(e.source).stem: e.message for e in errors}
    assert set(said) == {"numbered", "nameless"} and all(e.kind == "declaration" for e in errors)
    assert "Class Numbered in" in said["numbered"] and "has the name 5;" in said["numbered"]
    assert "Class Nameless in" in said["nameless"] and "has no `name`" in said["nameless"]
    assert all("\n" not in m and m.count(". ") == 0 for m in said.values())
    assert main(["list", "--plugins", str(folder)]) == 0
    assert "has the name 5" in capsys.readouterr().out


def test_a_plugin_named_like_another_method_is_one_sentence_and_the_first_is_kept(tmp_path, capsys):
    """Before: the plugin replaced the shipped method with a raw Python UserWarning, printed by every process (9
    times for the smoke grid), and its results were labelled as the shipped method's."""
    first, second = tmp_path / "first", tmp_path / "second"
    plugin(first, "my_finetune", "finetune")
    plugin(first, "mine", "mine")
    plugin(second, "also_mine", "mine")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        methods, errors = discover([first, second])
    assert methods["finetune"].source == str(ROOT / "baselines" / "finetune.py")
    assert methods["mine"].source == str(first / "mine.py")
    said = {Path(e.source).stem: e.message for e in errors}
    assert said == {"my_finetune": f"Method 'finetune' in {first / 'my_finetune.py'} has the name of the method in "
                                   f"{ROOT / 'baselines' / 'finetune.py'}, which is kept; give it another name.",
                    "also_mine": f"Method 'mine' in {second / 'also_mine.py'} has the name of the method in "
                                 f"{first / 'mine.py'}, which is kept; give it another name."}
    assert main(["list", "--plugins", str(first)]) == 0
    assert "(rejected: Method 'finetune' in" in capsys.readouterr().out
    with pytest.raises(UserError) as typo:  # the rejected file is no candidate for an unknown name
        get_method(methods, "finetun", errors)
    assert "did you mean 'finetune'" in str(typo.value) and "may be in a plugin file" not in str(typo.value)


def test_two_classes_of_one_name_in_one_file_are_one_sentence_and_the_first_is_kept(tmp_path):
    """Before: the later class replaced the earlier silently (the clash was checked between files only)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "twins.py").write_text(PLUGIN.format(imports="", cls="First", name="twin", body="")
                                     + PLUGIN.format(imports="", cls="Second", name="twin", body=""))
    methods, errors = discover([folder])
    assert methods["twin"].cls.__name__ == "First"
    assert [e.message for e in errors] == [f"Method 'twin' in {folder / 'twins.py'} (class Second) has the name of "
                                           f"class First in the same file, which is kept; give it another name."]


def test_classes_of_one_name_from_one_factory_are_refused_too(tmp_path):
    """Classes a function makes share a qualified name ('variant.<locals>.Variant'): the later replaced the earlier."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "factory.py").write_text(
        "from unlearnbench import Unlearner\n"
        "def variant(scale):\n"
        "    class Variant(Unlearner):\n        name, parameters = 'scaled', {'scale': scale}\n"
        "    return Variant\n"
        "Small, Large = variant(1.0), variant(10.0)\n")
    methods, errors = discover([folder])
    assert methods["scaled"].cls.parameters == {"scale": 1.0}
    assert [e.message for e in errors] == [
        f"Method 'scaled' in {folder / 'factory.py'} (class variant.<locals>.Variant) has the name of class "
        f"variant.<locals>.Variant in the same file, which is kept; give it another name."]


def test_a_subclass_of_a_method_is_labelled_by_its_own_name_and_a_label_taken_is_one_sentence(tmp_path):
    """A subclass of Fine-tune inherited its label, paper and venue: the report printed two 'Fine-tune' rows (the
    second's name blanked as a repeat) and credited the plugin to Golatkar et al. Tables name methods by label, so
    a label another method has (the paper's names included) is refused."""
    from unlearnbench.report.names import display_name, method_labels

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "variants.py").write_text(
        "from baselines.finetune import Finetune\n"
        "class MyFinetune(Finetune):\n    name = 'my_ft'\n"
        "class Copycat(Finetune):\n    name, label = 'copycat', 'Fine-tune'\n"
        "class Paper(Finetune):\n    name, label = 'paper_named', 'WF-Net'\n")
    methods, errors = discover([folder])
    card = methods["my_ft"].cls.card()
    assert (card["label"], card["paper"], card["venue"]) == ("my_ft", "", "")
    assert methods["finetune"].cls.card()["label"] == "Fine-tune" and methods["finetune"].cls.card()["paper"]
    assert "copycat" not in methods and "paper_named" not in methods
    said = sorted(e.message for e in errors)
    assert said == [f"Method 'copycat' in {folder / 'variants.py'} has the label 'Fine-tune' of method 'finetune' "
                    f"({ROOT / 'baselines' / 'finetune.py'}), which is kept; give it another `label`.",
                    f"Method 'paper_named' in {folder / 'variants.py'} has the label 'WF-Net' of method 'wfnet' "
                    f"({ROOT / 'methods' / 'wfnet.py'}), which is kept; give it another `label`."]
    method_labels.cache_clear()
    assert display_name("finetune") == "Fine-tune"


def _copy_shipped(into: Path) -> tuple[Path, Path]:
    """Copies of the shipped plugin folders whose methods are renamed '<name>_copy' and labelled '<label> (copy)'
    (a plugin may not take a discovered method's name or label)."""
    methods, baselines = into / "methods", into / "baselines"
    for src, dst in ((ROOT / "methods", methods), (ROOT / "baselines", baselines)):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        for path in dst.glob("*.py"):
            text = re.sub(r'(?m)^    name = "(\w+)"$', r'    name = "\1_copy"', path.read_text())
            path.write_text(re.sub(r'(?m)^    label = "(.+)"$', r'    label = "\1 (copy)"', text))
    return methods, baselines


@pytest.mark.slow
def test_editing_a_building_block_recomputes_only_the_methods_that_import_it(tmp_path):
    """A real run over copies of the shipped plugin folders: WF-Net's layers invalidate WF-Net's cells only, the
    shared fine-tuning loop the fine-tuning baselines' cells only."""
    methods_dir, baselines_dir = _copy_shipped(tmp_path / "copy")
    grid = load_grid(str(write_grid(tmp_path, methods=[
        "original_copy", "random_labels_copy", "negative_gradient_copy",
        {"name": "wfnet_copy", "params": {"max_steps": 4, "evals_per_epoch": 1, "batch_size": 64}}],
        datasets=[SMALL_MNIST])))

    def computed() -> int:
        result = run(grid, RunOptions(out=tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu",
                                      progress=False, plugins=[methods_dir, baselines_dir], report=False))
        assert not result.failures, result.failures
        assert set(result.records["method"]) == {"original_copy", "random_labels_copy", "negative_gradient_copy",
                                                 "wfnet_copy"}
        return result.computed

    assert computed() == 6  # one round each for original and WF-Net (all classes) + 2 per-class methods × 2 classes
    assert computed() == 0
    (methods_dir / "_weight_filtering.py").write_text((methods_dir / "_weight_filtering.py").read_text() + "\n# edit\n")
    assert computed() == 1
    (baselines_dir / "_finetuning.py").write_text((baselines_dir / "_finetuning.py").read_text() + "\n# edit\n")
    assert computed() == 4


def test_the_harness_hash_ignores_method_packages_a_wheel_installs_inside_unlearnbench(tmp_path, monkeypatch):
    """Installed from a wheel, methods/ and baselines/ live under unlearnbench/; the harness hash (every cell's key)
    must not cover them, or editing one method would recompute every method's cells."""
    from unlearnbench import store
    for rel in ("runner.py", "methods/wfnet.py", "baselines/finetune.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    monkeypatch.setattr(store, "PACKAGE_DIR", tmp_path)
    harness = store.code_hash.__wrapped__()
    (tmp_path / "methods" / "wfnet.py").write_text("x = 2\n")
    (tmp_path / "baselines" / "finetune.py").write_text("x = 2\n")
    assert store.code_hash.__wrapped__() == harness
    (tmp_path / "runner.py").write_text("x = 2\n")
    assert store.code_hash.__wrapped__() != harness


def test_a_hash_without_the_metrics_ignores_them_and_covers_the_rest(tmp_path, monkeypatch):
    """Tuning trials compute no metric: their keys hash the harness without metrics/, so that editing a metric
    keeps a long tuning run's cached trials."""
    from unlearnbench import store
    for rel in ("runner.py", "metrics/zrf.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    monkeypatch.setattr(store, "PACKAGE_DIR", tmp_path)
    harness, trial = store.code_hash.__wrapped__(), store.code_hash.__wrapped__(without=("metrics",))
    (tmp_path / "metrics" / "zrf.py").write_text("x = 2\n")
    assert store.code_hash.__wrapped__() != harness
    assert store.code_hash.__wrapped__(without=("metrics",)) == trial
    (tmp_path / "runner.py").write_text("x = 2\n")
    assert store.code_hash.__wrapped__(without=("metrics",)) != trial


def test_a_named_module_hash_covers_a_subpackage_s_every_file(tmp_path, monkeypatch):
    """Stage keys hash named modules (data, datasets, …); `datasets` is a package: each of its files counts."""
    from unlearnbench import store
    for rel in ("data.py", "datasets/__init__.py", "datasets/mnist.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    monkeypatch.setattr(store, "PACKAGE_DIR", tmp_path)
    before = store.code_hash.__wrapped__("data", "datasets")
    (tmp_path / "datasets" / "mnist.py").write_text("x = 2\n")
    assert store.code_hash.__wrapped__("data", "datasets") != before
    assert store.code_hash.__wrapped__("data") == store.code_hash.__wrapped__("data")


def test_tables_name_methods_by_their_declared_label():
    from unlearnbench import Unlearner
    from unlearnbench.report.names import display_name
    from unlearnbench.search_space import declaration_problem

    assert display_name("random_labels") == "Random Labels"  # the paper's name
    assert display_name("salun") == "SalUn" and display_name("neggrad_plus") == "NegGrad+"  # the plugin's label
    assert display_name("not_a_method") == "not_a_method"

    class Mislabelled(Unlearner):
        name, label = "mislabelled", 3
    assert "`label` must be a string" in declaration_problem(Mislabelled, {"cnn", "vit"})


def test_list_shows_each_methods_rounds_retained_data_and_venue():
    from unlearnbench.cli import list_everything

    lines = {line.split()[0]: line for line in list_everything().splitlines() if line.startswith("  ")}
    assert "per class" in lines["delete"] and "no D_r" in lines["delete"] and "CVPR 2025" in lines["delete"]
    assert "all classes" in lines["wfnet"] and "reads D_r" in lines["wfnet"]


def test_an_entry_point_in_a_namespace_package_keys_its_helpers_in_any_of_its_folders(tmp_path, monkeypatch):
    """A namespace package spread over two folders: the method's absolute import of a helper in the other folder
    is in its key (before: only the package's first folder was searched, so the helper's edits kept the key)."""
    first, second = tmp_path / "s1", tmp_path / "s2"
    (first / "ub_ns").mkdir(parents=True)
    (second / "ub_ns").mkdir(parents=True)
    helper = second / "ub_ns" / "helpers.py"
    helper.write_text("MARK = 1\n")
    (first / "ub_ns" / "meth.py").write_text(PLUGIN.format(imports="from ub_ns.helpers import MARK", cls="Spread",
                                                            name="spread_method", body="    marker = MARK\n"))
    info = first / "ub_ns-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ub-ns\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unlearnbench.methods]\nspread_method = ub_ns.meth:Spread\n")
    for site in (second, first):
        monkeypatch.syspath_prepend(str(site))
    for name in [m for m in sys.modules if m == "ub_ns" or m.startswith("ub_ns.")]:
        monkeypatch.delitem(sys.modules, name)
    found = discover()[0]["spread_method"]
    assert found.depends_on == (str(helper.resolve()),)


@pytest.mark.parametrize("imports", ["from ._helpers import MARK", "from ub_extra._helpers import MARK"])
def test_an_installed_package_s_entry_point_is_discovered_and_imported_again_when_edited(tmp_path, monkeypatch,
                                                                                         imports):
    """A method a pip-installed package declares under the `unlearnbench.methods` entry-point group is found, named
    by its module's file; a file of its package (here a helper module its key hashes) edited between two
    discoveries in one process (an editable install, a notebook) is imported again, so the method runs the code its
    key hashes (before: the first import ran on). The helper is in the key whether imported relatively or by its
    package's name (before: only relatively; an absolute import's edits were served stale cells)."""
    site = tmp_path / "site"
    (site / "ub_extra").mkdir(parents=True)
    (site / "ub_extra" / "__init__.py").write_text("")
    module = site / "ub_extra" / "methods.py"
    helper = site / "ub_extra" / "_helpers.py"  # a helper module beside it: in its import closure
    helper.write_text("MARK = 1\n")
    module.write_text(PLUGIN.format(imports=imports, cls="Installed", name="installed_method",
                                    body="    marker = MARK\n"))
    info = site / "ub_extra-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ub-extra\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unlearnbench.methods]\ninstalled_method = ub_extra.methods:Installed\n")
    monkeypatch.syspath_prepend(str(site))
    for name in [m for m in sys.modules if m == "ub_extra" or m.startswith("ub_extra.")]:
        monkeypatch.delitem(sys.modules, name)
    first = discover()[0]["installed_method"]
    assert first.cls.marker == 1 and first.source == str(module.resolve())
    helper.write_text("MARK = 22  # edited\n")
    edited = discover()[0]["installed_method"]
    assert edited.cls.marker == 22 and edited.source_hash != first.source_hash
