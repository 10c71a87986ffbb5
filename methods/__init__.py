"""The proposed method(s), a plugin folder: each public `*.py` here defines `Unlearner` subclasses that discovery
finds (`wfnet.py`: WF-Net). Files starting with `_` are building blocks the plugins import relatively
(`_weight_filtering.py`: WF-Net's class-indexed weight-filter layers). The wheel ships this folder as
`unlearnbench.methods`.
"""
