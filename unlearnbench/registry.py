"""A name → object registry filled by a decorator, with "did you mean" on a miss."""
from __future__ import annotations

import warnings
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; `kind` names what is registered in error messages."""

    def __init__(self, kind: str, load: Callable[[], object] | None = None) -> None:
        """`load` imports the modules that register into this registry; it runs once, at the first lookup."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._load = load

    @property
    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            try:
                load()
            except BaseException:
                self._load = load  # the next lookup raises the same error, not "Unknown ...; choose one of: ."
                raise
        return self._items

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its target under `name` (a duplicate warns and replaces)."""

        def decorate(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                warnings.warn(f"{self.kind} '{name}' registered twice; the later one wins.", stacklevel=2)
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the object registered as `name`; raise UserError naming the choices otherwise."""
        items = self._loaded
        if name not in items:
            raise UserError(
                f"Unknown {self.kind} '{name}'{did_you_mean(name, items)}; choose one of: {', '.join(sorted(items))}."
            )
        return items[name]

    def names(self) -> list[str]:
        return sorted(self._loaded)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
