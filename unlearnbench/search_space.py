"""Search-space declarations for the tuning protocol: what range each method parameter may take.

A method declares `search_space = {"lr": Float(1e-4, 1e-1, log=True), "steps": Int(10, 200, log=True), …}` beside
its defaults (and `family_search_space = {"vit": {...}}` where a family searches other ranges); `unlearnbench.tuning`
samples it with Optuna.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Float:
    """A real parameter in [low, high], sampled uniformly or (log=True) log-uniformly."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass(frozen=True)
class Int:
    """An integer parameter in [low, high], sampled uniformly or (log=True) log-uniformly."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    """A categorical parameter taking one of `options`."""

    options: tuple

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def contains(self, value: Any) -> bool:
        return value in self.options


Range = Float | Int | Choice


def describe(space: dict[str, Range]) -> dict[str, str]:
    """Each parameter's range as short text, e.g. {'lr': '1e-04…0.1 (log)', 'mode': 'batch | frozen'}."""
    text = {}
    for name, spec in space.items():
        if isinstance(spec, Choice):
            text[name] = " | ".join(str(o) for o in spec.options)
        else:
            text[name] = f"{spec.low:g}…{spec.high:g}" + (" (log)" if spec.log else "")
    return text
