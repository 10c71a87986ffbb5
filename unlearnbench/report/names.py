"""How methods are named and ordered in every table and figure: the paper's names and order first, then each
discovered method's `label`."""
from __future__ import annotations

import contextlib
import functools
import json
from contextvars import ContextVar

from ..discovery import PAPER_METHODS
from ..store import stable_hash


@functools.lru_cache(maxsize=1)
def method_labels() -> dict[str, str]:
    """Each discovered method's display name (its `label`, else its name); the paper's methods keep the paper's."""
    from ..discovery import discover

    return {name: info.cls.card()["label"] for name, info in discover()[0].items()}


@functools.lru_cache(maxsize=1)
def discovered_cards() -> dict[str, dict]:
    """Each discovered method's card (`Unlearner.card`): for runs whose config.yaml predates the cards."""
    from ..discovery import discover

    return {name: info.cls.card() for name, info in discover()[0].items()}


_RUN_LABELS: ContextVar[dict[str, str]] = ContextVar("run_labels", default={})


@contextlib.contextmanager
def run_labels(labels: dict[str, str]):
    """Within the block, `display_name` takes a method's label from `labels` (the run's config) first."""
    token = _RUN_LABELS.set(labels)
    try:
        yield
    finally:
        _RUN_LABELS.reset(token)


def display_name(method: str) -> str:
    """A method's name in tables and figures: the paper's name, the method's `label` (as the run recorded it, else
    as discovered), or its own name."""
    return PAPER_METHODS.get(method) or _RUN_LABELS.get().get(method) or method_labels().get(method, method)


def method_order(methods) -> list[str]:
    """The paper's methods in the paper's order, then any other method by name."""
    present = set(methods)
    return [m for m in PAPER_METHODS if m in present] + sorted(present - set(PAPER_METHODS))


def params_tag(params: str) -> str:
    """A parameter setting (a params JSON, as records hold it) in artifact file names: '__p' and the first 8 hex
    digits of its hash."""
    return f"__p{stable_hash(json.loads(params or '{}'))[:8]}"
