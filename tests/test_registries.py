import warnings

import pytest

from unlearnbench import UserError
from unlearnbench.data import DATASETS
from unlearnbench.models import BACKBONES
from unlearnbench.registry import Registry


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UserError, match=r"Unknown dataset 'mnits'.*did you mean 'mnist'"):
        DATASETS.get("mnits")
    with pytest.raises(UserError, match=r"Unknown backbone 'resnet81'.*did you mean 'resnet18'"):
        BACKBONES.get("resnet81")


def test_registries_are_filled_on_import():
    assert {"mnist5k", "mnist", "fashion-mnist", "cifar10", "imagefolder", "imagenet"} <= set(DATASETS.names())
    assert set(BACKBONES.names()) == {"vgg16", "resnet18", "vit_tiny", "vit_small"}


def test_duplicate_registration_warns_and_later_wins():
    reg = Registry("thing")
    reg.register("a")(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.register("a")(2)
    assert reg.get("a") == 2 and any("registered twice" in str(w.message) for w in caught)


def test_a_worker_imports_neither_the_attack_nor_the_report_libraries():
    """Every local worker and Slurm task imports unlearnbench.execution, the CLI and the methods when it starts:
    sklearn, matplotlib and scipy (over a second on this CPU) load only where a probe, an attack or a report needs
    them."""
    import subprocess
    import sys

    code = ("import sys, unlearnbench.execution, unlearnbench.cli, unlearnbench.metrics, unlearnbench.discovery; "
            "unlearnbench.discovery.discover(); "  # every shipped method's module, as a worker's first job loads them
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'matplotlib', 'scipy'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_registry_whose_modules_fail_to_import_says_so_at_every_lookup():
    """The loader was dropped before it ran, so after a failed import every later lookup said "Unknown dataset
    'mnist5k'; choose one of: ." instead of the import's error."""
    calls = []

    def load():
        calls.append(1)
        if len(calls) < 3:
            raise ImportError("No module named 'PIL'")
        registry.register("a")(1)

    registry = Registry("thing", load=load)
    for _ in range(2):
        with pytest.raises(ImportError, match="PIL"):
            registry.get("a")
    assert registry.get("a") == 1 and registry.names() == ["a"] and len(calls) == 3
