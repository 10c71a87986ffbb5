"""unlearnbench: a benchmark suite for class unlearning in image classifiers.

Where things live: a method subclasses `Unlearner` (unlearner.py) in a plugin folder, `methods/` or `baselines/`
at the top of the source tree (shipped as unlearnbench.methods / unlearnbench.baselines), found by discovery.py;
datasets are registered in datasets/, one module per source (loading and splits in data.py), backbones in
models.py, metrics one module per family in metrics/; a run is planned in planning.py, its jobs executed in
execution.py, orchestrated by runner.py through the launchers in launchers.py (local worker processes or Slurm);
tuning.py is the tuning protocol (tuning_results.py its files), store.py the cache and run folders, report/ the
tables and figures and the end-of-run summary, cli.py the command line.
"""
__version__ = "0.1.0"

from .errors import UserError  # noqa: E402

__all__ = ["Unlearner", "UnlearnTask", "UnlearnedModel", "SingleClassModel", "SharedModel", "UserError", "__version__"]
_FROM_UNLEARNER = {"Unlearner", "UnlearnTask", "UnlearnedModel", "SingleClassModel", "SharedModel"}


def __getattr__(name: str):
    # imported at first use, so that `run_bench.py --help` and the package's light modules do not load torch
    if name in _FROM_UNLEARNER:
        from . import unlearner
        return getattr(unlearner, name)
    raise AttributeError(f"module 'unlearnbench' has no attribute '{name}'")
