"""Strict conversion of YAML mappings into dataclasses: unknown keys and wrong types are user errors."""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError, did_you_mean

T = TypeVar("T")


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser where PyYAML has it
    """yaml's safe loader refusing a mapping that lists a key twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged below, and may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                    f"keep one", key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing, unreadable or malformed file (a key listed twice in a mapping included)
    becomes one sentence naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        return copy.deepcopy(_parse(text))
    except FileNotFoundError:
        raise UserError(f"Config file {path} does not exist.") from None
    except IsADirectoryError:
        raise UserError(f"Config file {path} is a folder; give a YAML file.") from None
    except OSError as exc:
        raise UserError(f"Cannot read config file {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise UserError(f"Config file {path} is not UTF-8 text; give a YAML file.") from None
    except yaml.YAMLError as exc:
        raise UserError(f"Malformed YAML in {path}{yaml_problem(exc, text)}.") from None


def yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """' at line L, column C: <problem>' of error `exc` parsing `text`, naming a tab where one stands there
    (libyaml's loader says only 'found character that cannot start any token')."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f": {str(exc).splitlines()[0]}"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
    if line[mark.column:mark.column + 1] == "\t" and "\\t" not in problem:
        problem += " (a tab: YAML indents with spaces)"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def read_resource_yaml(name: str) -> Any:
    """Parse a YAML file shipped in the package (e.g. 'configs/recipes.yaml'), as `read_yaml` does."""
    from importlib import resources

    return copy.deepcopy(_parse(resources.files("unlearnbench").joinpath(name).read_text(encoding="utf-8")))


@functools.lru_cache(maxsize=32)
def _parse(text: str) -> Any:
    """The YAML document `text`, parsed once per process: planning a grid reads its recipes and tuned results once
    a cell. Callers get a deep copy, so the cached value is never changed."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def check_keys(mapping: dict, allowed: typing.Iterable[str], where: str) -> None:
    """Raise UserError naming the first key of `mapping` not in `allowed`."""
    allowed = list(allowed)
    accepted = f"allowed keys: {', '.join(allowed)}" if allowed else "no keys are accepted there"
    for key in mapping:
        if key not in allowed:
            raise UserError(f"Unknown key '{key}' in {where}{did_you_mean(key, allowed)}; {accepted}.")


def at_least(low: float) -> tuple:
    """A rule for `check_ranges`: a number ≥ `low` (and finite)."""
    return (lambda v: low <= v < math.inf), f"≥ {low}"


def above(low: float) -> tuple:
    """A rule for `check_ranges`: a finite number > `low`."""
    return (lambda v: low < v < math.inf), f"finite and > {low}"


def one_of(options: typing.Iterable) -> tuple:
    """A rule for `check_ranges`: one of `options`."""
    options = tuple(options)
    return (lambda v: v in options), f"one of {', '.join(map(str, options))}"


def check_ranges(values: dict, rules: dict[str, tuple[typing.Callable[[Any], bool], str]],
                 subject: typing.Callable[[str], str]) -> None:
    """Raise UserError '<subject(key)> must be <allowed>, got <value>.' for the first of `values` whose rule
    (key → (fits, allowed), e.g. `at_least(1)`) refuses it; keys without a rule pass. Types are checked before."""
    for key, (fits, allowed) in rules.items():
        if key in values and not fits(values[key]):
            raise UserError(f"{subject(key)} must be {allowed}, got {values[key]!r}.")


# a number written without a point, 1e-3: YAML 1.1 (PyYAML's) reads it as a string, YAML 1.2 as a float. Read as a
# float only where one is expected: a loader-wide rule would also turn the suite's own unquoted strings (a commit
# such as 5e32277 in config.yaml) into numbers
_EXPONENT_FORM = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


def _as_float(value: Any) -> Any:
    """The float a string such as '1e-3' spells (as YAML 1.1 reads that number), else `value` unchanged."""
    return float(value) if isinstance(value, str) and _EXPONENT_FORM.fullmatch(value.strip()) else value


def check_like_default(value: Any, default: Any, where: str) -> Any:
    """Return `value` (a float where the default is one and YAML 1.1 read it as a string: '1e-3'); raise UserError
    unless it is of its `default`'s kind: true or false for a bool, an integer for an int, a finite number for a
    float, a string for a str, a list for a list (anything where the default is of another type, e.g. None)."""
    value = _as_float(value) if isinstance(default, float) else value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    kind, fits = {bool: ("true or false", isinstance(value, bool)),
                  int: ("an integer", number and isinstance(value, int)),
                  float: ("a finite number", number and math.isfinite(value)),
                  str: ("a string", isinstance(value, str)),
                  list: ("a list", isinstance(value, list))}.get(type(default), ("", True))
    if not fits:
        raise UserError(f"{where} must be {kind} like its default {default!r}, got {value!r}.")
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError:
                continue
        raise UserError(f"{where} has the wrong type: got {value!r}, expected {_type_name(hint)}.")
    value = _as_float(value) if hint is float else value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        return origin(_coerce(v, args[0] if args else Any, where) for v in value)
    if origin is dict and isinstance(value, dict):
        return value
    if hint in (list, dict) and isinstance(value, hint):
        return value
    raise UserError(f"{where} has the wrong type: got {value!r}, expected {_type_name(hint)}.")


_TYPE_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               tuple: "a list", dict: "a mapping", type(None): "null"}


def _type_name(hint) -> str:
    """A type hint in a YAML user's words: 'text or null', not 'str | None'."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    origin = typing.get_origin(hint) or hint
    return _TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))


def from_mapping(cls: type[T], mapping: dict, where: str) -> T:
    """Build dataclass `cls` from `mapping`, rejecting unknown keys and values of the wrong type."""
    if not isinstance(mapping, dict):
        raise UserError(f"{where} must be a mapping of keys to values, got {mapping!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(mapping, fields, where)
    missing = [name for name, f in fields.items() if name not in mapping and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where} needs '{missing[0]}', got {mapping!r}.")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints[k], f"'{k}' in {where}") for k, v in mapping.items()}
    try:
        return cls(**values)
    except UserError as exc:  # the class's own check (__post_init__), which cannot know where its values came from
        raise UserError(f"{str(exc).rstrip('.')} ({where}).") from None
