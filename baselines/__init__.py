"""The baselines, a plugin folder: one `*.py` per method family (retrain, original, random labels, negative
gradients, fine-tuning), each defining `Unlearner` subclasses that discovery finds. Files starting with `_` are
the building blocks the baselines share, imported relatively (`_finetuning.py`: the fine-tuning loop, its stopping
rule and search space). The wheel ships this folder as `unlearnbench.baselines`.
"""
