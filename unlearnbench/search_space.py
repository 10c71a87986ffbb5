"""Search-space declarations for the tuning protocol: what range each method parameter may take.

A method declares `search_space = {"lr": Float(1e-4, 1e-1, log=True), "steps": Int(10, 200, log=True), …}` beside
its defaults (and `family_search_space = {"vit": {...}}` where a family searches other ranges); `unlearnbench.tuning`
samples it with Optuna.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import check_like_default
from .errors import UserError


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


def _range_problem(name: str, spec: Any) -> str | None:
    if isinstance(spec, Choice):
        return None if isinstance(spec.options, (tuple, list)) and spec.options else \
            f"search_space['{name}'] is a Choice with no options"
    if not isinstance(spec, (Float, Int)):
        return f"search_space['{name}'] is {spec!r}, not a Float, Int or Choice"
    kind = (int,) if isinstance(spec, Int) else (int, float)
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in (spec.low, spec.high)):
        return f"search_space['{name}'] has non-numeric bounds {spec.low!r}, {spec.high!r}"
    if spec.low > spec.high or (spec.log and spec.low <= 0):
        return f"search_space['{name}'] has an empty or non-positive log range [{spec.low}, {spec.high}]"
    return None


def _holds(fits, value) -> bool:
    """Whether a range rule accepts `value`; a rule that cannot compare it (None against a number) does not."""
    try:
        return bool(fits(value))
    except Exception:
        return False


def declaration_problem(cls, families: set[str]) -> str | None:
    """What is malformed in an Unlearner class's parameter and search-space declarations, as one sentence, or
    None: every range a Float/Int/Choice over a declared parameter that holds the parameter's default (for every
    family: the first tuning trial runs the defaults), every family a known backbone family."""
    if not isinstance(cls.label, str):
        return f"`label` must be a string (the method's name in tables), not {type(cls.label).__name__}."
    for attr in ("paper", "venue"):
        if not isinstance(getattr(cls, attr), str):
            return (f"`{attr}` must be a string (every report's methods table prints it), not "
                    f"{type(getattr(cls, attr)).__name__}.")
    for attr in ("per_class", "uses_retain"):  # a string such as "no" would be truthy
        if not isinstance(getattr(cls, attr), bool):
            return f"`{attr}` must be True or False, not {getattr(cls, attr)!r}."
    limit = cls.max_classes
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        return f"`max_classes` must be None or an integer ≥ 1 (the most classes it runs on), not {limit!r}."
    for attr in ("parameters", "search_space", "parameter_ranges", "family_parameters", "family_search_space"):
        if not isinstance(getattr(cls, attr), dict):
            return f"`{attr}` must be a dict, not {type(getattr(cls, attr)).__name__}."
    for attr in ("family_parameters", "family_search_space"):
        for family, value in getattr(cls, attr).items():
            if family not in families:
                return f"`{attr}` names the unknown backbone family '{family}' (known: {', '.join(sorted(families))})."
            if not isinstance(value, dict):
                return f"`{attr}['{family}']` must be a dict, not {type(value).__name__}."
    spaces = [(None, cls.search_space), *cls.family_search_space.items()]
    for family, space in spaces:
        declared = {**cls.parameters, **cls.family_parameters.get(family, {})}
        for name, spec in space.items():
            problem = _range_problem(name, spec)
            if problem:
                return problem + "."
            if name not in declared:
                return f"search_space['{name}'] searches a parameter missing from `parameters`."
    for name, rule in cls.parameter_ranges.items():  # a rule for a parameter the class lacks (a base's) is unused
        if not (isinstance(rule, tuple) and len(rule) == 2 and callable(rule[0]) and isinstance(rule[1], str)):
            return f"parameter_ranges['{name}'] must be a (check, description) pair such as config.at_least(1)."
    for family in [None, *sorted(families)]:
        defaults = {**cls.parameters, **cls.family_parameters.get(family, {})}
        for name, (fits, allowed) in cls.parameter_ranges.items():
            if name in defaults and not _holds(fits, defaults[name]):
                where = f" for the {family} family" if family else ""
                return f"the default {name}={defaults[name]!r}{where} is outside its parameter_ranges ({allowed})."
        for name, spec in {**cls.search_space, **cls.family_search_space.get(family, {})}.items():
            where = f" for the {family} family" if family else ""
            fits, allowed = cls.parameter_ranges.get(name, (lambda v: True, ""))
            ends = spec.options if isinstance(spec, Choice) else (spec.low, spec.high)
            if not all(_holds(fits, end) for end in ends):  # tuning would try values the grid then refuses
                return f"search_space['{name}']{where} reaches outside its parameter_ranges ({allowed}): {ends!r}."
            if not spec.contains(defaults[name]):
                return (f"search_space['{name}']{where} does not hold the default {name}={defaults[name]!r}, which "
                        f"the first tuning trial runs.")
            # a tuned value is checked against its default's kind as a grid's is: a Float's values are floats
            values = spec.options if isinstance(spec, Choice) else [float(spec.low) if isinstance(spec, Float)
                                                                    else spec.low]
            for value in values:
                try:
                    check_like_default(value, defaults[name], f"Every value search_space['{name}']{where} tries")
                except UserError as exc:
                    return str(exc)
    return None
